"""ControlMasters: what `ssh -G` says of a host, the user's master or tbctl's own, and their sockets.

tbctl's own master for a host lives at `<socket dir>/<hash of the host's resolved config>`, so two commands
that would connect the same way share it, and a changed ssh_config gets a new one. The socket dir is
`<state dir>/ssh` when a socket path fits there. A Unix socket path must fit sun_path (108 bytes on Linux,
104 on macOS and the BSDs), and ssh first binds `PATH.<16 random chars>`; so a state dir too deep for that
puts the sockets in a directory made by mkdtemp under the temp dir (or /tmp, where it always fits), whose
name is remembered in the state dir. Another user can see that name in /tmp's listing and make a directory
of it once ours is gone: so the socket dir is used only while it is a real directory (no symlink) owned by
this user with mode 0700, checked on every use, and otherwise a new one is made. Beside each socket a small
JSON file says which host it serves, so `tbctl connections` can list and `tbctl disconnect` close them;
ssh's arguments are built from that host spec alone, and only the socket named like the record is removed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tbctl import locks
from tbctl.errors import NotFound, PortBusy, SSHError, TbctlError, Unreachable
from tbctl.hosts.openssh import errors as openssh_errors
from tbctl.hosts.host_spec import parse_spec
from tbctl.probe import current_uid, open_private

if TYPE_CHECKING:
    from tbctl.hosts.openssh.host import OpenSSHHost

SOCKET_NAME_LENGTH = 16  # hex digits of the resolved config's digest: the socket's file name
SSH_BIND_SUFFIX = len(".XXXXXXXXXXXXXXXX")  # ssh binds PATH plus this first, then renames it to PATH
SOCKET_DIR_NOTE = "ssh-socket-dir"  # in the state dir: where the sockets are when they cannot be there
_RECORD_NAME = re.compile(r"^[0-9a-f]{%d}\.json$" % SOCKET_NAME_LENGTH)
MUX_TIMEOUT = 10.0  # seconds for a `-O` command, which only talks to the local master
OWN_ALIVE_INTERVAL, OWN_ALIVE_COUNT = 5, 3  # our master's ServerAlive*, when the user's config sets none


@dataclass(frozen=True)
class Resolved:
    """`ssh -G HOST`: the configuration ssh would use, with Include, Match and tokens already applied."""

    options: dict[str, list[str]]
    digest: str  # of the whole answer: two specs that resolve alike share a master

    def get(self, key: str, default: str = "") -> str:
        values = self.options.get(key)
        return values[0] if values else default

    @property
    def hostname(self) -> str:
        return self.get("hostname")

    @property
    def user(self) -> str:
        return self.get("user")

    @property
    def port(self) -> int:
        return int(self.get("port", "22"))

    @property
    def identity_files(self) -> list[str]:
        return self.options.get("identityfile", [])

    @property
    def user_control_path(self) -> str | None:
        path = self.get("controlpath", "none")
        return None if path.lower() == "none" else os.path.expanduser(path)

    @property
    def server_alive_interval(self) -> int:
        return int(self.get("serveraliveinterval", "0") or 0)

    @property
    def connect_timeout(self) -> float | None:
        value = self.get("connecttimeout", "none")
        return float(value) if value.isdigit() and int(value) > 0 else None

    @property
    def strict_host_key_checking(self) -> str:
        return self.get("stricthostkeychecking", "ask").lower()

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts line carries for this server (OpenSSH's `[host]:port` form off port 22)."""
        name = self.get("hostkeyalias") or self.hostname
        return name if self.port == 22 else f"[{name}]:{self.port}"


def session_options() -> list[str]:
    """A host block written for tunnels only (`ForkAfterAuthentication yes`, `SessionType none`, `StdinNull
    yes`: `ssh -f -N` in config form) would background the probe's ssh or give it no session, and makes
    even `ssh -G` fail. tbctl's commands need a session in the foreground (OpenSSH 8.7 has these options;
    an older ssh rejects them, and has no such blocks to undo)."""
    from tbctl.hosts.openssh.client import openssh_client

    version, _ = openssh_client()
    if version is None or version < (8, 7):
        return []
    return ["-o", "ForkAfterAuthentication=no", "-o", "SessionType=default", "-o", "StdinNull=no"]


def destination_of(spec: str, *, config_file: str | None, jump: str | None = None) -> tuple[list[str], str]:
    """(ssh's options that name the host, what comes after `--`) for a host spec, which must be valid:
    `-F` for the user's TBCTL_SSH_CONFIG, `-l`/`-p` from `user@host:port`, ProxyJump for a jump host."""
    user, host, port = parse_spec(spec)  # also refuses a spec that ssh would read as an option
    destination = ["-F", config_file] if config_file else []
    destination += (["-l", user] if user else []) + (["-p", str(port)] if port else [])
    if jump is not None:  # a compute node through its login node: ssh's own ProxyJump, before `--`
        parse_spec(jump)
        destination += ["-o", f"ProxyJump={jump}"]
    return destination, host


def mux_destination_of(name: str) -> tuple[list[str], str]:
    """What a command to the master of the host tbctl calls `name` (`JUMP/SPEC` through a jump host) needs
    before and after `--`: built from the name, and refused (UsageError) when it is no host spec."""
    from tbctl.hosts.host_spec import ssh_config_override

    jump, _, spec = name.rpartition("/")
    destination, host = destination_of(spec, config_file=ssh_config_override(), jump=jump or None)
    return [*destination, *session_options()], host


def resolve(destination: list[str], host: str, spec: str) -> Resolved:
    try:
        res = subprocess.run(["ssh", *destination, "-G", "--", host], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=MUX_TIMEOUT)
    except FileNotFoundError:
        raise NotFound("no OpenSSH client (`ssh`) on PATH",
                       hint="install OpenSSH's client, or use tbctl's own SSH client: --ssh paramiko") from None
    except subprocess.TimeoutExpired:  # a `Match exec` that hangs
        raise SSHError(f"`ssh -G {spec}` did not answer within {MUX_TIMEOUT:g} s") from None
    if res.returncode != 0:
        said = res.stderr.strip().splitlines()
        raise SSHError(f"ssh cannot use its config for {spec}: {said[-1] if said else 'exit ' + str(res.returncode)}",
                       hint=f"`ssh -G {spec}` shows the same problem")
    options: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key.lower(), []).append(value)
    return Resolved(options, hashlib.sha256(res.stdout.encode()).hexdigest())


@dataclass(frozen=True)
class Master:
    host: str  # the spec as the user typed it
    control_path: str
    owned: bool  # started by tbctl (else the user's own: ridden, never stopped)
    destination: tuple[str, ...] = ()  # ssh's options that name the host: -F, -l, -p
    host_arg: str = ""  # what comes after `--`

    def describe(self) -> str:
        return "tbctl's own ControlMaster" if self.owned else f"your ControlMaster {self.control_path}"

    def client_options(self) -> list[str]:
        """A mux client for a session: it would ask the master for the config's forwards first."""
        return ["-S", self.control_path, "-o", "ControlMaster=no", "-o", "BatchMode=yes",
                "-o", "ClearAllForwardings=yes"]

    def _mux(self, *args: str) -> subprocess.CompletedProcess[str]:
        # `-F none`: a `-O` command sends the master every forward of the config besides its own `-L` (the
        # user's LocalForward would be opened, or with ExitOnForwardFailure fail the command), and
        # ClearAllForwardings would clear the `-L` too. The socket is all a `-O` command needs.
        argv = ["ssh", *self.destination, "-F", "none", "-S", self.control_path, *args, "--", self.host_arg]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=MUX_TIMEOUT)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, "", f"the master did not answer within {MUX_TIMEOUT:g} s")

    def check(self) -> bool:
        """Whether a master answers on the socket (it checks the master, not the server behind it)."""
        if not os.path.exists(self.control_path):
            return False
        return self._mux("-O", "check").returncode == 0

    def pid(self) -> int | None:
        """The master's pid, None when none answers on the socket."""
        res = self._mux("-O", "check")
        found = re.search(r"pid=(\d+)", res.stderr) if res.returncode == 0 else None
        return int(found.group(1)) if found else None

    def forward(self, spec: str, *, local_port: int) -> None:
        res = self._mux("-O", "forward", "-L", spec)
        if res.returncode != 0:
            said = res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"]
            if "forwarding request failed" in res.stderr or "in use" in res.stderr:
                raise PortBusy(local_port, (), f"cannot listen on 127.0.0.1:{local_port}: it is in use",
                               hint="choose another --local-port, or leave it out to pick a free one")
            raise SSHError(f"the SSH connection to {self.host} would not forward {spec}: {said[0]}")

    def cancel(self, spec: str) -> None:
        # rc 0 even when no such forward exists ("port not forwarded" on stderr): nothing to check
        self._mux("-O", "cancel", "-L", spec)

    def stop(self) -> None:
        """`-O stop`: no new clients; the master exits once the sessions riding it (a background forwarder's
        too) have ended."""
        self._mux("-O", "stop")
        self._forget()

    def exit(self) -> None:
        self._mux("-O", "exit")
        self._forget()

    def _forget(self) -> None:
        """Our master's record goes with it (a user's master has none of ours)."""
        if self.owned:
            with contextlib.suppress(FileNotFoundError):
                Path(self.control_path + ".json").unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One tbctl at a time starts the master of a host."""
        fd = open_private(self.control_path + ".lock", os.O_RDWR | os.O_CREAT)
        try:
            with locks.held(fd):
                yield
        finally:
            os.close(fd)

    def start(self, host: OpenSSHHost, *, batch: bool, fingerprint: bool) -> None:
        """`ssh -M -N -f`: returns once authenticated, the master then in the background in its own session."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)  # a SIGKILLed master leaves its socket; ssh -M would then not listen
        # 0 means "for ever" to ssh. A master of ssh_persist 0 is told to stop when the command closes the
        # host; until then (and if tbctl is killed before) it idles out after 10 s, which also leaves the
        # probe time to attach however loaded the machine is.
        persist = math.ceil(host.persist) if host.persist >= 1 else 10
        options = ["-M", "-N", "-f", "-S", self.control_path, "-o", f"ControlPersist={persist}",
                   # the user's LocalForward/RemoteForward and LocalCommand belong to their own sessions
                   "-o", "ClearAllForwardings=yes", "-o", "PermitLocalCommand=no",
                   "-o", f"ConnectTimeout={max(1, math.ceil(host.connect_timeout))}"]
        # Our master notices a dead link within seconds, not TCP's minutes (nor Debian's BatchMode default of
        # 300 s): a shorter interval than the user's only makes it ask the server sooner.
        alive = host.resolved.server_alive_interval
        options += ["-o", f"ServerAliveInterval={min(alive, OWN_ALIVE_INTERVAL) if alive else OWN_ALIVE_INTERVAL}"]
        if not alive:
            options += ["-o", f"ServerAliveCountMax={OWN_ALIVE_COUNT}"]
        if host.resolved.strict_host_key_checking in ("no", "off", "false"):
            # ssh itself would connect to a server whose key CHANGED under "no"; tbctl never does.
            # accept-new still takes unknown keys, as "no" would.
            options += ["-o", "StrictHostKeyChecking=accept-new"]
        if batch:
            options += ["-o", "BatchMode=yes"]
        # ssh's stderr goes to a file: the backgrounded master (and a ProxyJump child) keep it open for life,
        # so a pipe would never reach EOF.
        with tempfile.TemporaryFile(dir=os.path.dirname(self.control_path)) as err:
            try:
                res = subprocess.run(host.ssh_argv(*options), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=err, timeout=host.connect_timeout * 3 + 20 if batch else None)
                rc = res.returncode
            except subprocess.TimeoutExpired:
                raise Unreachable(
                    f"connecting to {host.name} timed out after {host.connect_timeout * 3 + 20:g} s",
                    hint="a ProxyJump or ProxyCommand hop may hang; `ssh -v HOST true` shows where") from None
            err.seek(0)
            said = err.read().decode("utf-8", "replace")
        if rc != 0:
            raise openssh_errors.failure(said, host, fingerprint=fingerprint)
        pid = self.pid()  # one `-O check`: whether it answers, and its pid
        if pid is None:
            raise SSHError(f"ssh connected to {host.name} but its ControlMaster does not answer: {said.strip()[-300:]}")
        # the host spec only: whoever reads this builds ssh's arguments from it (recorded_masters)
        record = {"host": host.name, "created_at": time.time(), "persist": host.persist, "pid": pid}
        _write_private(Path(self.control_path + ".json"), json.dumps(record))


def sun_path_size(platform: str = sys.platform) -> int:
    """sizeof(sockaddr_un.sun_path) where tbctl runs: 108 bytes on Linux, 104 on macOS and the BSDs."""
    return 108 if platform.startswith("linux") else 104


def socket_fits(directory: Path | str, platform: str = sys.platform) -> bool:
    """Whether ssh can bind a master's socket in `directory`: its path, the suffix ssh binds first, a NUL."""
    path = os.path.join(os.fsdecode(directory), "x" * SOCKET_NAME_LENGTH)
    return len(os.fsencode(path)) + SSH_BIND_SUFFIX + 1 <= sun_path_size(platform)


def control_dir(state_dir: Path, *, create: bool = True, platform: str = sys.platform) -> Path | None:
    """The 0700 directory of this user's where tbctl's master sockets are: `<state dir>/ssh` when a socket
    path fits there, else the one under the temp dir that the state dir remembers (a new one when that one
    is gone or no longer ours). None when `create` is False and there is none to read."""
    path = state_dir / "ssh"
    if socket_fits(path, platform):
        if create:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        elif not os.path.lexists(path):
            return None
        info, uid = os.lstat(path), current_uid()
        if stat.S_ISDIR(info.st_mode) and uid is not None and info.st_uid == uid and info.st_mode & 0o077:
            os.chmod(path, 0o700)  # inside the user's own state dir: tightened, as an older tbctl left it
        why = _not_private(path)
        if why:
            raise TbctlError(f"{why}; refusing to keep SSH sockets there",
                             hint="remove it, or set TBCTL_STATE_DIR to a directory of yours")
        return path
    remembered = _remembered_dir(state_dir, platform)
    if remembered is not None or not create:
        return remembered
    from tbctl.state import StateStore

    with StateStore(state_dir).lock(SOCKET_DIR_NOTE):  # which also makes the state dir, ours alone
        remembered = _remembered_dir(state_dir, platform)  # made by another tbctl meanwhile
        if remembered is not None:
            return remembered
        # the temp dir when a socket fits there (on macOS a per-user one), else /tmp, where one always does
        parent = next((d for d in (tempfile.gettempdir(), "/tmp")
                       if socket_fits(os.path.join(d, "tbctl-ssh-" + "x" * 8), platform)), "/tmp")
        made = tempfile.mkdtemp(prefix="tbctl-ssh-", dir=parent)  # 0700, and a name nobody can guess
        note = state_dir / SOCKET_DIR_NOTE
        _write_private(note.with_name(note.name + ".new"), made)
        os.replace(note.with_name(note.name + ".new"), note)
        return Path(made)


def _remembered_dir(state_dir: Path, platform: str) -> Path | None:
    """The socket dir the state dir names, while it is still ours alone; None otherwise."""
    try:
        fd = open_private(str(state_dir / SOCKET_DIR_NOTE), os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        text = f.read(4096).strip()
    if not os.path.isabs(text) or not socket_fits(text, platform) or _not_private(Path(text)):
        return None
    return Path(text)


def _not_private(path: Path) -> str | None:
    """Why `path` is no directory for tbctl's sockets (None: it is one): it must be a directory, not a
    symlink, owned by this user, with no access for anyone else."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symlink"
    uid = current_uid()  # None on Windows: no uids, no mode bits, and a temp dir of each user's own
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        return f"{path} is not a directory of yours"
    if uid is not None and info.st_mode & 0o077:
        return f"{path} is open to other users"
    return None


def _write_private(path: Path, text: str) -> None:
    fd = open_private(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def own_master(host: OpenSSHHost) -> Master:
    directory = control_dir(host.state_dir)
    assert directory is not None
    return Master(host=host.name, control_path=str(directory / host.resolved.digest[:SOCKET_NAME_LENGTH]),
                  owned=True, destination=tuple(host.mux_destination), host_arg=host.host_arg)


@dataclass(frozen=True)
class MasterRecord:
    """A master tbctl started, as its JSON file beside the socket tells it."""

    host: str
    control_path: str
    created_at: float
    persist: float
    pid: int | None
    master: Master


def recorded_masters(state_dir: Path) -> list[MasterRecord]:
    """tbctl's masters as their records say, read only from tbctl's own socket dir. A record gives the
    host spec alone: ssh's arguments are built from that spec (never taken from the file), and the socket
    is the one named like the record, in that dir."""
    directory = control_dir(state_dir, create=False)
    if directory is None:
        return []
    out = []
    for path in sorted(directory.iterdir()):
        if not _RECORD_NAME.match(path.name):
            continue
        try:
            info, uid = os.lstat(path), current_uid()
            if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
                continue
            rec = json.loads(path.read_text())
            host = str(rec["host"])
            destination, host_arg = mux_destination_of(host)
            control_path = str(directory / path.stem)
            master = Master(host, control_path, True, tuple(destination), host_arg)
            pid = rec.get("pid")
            out.append(MasterRecord(host, control_path, float(rec["created_at"]), float(rec["persist"]),
                                    pid if isinstance(pid, int) else None, master))
        except (OSError, ValueError, KeyError, TypeError, TbctlError):
            continue
    return out


@dataclass(frozen=True)
class KeptConnection:
    """A ControlMaster tbctl started and that still runs (`tbctl connections`)."""

    host: str
    pid: int | None
    control_path: str
    created_at: float
    persist: float


def kept_connections(state_dir: Path) -> list[KeptConnection]:
    """tbctl's masters that answer; the records and sockets of those that are gone are removed."""
    out = []
    for rec in recorded_masters(state_dir):
        pid = rec.master.pid() if os.path.exists(rec.control_path) else None  # one `-O check`: alive, and its pid
        if pid is not None:
            out.append(KeptConnection(rec.host, pid, rec.control_path, rec.created_at, rec.persist))
        else:
            for leftover in (rec.control_path, rec.control_path + ".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    return out


def close_kept_connections(state_dir: Path, host: str | None = None) -> list[KeptConnection]:
    """`-O exit` each of tbctl's masters (of `host`, or all): its forwards and sessions end with it."""
    closed = []
    for conn in kept_connections(state_dir):
        if host is None or conn.host == host:
            master = next(r.master for r in recorded_masters(state_dir) if r.control_path == conn.control_path)
            master.exit()
            closed.append(conn)
    return closed
