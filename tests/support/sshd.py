"""A throwaway real OpenSSH server (optionally inside a network namespace) for tests.

Self-check (as root, from the repo root):  python -m tests.support.sshd
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.procs import free_port, wait_until

SSHD = "/usr/sbin/sshd"  # sshd refuses to run unless started by an absolute path (re-exec)
OWN_NET = ipaddress.ip_network("10.231.0.0/16")  # the only addresses we ever put on a veth


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> rc={res.returncode}: {res.stderr.strip()}")
    return res.stdout


# ---------------------------------------------------------------- network namespaces


@dataclass(frozen=True)
class Netns:
    name: str
    host_if: str  # veth end left in the root namespace (carries host_addr)
    ns_if: str  # veth end inside the namespace (carries ns_addr)
    host_addr: str
    ns_addr: str
    prefix: int = 30


@functools.lru_cache(maxsize=1)
def netns_available() -> tuple[bool, str]:
    """Can this process create namespaces and veth pairs? (False, reason) is meant for a skip."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "iproute2 `ip` not found"
    try:
        ns = create_netns(f"tbprobe{os.getpid()}", "10.231.255.253", "10.231.255.254")
    except RuntimeError as exc:  # e.g. no CAP_SYS_ADMIN in a container, or no veth module
        return False, f"trial namespace failed: {exc}"
    delete_netns(ns)
    return True, "ok"


def create_netns(name: str, host_addr: str, ns_addr: str, prefix: int = 30) -> Netns:
    """`ip netns add NAME` plus a veth pair host_addr <-> ns_addr, both ends and the
    namespace's `lo` up. Refuses names or addresses that are already in use."""
    net = ipaddress.ip_network(f"{host_addr}/{prefix}", strict=False)
    if not (net.subnet_of(OWN_NET) and ipaddress.ip_address(ns_addr) in net):  # type: ignore[arg-type]
        raise ValueError(f"{host_addr}/{prefix} and {ns_addr} must share a subnet of {OWN_NET}")
    if name in _run("ip", "netns", "list").split():
        raise RuntimeError(f"network namespace {name!r} already exists; not ours to reuse")
    if f" {host_addr}/" in _run("ip", "-o", "-4", "addr", "show"):
        raise RuntimeError(f"{host_addr} is already configured on this host")
    tag = hashlib.sha1(name.encode()).hexdigest()[:8]  # interface names are <= 15 chars
    ns = Netns(name, f"tbh{tag}", f"tbn{tag}", host_addr, ns_addr, prefix)
    # Safety net: whatever happens to a veth or its connected route, traffic for our test range never
    # follows the default route off this machine. More specific connected /30 routes still win.
    _run("ip", "route", "replace", "unreachable", str(OWN_NET))
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _run("ip", "link", "set", ns.ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host_addr}/{prefix}", "dev", ns.host_if)
        _run("ip", "link", "set", ns.host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{ns_addr}/{prefix}", "dev", ns.ns_if)
        _run("ip", "-n", name, "link", "set", ns.ns_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
    except RuntimeError:
        delete_netns(ns)
        raise
    return ns


def delete_netns(ns: Netns) -> None:
    """Kill whatever still runs inside the namespace, then remove it and its veth pair."""
    procs: list[psutil.Process] = []
    for pid in subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout.split():
        try:
            procs.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            pass
    _terminate(procs)
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
    # Deleting the namespace destroys its veth end and with it the peer, asynchronously.
    if not wait_until(lambda: not Path("/sys/class/net", ns.host_if).exists(), 5):
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True)
    if not any(Path("/sys/class/net").glob("tbh*")):  # the last of ours: drop the safety route too
        subprocess.run(["ip", "route", "del", "unreachable", str(OWN_NET)], capture_output=True)


def link_down(ns: Netns) -> None:
    """Cut the wire at the namespace's end: our end loses carrier and drops packets silently (no RST),
    as a dead Wi-Fi link does. Our end stays up, so its connected route stays and nothing for the
    namespace's address is ever sent anywhere else (the unreachable safety route backs this up)."""
    _run("ip", "-n", ns.name, "link", "set", ns.ns_if, "down")


def link_up(ns: Netns) -> None:
    _run("ip", "-n", ns.name, "link", "set", ns.ns_if, "up")


def _terminate(procs: list[psutil.Process], grace: float = 3.0) -> None:
    """SIGTERM, wait, SIGKILL, wait. psutil refuses to signal a pid that was reused since."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace)
        if not procs:
            return
    raise RuntimeError(f"processes survived SIGKILL: {procs}")


# ---------------------------------------------------------------- sshd


@dataclass
class SshServer:
    host: str  # address clients connect to
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    ssh_config: Path  # OpenSSH client config with `Host <alias>`
    host_key_pub: Path
    pid: int
    netns: str | None
    workdir: Path
    alias: str = "tbtest"
    sshd_config: Path = Path()
    log: Path = Path()  # sshd's own log (LogLevel VERBOSE)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    # How to enter the machine sshd runs in when that is more than a network namespace (e.g. `nsenter -t
    # PID -n -m -u --` for a node with its own mounts and hostname); replaces `ip netns exec`.
    enter: tuple[str, ...] = ()
    reachable_here: bool = True  # False: only other namespaces route to it, so readiness is read from its log

    def ssh_args(self, *command: str) -> list[str]:
        """`ssh -F <config> <alias> command...` for subprocess."""
        return ["ssh", "-F", str(self.ssh_config), self.alias, *command]


def sshd_available() -> tuple[bool, str]:
    for exe in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if not exe or not os.access(exe, os.X_OK):
            return False, f"OpenSSH not installed ({exe or 'ssh/ssh-keygen'} missing)"
    return True, "ok"


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)  # ssh rejects configs/keys that others can write or read
    return path


def start_sshd(
    workdir: Path, *, alias: str = "tbtest", netns: str | None = None, listen: str = "127.0.0.1",
    port: int | None = None, home: Path | None = None, enter: tuple[str, ...] = (), reachable_here: bool = True,
    tmpdir: Path | None = None,
) -> SshServer:
    """Generate keys and configs under `workdir`, start `sshd -D`, return once it greets.

    `home`: the HOME (and XDG dirs) of every session, instead of the user's own from passwd: the server
    runs as this same user, and what tbctl writes "on the remote" must not land in the real home."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "ssh_host_ed25519_key", workdir / "client_ed25519"
    for key, comment in ((host_key, "tbctl-test-host"), (client_key, "tbctl-test-client")):
        if not key.exists():  # reuse keys on a second start in the same workdir
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))
    host_key_pub = host_key.with_name(host_key.name + ".pub")
    connect = "127.0.0.1" if listen in ("0.0.0.0", "") else listen
    port = port or free_port()  # inside a fresh namespace any port is free anyway
    user = getpass.getuser()
    authorized = _write(workdir / "authorized_keys", client_key.with_name(client_key.name + ".pub").read_text())
    hostport = f"[{connect}]:{port}" if port != 22 else connect
    known_hosts = _write(workdir / "known_hosts", f"{hostport} {host_key_pub.read_text()}", 0o644)
    cfg = _write(workdir / "sshd_config", "\n".join([
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "UsePAM no",  # no PAM stack: works in containers; a locked (`!`) account is refused
        "StrictModes no",  # pytest tmp dirs are not owned/moded the way sshd wants
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        # No AcceptEnv line: the client's environment never leaks into the test session.
        "Subsystem sftp internal-sftp",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",  # the default, said: `up --private` forwards a unix socket
        "X11Forwarding no",
        "PrintMotd no",
        "MaxStartups 100",  # tests open many connections at once; the default drops some
        "MaxSessions 64",
        "LogLevel VERBOSE",
        *([_session_env(home, tmpdir)] if home is not None else []),
        "",
    ]))
    ssh_config = _write(workdir / "ssh_config", "\n".join([
        f"Host {alias}",
        f"  HostName {connect}",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {client_key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",  # never prompt: a prompt would hang a test
        "  ConnectTimeout 5",
        "  LogLevel ERROR",
        "",
    ]))
    server = SshServer(connect, port, user, client_key, known_hosts, ssh_config, host_key_pub, 0, netns,
                       workdir, alias, cfg, workdir / "sshd.log", enter=enter, reachable_here=reachable_here)
    _ensure_privsep_dir()  # `sshd -t` checks it too, so before validating
    _run(SSHD, "-t", "-f", str(cfg))
    return _launch(server)


def _session_env(home: Path, tmpdir: Path | None = None) -> str:
    """sshd_config's SetEnv (OpenSSH >= 8.7) overrides the HOME sshd takes from passwd. A shell started
    with it reads that home's (empty) rc files, so root's ~/.bashrc (pyenv and all) no longer runs there:
    tests name the interpreter and tensorboard they need by absolute path."""
    env = {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_CACHE_HOME": home / ".cache",
           "XDG_STATE_HOME": home / ".local" / "state", "XDG_DATA_HOME": home / ".local" / "share"}
    if tmpdir is not None:  # TensorBoard's info files (and whatever a session writes to $TMPDIR) stay there
        env["TMPDIR"] = tmpdir
    for path in env.values():
        path.mkdir(parents=True, exist_ok=True)
    return "SetEnv " + " ".join(f"{name}={path}" for name, path in env.items())


def _ensure_privsep_dir() -> None:
    if os.geteuid() == 0:  # root sshd chroots its pre-auth child here; a non-root one does not
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)


def _launch(server: SshServer) -> SshServer:
    _ensure_privsep_dir()  # /run is a tmpfs: gone after a reboot
    cmd = [SSHD, "-D", "-e", "-E", str(server.log), "-f", str(server.sshd_config)]
    if server.enter:
        cmd = [*server.enter, *cmd]  # nsenter execs too
    elif server.netns:
        cmd = ["ip", "netns", "exec", server.netns, *cmd]  # `ip` execs: the pid is sshd's own
    with open(server.log, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server.proc, server.pid = proc, proc.pid
    # True here with sshd still alive means it greeted (one probe: each logs a kex error line).
    if server.reachable_here:
        greeted = wait_until(lambda: proc.poll() is not None or _greets(server.host, server.port), 15, 0.02)
    else:
        greeted = wait_until(lambda: proc.poll() is not None or "Server listening on" in
                             server.log.read_text(errors="replace"), 15, 0.02)
    if not greeted or proc.poll() is not None:
        stop_sshd(server)
        tail = server.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sshd on {server.host}:{server.port} did not come up (rc={proc.returncode}):\n{tail}")
    return server


def _greets(host: str, port: int) -> bool:
    """True once an SSH banner comes back (a bare accept could be some other listener)."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def stop_sshd(server: SshServer, *, drop_connections: bool = True) -> None:
    """Stop the listening sshd by pid and reap it. With drop_connections, also its per-connection
    `sshd` children (so clients see the server go away), but never the users' commands: a
    TensorBoard started over SSH must outlive a server restart, as with a real host."""
    proc, server.proc = server.proc, None
    if proc is None:
        return
    sessions: list[psutil.Process] = []
    if drop_connections and proc.poll() is None:
        try:  # snapshot first: once the listener is gone its children are re-parented
            kids = psutil.Process(proc.pid).children(recursive=True)
            sessions = [k for k in kids if _name(k) == "sshd"]
        except psutil.NoSuchProcess:
            pass
    proc.terminate()  # our unreaped child: its pid cannot have been reused
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    _terminate(sessions)


def _name(p: psutil.Process) -> str:
    try:
        return str(p.name())
    except psutil.Error:
        return ""


def restart_sshd(server: SshServer, *, drop_connections: bool = True) -> SshServer:
    """Stop, then start again with the same keys, config and port (a new pid)."""
    stop_sshd(server, drop_connections=drop_connections)
    return _launch(server)


def _selfcheck() -> None:
    """Loopback sshd, restart, then sshd in a namespace; assert nothing of ours is left."""
    import tempfile

    from tests.support.procs import _LISTENER, ProcessReaper, http_get

    def ssh_ok(srv: SshServer, *cmd: str) -> str:
        res = subprocess.run(srv.ssh_args(*cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, (res.returncode, res.stderr, srv.log.read_text()[-1500:])
        return res.stdout

    ok, why = sshd_available()
    assert ok, why
    me, started, netns_name = psutil.Process(), [], f"tbss{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, ProcessReaper() as reaper:
        t0 = time.monotonic()
        srv = start_sshd(Path(tmp, "lo"))
        print(f"loopback sshd pid {srv.pid} port {srv.port} up in {time.monotonic() - t0:.3f}s")
        t0 = time.monotonic()
        ssh_ok(srv, "true")
        assert ssh_ok(srv, "python3", "-c", "'print(1)'").strip() == "1"
        print(f"two ssh round trips {time.monotonic() - t0:.3f}s")
        old = srv.pid
        t0 = time.monotonic()
        restart_sshd(srv)
        assert srv.pid != old and not psutil.pid_exists(old) and ssh_ok(srv, "echo", "again") == "again\n"
        print(f"restart_sshd {time.monotonic() - t0:.3f}s")
        started.append(srv.pid)
        stop_sshd(srv)

        ok, why = netns_available()
        assert ok, why
        octet = 100 + os.getpid() % 100  # 10.231.<octet>.0/30: ours, unlikely to collide
        ns = create_netns(netns_name, f"10.231.{octet}.1", f"10.231.{octet}.2")
        try:
            t0 = time.monotonic()
            nsrv = start_sshd(Path(tmp, "ns"), netns=ns.name, listen=ns.ns_addr)
            print(f"netns sshd at {nsrv.host}:{nsrv.port} up in {time.monotonic() - t0:.3f}s ({ns})")
            assert psutil.Process(nsrv.pid).name() == "sshd", "ip netns exec should exec sshd itself"
            ssh_ok(nsrv, "true")
            assert ssh_ok(nsrv, "python3", "-c", "'print(1)'").strip() == "1"
            # A server on the namespace's own loopback: unreachable from here ...
            hidden = free_port()
            lst = reaper.popen(["ip", "netns", "exec", ns.name, "python3", "-c", _LISTENER, "2", "127.0.0.1",
                                str(hidden), "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_until(lambda: f"127.0.0.1:{hidden} " in _run("ip", "netns", "exec", ns.name, "ss", "-ltn"), 10)
            for addr in (ns.ns_addr, "127.0.0.1"):
                with socket.socket() as s:
                    s.settimeout(2)
                    assert s.connect_ex((addr, hidden)) != 0, f"{addr}:{hidden} must be unreachable"
            # ... except through an SSH forward.
            local = free_port()
            fwd = nsrv.ssh_args("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:127.0.0.1:{hidden}")
            reaper.popen(fwd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_until(lambda: _status(http_get, f"http://127.0.0.1:{local}/") == 404, 10), "no forward"
            link_down(ns)
            res = subprocess.run(nsrv.ssh_args("-o", "ConnectTimeout=2", "true"), capture_output=True, timeout=30)
            assert res.returncode == 255, "ssh over a downed link must fail"
            link_up(ns)
            ssh_ok(nsrv, "true")
            print("link_down -> ssh fails (255); link_up -> ssh works again")
            started.append(nsrv.pid)
            stop_sshd(nsrv)
            assert lst.poll() is None  # still inside the namespace: delete_netns must kill it
        finally:
            delete_netns(ns)
        assert lst.wait(timeout=5) is not None
    assert netns_name not in _run("ip", "netns", "list") and not Path("/sys/class/net", ns.host_if).exists()
    assert not any(psutil.pid_exists(p) for p in started) and not me.children(recursive=True)
    print("sshd self-check OK: no sshd, namespace, veth or child left")


def _status(get: Callable[[str], tuple[int, bytes]], url: str) -> int:
    try:
        return get(url)[0]
    except OSError:  # not listening yet
        return 0


if __name__ == "__main__":
    _selfcheck()
