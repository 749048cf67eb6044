"""An in-memory machine behind the Host seam, so core's decisions run in milliseconds: no process is started,
no socket opened, no file written (except tbctl's own state, which tests keep in tmp_path).

FakeHost answers the probe's operations (`Host.call`) from what a test put on it, in the probe's own answer
shapes (tbctl/probe.py), so the typed methods of tbctl.hosts.base.Host run as they do against a real machine:

    host = FakeHost()
    other = host.add_process(["python", "-m", "http.server", "6006"], listen=[6006])
    tb = host.add_tensorboard("/data/runs", port=6007, info_file=True)
    host.send_signal(tb.pid, tb.create_time, "SIGTERM")  # it exits, and removes its info file

A process may be another user's, ignore SIGTERM, survive even SIGKILL (stuck in the kernel) or be a zombie;
a port may refuse to bind with no one seen listening (`unbindable`). `launch` starts a TensorBoard that
serves at once (or `launch_fails_with` a bind error), which is how a test gets tbctl's own records: through
`tbctl.core.up.up`, never by writing them. `signals` lists every signal sent, for assertions.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tbctl.core.up import UpRequest, up
from tbctl.errors import TbctlError
from tbctl.hosts.base import Host
from tbctl.models import TensorBoardInstance
from tbctl.probe import CREATE_TIME_SLACK, flag_value, tensorboard_args
from tbctl.state import StateStore

FAKE_EPOCH = 1_700_000_000.0  # the fake clock: each new process starts a second after the one before
INFO_DIR = "/tmp/.tensorboard-info"
RUNS, OTHER_RUNS = "/data/runs", "/data/other"  # two logdirs a test may give a FakeHost (`directories`)
TENSORBOARD_PATH = "/opt/venv/bin/tensorboard"


@dataclass
class FakeProcess:
    """A process on a FakeHost. Mutable, unlike tbctl's records: signals change it as they would the real one."""

    pid: int
    cmdline: tuple[str, ...]
    create_time: float
    user: str
    listen: tuple[tuple[str, int], ...] = ()  # (addr, port) of each LISTEN socket
    cwd: str | None = None
    start_ticks: int | None = None
    zombie: bool = False
    ignores_sigterm: bool = False
    unkillable: bool = False  # survives SIGKILL too (uninterruptible sleep)
    # exits on SIGTERM without cleaning up, as TensorBoard on Windows does: a CTRL_BREAK, which it has no
    # handler for, ends it where it stands
    stops_uncleanly: bool = False
    running: bool = True

    @property
    def ports(self) -> list[int]:
        return sorted({port for _, port in self.listen})


@dataclass(frozen=True)
class InfoFile:
    """A TensorBoard info file: `content` is None for a file that is not JSON (damaged, half written)."""

    path: str
    owner: str
    content: dict[str, Any] | None


def info_content(pid: int, *, port: int, logdir: str, start_time: float, path_prefix: str = "") -> dict[str, Any]:
    """What TensorBoard writes in its info file (the fields tbctl reads)."""
    return {"pid": pid, "port": port, "logdir": logdir, "start_time": int(start_time), "path_prefix": path_prefix,
            "version": "2.0.0", "db": "", "cache_key": ""}


class FakeHost(Host):
    def __init__(self, name: str = "localhost", *, user: str = "me", home: str = "/home/me",
                 directories: Iterable[str] = (), remote: bool = False, first_pid: int = 1000) -> None:
        self.name = name
        self._user = user
        self.home = home
        self.directories = {home, *directories}
        self.files: set[str] = set()
        self.processes: dict[int, FakeProcess] = {}
        self.info_files: dict[str, InfoFile] = {}
        self.unbindable: set[int] = set()  # ports that do not bind though no one is seen listening on them
        self.logs: dict[str, str] = {}
        self.tensorboard: str | None = TENSORBOARD_PATH
        self.launch_fails_with: str | None = None  # a log line: the next launched TensorBoard exits with it
        self.signals: list[tuple[int, str]] = []
        self.environments: list[tuple[str | None, bool]] = []  # (env_prefix, login_shell) of each search
        self.env_prefix: str | None = None  # --env: a remote host's own environment
        self._remote = remote
        self._next_pid = first_pid
        self.last_launch: dict[str, Any] = {}
        # What this user sees of other users' sockets: all (root), only which ports each user listens on
        # (a normal user on Linux), or nothing (a normal user on macOS).
        self.others_sockets: Literal["visible", "by_user", "hidden"] = "visible"

    # --- what a test puts on the host ---

    def add_process(self, cmdline: Sequence[str], *, listen: Iterable[int | tuple[str, int]] = (),
                    user: str | None = None, cwd: str | None = None, start_ticks: int | None = None,
                    pid: int | None = None, create_time: float | None = None, **behaviour: bool) -> FakeProcess:
        """A running process; `behaviour`: zombie, ignores_sigterm, unkillable (FakeProcess's flags)."""
        if pid is None:
            pid = self._next_pid
        self._next_pid = max(self._next_pid, pid) + 1
        if create_time is None:
            create_time = FAKE_EPOCH + pid
        sockets = tuple(s if isinstance(s, tuple) else ("127.0.0.1", s) for s in listen)
        proc = FakeProcess(pid=pid, cmdline=tuple(cmdline), create_time=create_time, user=user or self._user,
                           listen=sockets, cwd=cwd or self.home, start_ticks=start_ticks, **behaviour)
        self.processes[pid] = proc
        return proc

    def add_tensorboard(self, logdir: str, *, port: int, info_file: bool = True, listening: bool = True,
                        extra_args: Sequence[str] = (), **process: Any) -> FakeProcess:
        """A TensorBoard someone started (`tensorboard --logdir LOGDIR --port PORT`), with its info file."""
        argv = [self.tensorboard or TENSORBOARD_PATH, "--logdir", logdir, "--port", str(port), *extra_args]
        proc = self.add_process(argv, listen=[port] if listening else [], **process)
        if info_file:
            self.add_info_file(info_content(proc.pid, port=port, logdir=logdir, start_time=proc.create_time + 1),
                               owner=proc.user)
        return proc

    def add_info_file(self, content: dict[str, Any] | None, *, owner: str | None = None,
                      name: str | None = None) -> InfoFile:
        pid = content.get("pid") if content else None
        path = f"{INFO_DIR}/{name or f'pid-{pid}.info'}"
        info = InfoFile(path, owner or self._user, content)
        self.info_files[path] = info
        return info

    def exit(self, pid: int, *, cleanly: bool) -> None:
        """The process ends; a TensorBoard that ends cleanly (SIGTERM) removes its own info file."""
        proc = self.processes[pid]
        proc.running = False
        if cleanly:
            self.info_files = {p: i for p, i in self.info_files.items() if (i.content or {}).get("pid") != pid}

    # --- the Host seam ---

    @property
    def is_remote(self) -> bool:
        return self._remote

    def user_environment(self) -> dict[str, Any]:
        """As a remote host (RemoteHost) or this machine (Host) answers."""
        if self._remote:
            return {"env_prefix": self.env_prefix, "login_shell": True}
        return super().user_environment()

    @property
    def log_dir(self) -> str:
        return f"{self.home}/.local/state/tbctl/logs"

    @property
    def user(self) -> str:
        return self._user

    def call(self, op: str, **args: Any) -> Any:
        answer = getattr(self, f"_op_{op}", None)
        if answer is None:  # say so plainly, rather than as an AttributeError from deep inside core
            raise NotImplementedError(f"FakeHost does not answer the probe operation {op!r} yet")
        return answer(**args)

    # --- the probe's operations, answered from memory ---

    def _live(self, pid: int | None) -> FakeProcess | None:
        proc = self.processes.get(pid) if pid is not None else None
        return proc if proc is not None and proc.running and not proc.zombie else None

    def _op_alive(self, pid: int, create_time: float | None, start_ticks: int | None = None) -> dict[str, Any]:
        proc = self._live(pid)
        if proc is not None and start_ticks is not None and proc.start_ticks is not None:
            return {"alive": proc.start_ticks == start_ticks}
        same = proc is not None and (create_time is None or abs(proc.create_time - create_time) < CREATE_TIME_SLACK)
        return {"alive": same}

    def _proc_info(self, proc: FakeProcess) -> dict[str, Any]:
        return {"pid": proc.pid, "ppid": 1, "create_time": proc.create_time, "start_ticks": proc.start_ticks,
                "zombie": proc.zombie, "username": proc.user, "cmdline": list(proc.cmdline), "cwd": proc.cwd}

    def _op_proc_info(self, pid: int) -> dict[str, Any]:
        proc = self.processes.get(pid)
        return {"info": self._proc_info(proc) if proc is not None and proc.running else None}

    def _listening(self, port: int) -> list[tuple[FakeProcess, str]]:
        return [(p, addr) for p in self.processes.values() if self._live(p.pid) for addr, at in p.listen if at == port]

    def _op_holders(self, port: int) -> list[dict[str, Any]]:
        return [{"family": "ipv6" if ":" in addr else "ipv4", "addr": addr, "port": port, "pid": proc.pid,
                 "uid": None, "username": proc.user, "cmdline": list(proc.cmdline), "create_time": proc.create_time,
                 "is_tensorboard": tensorboard_args(list(proc.cmdline)) is not None}
                for proc, addr in self._listening(port)]

    def _op_free_port(self, candidates: list[int], holders: bool = False) -> dict[str, Any]:
        port = next((p for p in candidates if not self._listening(p) and p not in self.unbindable), None)
        if not holders:
            return {"port": port}
        skipped = candidates[:candidates.index(port)] if port is not None else candidates[:1]
        return {"port": port, "held": [[p, self._op_holders(p)] for p in skipped]}

    def _op_scan(self, extra_info_dirs: list[str] | None = None) -> dict[str, Any]:
        processes = []
        for proc in self.processes.values():
            args = tensorboard_args(list(proc.cmdline))
            if not proc.running or args is None:
                continue
            logdir = flag_value(args, "logdir")
            listen = [] if proc.zombie else [
                {"family": "ipv6" if ":" in addr else "ipv4", "addr": addr, "port": port, "pid": proc.pid, "uid": None}
                for addr, port in proc.listen]
            logdir_abs = posixpath.normpath(posixpath.join(proc.cwd, logdir)) if logdir and proc.cwd else None
            visible = proc.user == self._user or self.others_sockets == "visible" or proc.zombie
            by_user = sorted({port for p in self.processes.values() if p.user == proc.user and self._live(p.pid)
                              for _, port in p.listen}) if self.others_sockets == "by_user" else None
            processes.append(dict(self._proc_info(proc), listen=listen if visible else [], logdir_abs=logdir_abs,
                                  sockets_visible=visible, user_listen_ports=None if visible else by_user))
        infos = []
        for info in self.info_files.values():
            pid = info.content.get("pid") if info.content else None
            live = self._live(pid)
            infos.append({"path": info.path, "owner": info.owner, "content": info.content,
                          "error": None if info.content is not None else "Expecting value",
                          "pid_alive": live is not None, "pid_create_time": live.create_time if live else None})
        now = FAKE_EPOCH + 10**6  # on the fake clock, after every process a test starts
        return {"processes": processes, "info_files": infos, "user": self._user, "now": now}

    def _op_find_tensorboard(self, explicit: str | None = None, env_prefix: str | None = None,
                             login_shell: bool = False) -> dict[str, Any]:
        self.environments.append((env_prefix, login_shell))
        searched = [explicit or "PATH"]
        if explicit is not None:
            return {"path": explicit, "searched": searched} if explicit in self.files else \
                {"path": None, "searched": searched, "explicit_bad": True}
        return {"path": self.tensorboard, "searched": searched}

    def _op_resolve_path(self, path: str, cwd: str | None = None) -> dict[str, Any]:
        if path.startswith("~"):
            path = self.home + path[1:]
        path = posixpath.normpath(posixpath.join(cwd or self.home, path))
        kind = "directory" if path in self.directories else "not a directory" if path in self.files else "missing"
        return {"path": path, "exists": kind == "directory", "kind": kind}

    def _op_private_dir(self, path: str) -> dict[str, Any]:
        return {"path": path, "error": None}

    def _op_launch(self, argv: list[str], log_path: str, cwd: str | None = None) -> dict[str, Any]:
        args = tensorboard_args(argv) or []
        port = int(flag_value(args, "port") or 6006)
        failure, self.launch_fails_with = self.launch_fails_with, None
        proc = self.add_process(argv, listen=[] if failure else [port])
        if failure:
            proc.running = False
            self.logs[log_path] = failure
        else:
            self.add_info_file(info_content(proc.pid, port=port, logdir=flag_value(args, "logdir") or "",
                                            start_time=proc.create_time + 1))
            self.logs[log_path] = f"TensorBoard serving on http://localhost:{port}/"
        self.last_launch = {"pid": proc.pid, "create_time": proc.create_time, "log_path": log_path}
        return self.last_launch

    def _op_wait_launched(self, port: int, path: str, timeout: float) -> dict[str, Any]:
        last = self.last_launch
        answer = self._op_wait_ready(last["pid"], last["create_time"], port, path, timeout)
        return dict(answer, info=self._op_proc_info(last["pid"])["info"])

    def _op_wait_ready(self, pid: int, create_time: float, port: int | None, path: str, timeout: float,
                       socket_path: str | None = None) -> dict[str, Any]:
        proc = self._live(pid)
        if proc is None:
            return {"ready": False, "reason": "exited", "elapsed": 0.01}
        if port not in proc.ports:
            return {"ready": False, "reason": "timeout", "elapsed": timeout}
        logdir = flag_value(tensorboard_args(list(proc.cmdline)) or [], "logdir")
        return {"ready": True, "body": json.dumps({"logdir": logdir}), "elapsed": 0.01}

    def _op_tail(self, path: str, lines: int = 20) -> dict[str, Any]:
        return {"text": "\n".join(self.logs.get(path, "").splitlines()[-lines:])}

    def _op_send_signal(self, pid: int, create_time: float | None, sig: str) -> dict[str, Any]:
        if pid <= 1:
            return {"outcome": "protected"}
        proc = self.processes.get(pid)
        if proc is None or not self._op_alive(pid, create_time)["alive"]:
            return {"outcome": "gone"}
        if proc.user != self._user and self._user != "root":
            return {"outcome": "denied"}
        self.signals.append((pid, sig))
        if sig == "SIGTERM" and not proc.ignores_sigterm and not proc.unkillable:
            self.exit(pid, cleanly=not proc.stops_uncleanly)
        elif sig == "SIGKILL" and not proc.unkillable:
            self.exit(pid, cleanly=False)
        return {"outcome": "sent"}

    def _op_wait_gone(self, procs: list[list[Any]], timeout: float) -> dict[str, Any]:
        return {"alive": [list(p) for p in procs if self._op_alive(p[0], p[1])["alive"]]}

    def _op_remove_info_file(self, path: str) -> dict[str, Any]:
        return {"removed": self.info_files.pop(path, None) is not None}

    def _op_ping(self) -> dict[str, Any]:
        return {}

    def _op_whoami(self) -> dict[str, Any]:
        return {"user": self._user, "home": self.home, "pid": 1, "psutil": False, "python": "3.11.2",
                "cache_dir": f"{self.home}/.cache/tbctl"}

    def _serving(self, port: int) -> FakeProcess | None:
        return next((p for p, _ in self._listening(port)), None)

    def _op_http_get(self, port: int, path: str, timeout: float = 2.0, host: str = "127.0.0.1") -> dict[str, Any]:
        proc = self._serving(port)
        if proc is None:
            return {"status": None, "error": "[Errno 111] Connection refused"}
        args = tensorboard_args(list(proc.cmdline))
        if args is None:
            return {"status": None, "not_http": True, "error": "BadStatusLine: SSH-2.0-OpenSSH_9.2p1"}
        return {"status": 200, "body": json.dumps({"logdir": flag_value(args, "logdir")})}

    def _op_wait_http(self, port: int | None, path: str, timeout: float, host: str = "127.0.0.1",
                      socket_path: str | None = None) -> dict[str, Any]:
        if port is None or socket_path is not None:  # no unix sockets here (see _op_prepare_private)
            return {"ready": False, "elapsed": timeout}
        answer = self._op_http_get(port, path, timeout, host)
        if answer["status"] == 200:
            return {"ready": True, "body": answer["body"], "elapsed": 0.01}
        return {"ready": False, "elapsed": timeout}

    def _op_read_log(self, path: str, offset: int | None = None, lines: int = 20, max_bytes: int = 256 * 1024,
                     pid: int | None = None, create_time: float | None = None) -> dict[str, Any]:
        alive = self._op_alive(pid, create_time)["alive"] if pid is not None else None
        if path not in self.logs:
            return {"alive": alive, "truncated": False, "text": "", "offset": offset or 0, "size": 0,
                    "error": "No such file or directory"}
        data = self.logs[path]
        if offset is None:
            text = "".join(data.splitlines(True)[-lines:]) if lines > 0 else ""
        else:
            text = data[offset:offset + max_bytes]
        return {"alive": alive, "truncated": False, "text": text, "offset": len(data), "size": len(data)}

    # Private dashboards (unix sockets in a 0700 directory) are not modelled: they are tested against the real
    # probe. A FakeHost says so as the probe says it cannot make one.
    _NO_SOCKETS = "a FakeHost has no unix sockets"

    def _op_prepare_private(self, executable: str) -> dict[str, Any]:
        return {"error": self._NO_SOCKETS}

    def _op_launch_private(self, executable: str, args: list[str], log_path: str, cwd: str | None = None) -> dict[str, Any]:
        return {"error": self._NO_SOCKETS}

    def _op_private_ready(self, pid: int, socket_path: str, path: str) -> dict[str, Any] | None:
        return None

    def _op_remove_private_socket(self, path: str) -> dict[str, Any]:
        return {"removed": False}

    def _op_pull_poll(self, logdir: str, known: dict[str, Any] | None = None, budget: int = 4 << 20,
                      encoding: str = "zlib", digest: str | None = None) -> dict[str, Any]:
        """Pulls (`up --pull`) are tested against the real probe: a FakeHost's logdirs hold no files."""
        root = self._op_resolve_path(logdir)["path"]
        return {"root": root, "now": FAKE_EPOCH + 10**6, "exists": root in self.directories, "files": [],
                "unchanged": 0, "gone": [], "pending": 0, "errors": [], "next_digest": digest or ""}

    def _op_run(self, argv: list[str], timeout: float = 30.0, cwd: str | None = None) -> dict[str, Any]:
        """No scheduler here (tests/support/slurm.py builds a real Slurm cluster for that)."""
        return {"rc": None, "stdout": "", "stderr": "", "error": f"{argv[0]}: command not found"}


class FakeHosts:
    """A HostOpener (tbctl/core/host_opener.py) over FakeHosts by name, None meaning this machine: what
    core and, through the CLI's Environment, the commands are given in the fast tests. It remembers which
    specs were opened, so a test can tell that a decision needed no connection; a spec in `unreachable`
    raises its error, as a host that cannot be reached does."""

    def __init__(self, local: FakeHost, *remotes: FakeHost) -> None:
        self.by_spec: dict[str | None, FakeHost] = {None: local, **{h.name: h for h in remotes}}
        self.unreachable: dict[str, TbctlError] = {}
        self.opened: list[str | None] = []

    def open(self, spec: str | None, *, env_prefix: str | None = None, connect_timeout: float | None = None,
             jump: str | None = None, interactive: bool = True) -> FakeHost:
        self.opened.append(spec)
        if spec in self.unreachable:
            raise self.unreachable[spec]
        if spec not in self.by_spec:
            from tbctl.errors import Unreachable

            raise Unreachable(f"could not resolve hostname {spec}", hint="a FakeHosts knows only the hosts it was given")
        return self.by_spec[spec]

    def local(self) -> FakeHost:
        return self.by_spec[None]

    def backend(self, spec: str | None) -> str:
        return "openssh"


def this_machine() -> FakeHost:
    """The local FakeHost of the fast tests: both logdirs exist on it."""
    return FakeHost(directories=[RUNS, OTHER_RUNS])


def gpu_server(name: str = "gpu1") -> FakeHost:
    """A remote FakeHost with both logdirs, its pids apart from this machine's."""
    return FakeHost(name, remote=True, directories=[RUNS, OTHER_RUNS], first_pid=2000)


def started(host: FakeHost, store: StateStore, logdir: str = RUNS, port: int = 6006) -> TensorBoardInstance:
    """A TensorBoard tbctl started (`up --new`): running on the host, and in tbctl's records in `store`."""
    return up(host, store, UpRequest(logdir=logdir, port=port, timeout=5, new=True)).instance
