"""Helpers for tests that start real processes. Every process is tracked and reaped by pid.

Self-check (as any user, from the repo root):  python -m tests.support.procs
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

TERM_GRACE_S = 3.0  # SIGTERM -> SIGKILL escalation delay
KILL_WAIT_S = 5.0  # after SIGKILL; only a process stuck in the kernel outlives this
_CREATE_TIME_SLACK_S = 0.05  # psutil create_time has jiffy (10 ms) resolution
_P = TypeVar("_P", bound="subprocess.Popen[Any]")

# A direct urllib opener: http_proxy in the environment must never capture 127.0.0.1 probes.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Reaped:
    """outcome: exited (before teardown) | terminated | killed (needed SIGKILL) | reused (never
    signalled: the pid is another process now) | survived."""

    pid: int
    outcome: str
    cmdline: str


def alive(proc: int | psutil.Process) -> bool:
    """Running and not a zombie. For a Process, is_running() also compares create_time, so a reused pid
    is dead."""
    try:
        if isinstance(proc, int):
            proc = psutil.Process(proc)
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "?"


class ProcessReaper:
    """Records every process a test starts (plus pids it learns about) and reaps them all.

    close(): SIGTERM to everything still alive (including descendants found at that moment),
    wait up to `grace` seconds, SIGKILL the rest, wait again. Popen children are waited on so
    no zombie is left behind; adopted processes are checked by create_time before any signal.
    """

    def __init__(self, grace: float = TERM_GRACE_S, include_descendants: bool = True) -> None:
        self.grace, self.include_descendants = grace, include_descendants
        self._popens: list[subprocess.Popen[Any]] = []
        self._adopted: list[psutil.Process] = []
        self._notes: list[Reaped] = []  # adopt() calls that found nothing to own

    def __enter__(self) -> ProcessReaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def track(self, proc: _P) -> _P:
        self._popens.append(proc)
        return proc

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(args, **kwargs), tracked from the first instant."""
        return self.track(subprocess.Popen(args, **kwargs))

    def adopt(
        self, pid: int | psutil.Process, create_time: float | None = None, slack: float = _CREATE_TIME_SLACK_S
    ) -> psutil.Process | None:
        """Own a process the code under test started (e.g. a detached TensorBoard). Identity is
        taken now, or checked against `create_time` (+-slack; an info file's start_time is int
        seconds written ~1 s after start, so pass slack=3 for it); a reused pid is never
        signalled. Returns None if the process is gone or is not the one meant."""
        try:
            proc = pid if isinstance(pid, psutil.Process) else psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > slack:
                self._notes.append(Reaped(proc.pid, "reused", _cmdline(proc)))
                return None
        except psutil.NoSuchProcess:
            self._notes.append(Reaped(pid.pid if isinstance(pid, psutil.Process) else pid, "exited", ""))
            return None
        self._adopted.append(proc)
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self._popens] + [p.pid for p in self._adopted]

    def close(self) -> list[Reaped]:
        """Terminate, escalate, reap. Raises RuntimeError if anything survived SIGKILL."""
        popens, adopted, results = self._popens, self._adopted, self._notes
        self._popens, self._adopted, self._notes = [], [], []
        targets: dict[int, tuple[psutil.Process, subprocess.Popen[Any] | None]] = {}
        for popen in popens:
            try:  # an unreaped child's pid cannot be reused, so this Process is that child
                if popen.poll() is None:
                    targets[popen.pid] = (psutil.Process(popen.pid), popen)
                    continue
            except psutil.NoSuchProcess:
                popen.wait(timeout=KILL_WAIT_S)
            results.append(Reaped(popen.pid, "exited", _argv(popen)))
        for proc in adopted:
            if proc.pid not in targets:
                if alive(proc):
                    targets[proc.pid] = (proc, None)
                else:
                    results.append(Reaped(proc.pid, "exited", ""))
        if self.include_descendants:
            # Snapshot before signalling: once a parent dies its children are re-parented.
            for proc, _ in list(targets.values()):
                try:
                    for child in proc.children(recursive=True):
                        targets.setdefault(child.pid, (child, None))
                except psutil.NoSuchProcess:
                    pass
        cmdlines = {pid: _cmdline(proc) for pid, (proc, _) in targets.items()}
        _signal_all(targets, signal.SIGTERM)
        pending = _wait_gone(targets, self.grace)
        results += [Reaped(pid, "terminated", cmdlines[pid]) for pid in targets if pid not in pending]
        if pending:
            _signal_all(pending, getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows: both TerminateProcess
            still = _wait_gone(pending, KILL_WAIT_S)
            results += [Reaped(pid, "killed", cmdlines[pid]) for pid in pending if pid not in still]
            results += [Reaped(pid, "survived", cmdlines[pid]) for pid in still]
        for stream in (st for po in popens for st in (po.stdin, po.stdout, po.stderr) if st is not None):
            stream.close()  # pipes we opened must not outlive the test (ResourceWarning)
        if any(r.outcome == "survived" for r in results):
            raise RuntimeError(f"processes survived SIGKILL: {results}")
        return results


_Targets = dict[int, tuple[psutil.Process, "subprocess.Popen[Any] | None"]]


def _signal_all(targets: _Targets, sig: int) -> None:
    for proc, popen in targets.values():
        try:  # Popen: no-op once reaped. psutil: NoSuchProcess if the pid was reused.
            popen.send_signal(sig) if popen is not None else proc.send_signal(sig)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass


def _wait_gone(targets: _Targets, timeout: float) -> _Targets:
    """Wait until all are gone; return those still alive. Reaps our own children."""
    pending = dict(targets)
    deadline = time.monotonic() + timeout
    while pending:
        for pid, (proc, popen) in list(pending.items()):
            if popen is None and proc.is_running() and proc.ppid() == os.getpid():
                # Our child without a Popen here (e.g. started in-process by the code under
                # test): collect its exit status ourselves, or it stays a zombie.
                try:
                    proc.wait(timeout=0)
                except (psutil.Error, ChildProcessError):
                    pass
            # A non-child zombie counts as gone: its own parent reaps it.
            if (popen.poll() is not None) if popen is not None else not alive(proc):
                del pending[pid]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return pending


def _argv(popen: subprocess.Popen[Any]) -> str:
    return " ".join(map(str, popen.args)) if isinstance(popen.args, (list, tuple)) else str(popen.args)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until truthy or `timeout` s elapsed; one last try at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _loopback(family: socket.AddressFamily) -> str:
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def _bindable(family: socket.AddressFamily, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((_loopback(family), port))
        return True
    except OSError as exc:
        # No IPv6 on this host: nothing can clash there.
        return exc.errno in (97, 99)  # EAFNOSUPPORT, EADDRNOTAVAIL


def free_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    """A port free right now on the loopback of *both* families (port numbers are per family,
    and tbctl looks at both), chosen by the kernel from the ephemeral range."""
    other = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((_loopback(family), 0))
            port: int = s.getsockname()[1]
        if _bindable(other, port):
            return port
    raise RuntimeError("no port free on both loopback families")


def listeners_on(port: int) -> list[str]:
    """Addresses LISTENing on `port` here, whichever process holds them."""
    # the machine's real answer, also where the macOS-like layer makes net_connections() refuse as on macOS
    net_connections = getattr(psutil, "_tbctl_test_linux_net_connections", psutil.net_connections)
    return [c.laddr.ip for c in net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def port_free(port: int) -> bool:
    """Nothing LISTENs on `port` here (either family)."""
    return not listeners_on(port)


def _has_conn(pid: int, port: int, status: str, remote: bool) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == status and (a := c.raddr if remote else c.laddr) and a.port == port for c in conns)


def _wait_for_child(proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, timeout: float) -> None:
    if wait_until(lambda: proc.poll() is not None or ready(), timeout) and proc.poll() is None:
        return
    proc.kill()
    _, err = proc.communicate(timeout=KILL_WAIT_S)  # a grandchild holding the pipe must not hang us
    raise RuntimeError(f"{what} not ready (rc={proc.returncode}): {(err or b'').decode(errors='replace')[-2000:]}")


_LISTENER = r"""
import signal, socket, sys, threading
family, host, port, ignore = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
srv.bind((host, port))
srv.listen(64)
REPLY = b"HTTP/1.1 404 Not Found\r\nContent-Length: 16\r\n\r\nnot tensorboard\n"
def serve(conn):  # one 404 per request; the connection stays open until the peer closes it
    buf = b""
    with conn:
        while data := conn.recv(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                buf = buf.split(b"\r\n\r\n", 1)[1]
                conn.sendall(REPLY)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
_CLIENT = "import socket, sys, time\ns = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)\ntime.sleep(1e6)"


def start_listener(
    reaper: ProcessReaper, port: int, *, family: socket.AddressFamily = socket.AF_INET,
    host: str | None = None, ignore_sigterm: bool = False,
) -> subprocess.Popen[bytes]:
    """A non-TensorBoard server LISTENing on host:port (IPv6-only on "::1" for AF_INET6) that
    answers any HTTP request with 404 and keeps connections open. Returns once psutil sees
    the LISTEN socket."""
    host = host or _loopback(family)
    args = [sys.executable, "-c", _LISTENER, str(int(family)), host, str(port), "1" if ignore_sigterm else "0"]
    proc = reaper.popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_child(proc, lambda: _has_conn(proc.pid, port, psutil.CONN_LISTEN, False), f"listener :{port}", 15)
    return proc


def start_client(reaper: ProcessReaper, port: int, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """A process holding one idle client connection to host:port; returns once ESTABLISHED."""
    args = [sys.executable, "-c", _CLIENT, host, str(port)]
    proc = reaper.popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_child(proc, lambda: _has_conn(proc.pid, port, psutil.CONN_ESTABLISHED, True), f"client :{port}", 15)
    return proc


# A web server whose command line looks like TensorBoard's (run it as a file named `tensorboard`, with
# `--port N` and any other flags): answers every GET with 200 and `{}`. For tests of what tbctl makes of a
# TensorBoard it did not start, hostile flags included; it needs only the system's python3.
FAKE_TENSORBOARD = r"""#!/usr/bin/env python3
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class LoggedPopen(subprocess.Popen[bytes]):
    log_path: Path  # combined stdout/stderr


# The TensorBoard of this interpreter's venv, as a path: what tests pass as `--tensorboard`, here and on the
# "remote" (this same machine).
TENSORBOARD = str(Path(sys.executable).parent / "tensorboard")


def tensorboard_command() -> list[str]:
    """The TensorBoard that belongs to this interpreter (console script, else the module)."""
    exe = Path(sys.executable).parent / "tensorboard"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "tensorboard.main"]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET, bypassing any proxy; HTTP errors are returned, not raised."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answers(url: str, status: int = 200, timeout: float = 2.0) -> bool:
    """Whether a GET of `url` returns `status` right now (False while nothing listens): for wait_until."""
    try:
        return http_get(url, timeout=timeout)[0] == status
    except OSError:
        return False


# What `ps` shows as argv[0] for TensorBoard under python.org's, Homebrew's and Xcode's Pythons on macOS: a
# framework build re-execs itself as its app bundle's `Python` (capital P).
MACOS_FRAMEWORK_PYTHON = "/Library/Frameworks/Python.framework/Versions/3.11/Resources/Python.app/Contents/MacOS/Python"


def framework_python_command(env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env) that run this venv's TensorBoard with argv[0] = macOS' framework `Python`, on this
    machine: `exec -a` names the process, and PYTHONPATH finds the venv's packages (the interpreter no longer
    finds its venv from an argv[0] that does not exist)."""
    import site

    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([*site.getsitepackages(), *filter(None, [env.get("PYTHONPATH")])])
    return ["bash", "-c", 'exec -a "$0" "$@"', MACOS_FRAMEWORK_PYTHON, sys.executable, TENSORBOARD], env


def start_plain_tensorboard(
    reaper: ProcessReaper, logdir: Path | str, port: int, *, extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None, log_dir: Path | None = None, timeout: float = 30.0,
    macos_framework_argv0: bool = False,
) -> LoggedPopen:
    """TensorBoard started the plain way (not via tbctl), ready when /data/logdir answers 200
    with *our* logdir (so a different server already on the port is not mistaken for it).
    `env` lets a test point TMPDIR elsewhere to isolate the .tensorboard-info directory;
    `macos_framework_argv0` runs it as macOS' framework Python shows it (framework_python_command)."""
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tbctl-tb-log-"))
    log_path = log_dir / f"tensorboard-{port}.log"
    program = tensorboard_command()
    if macos_framework_argv0:
        program, env = framework_python_command(env)
    cmd = [*program, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1", *extra_args]
    with open(log_path, "wb") as log:  # the child keeps its own copy of the fd
        proc = reaper.track(LoggedPopen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env))
    proc.log_path = log_path

    def ready() -> bool:
        try:
            status, body = http_get(f"http://127.0.0.1:{port}/data/logdir", timeout=1.0)
            return status == 200 and json.loads(body).get("logdir") == str(logdir)
        except (OSError, ValueError):
            return False

    if not (wait_until(lambda: proc.poll() is not None or ready(), timeout, 0.1) and proc.poll() is None):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=KILL_WAIT_S)
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"TensorBoard on :{port} not ready in {timeout}s (rc={proc.returncode}); log:\n{tail}")
    return proc


def _selfcheck() -> None:
    """Exercise every helper; assert that nothing we started outlives the reaper."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for examples/
    from examples.make_example_logdir import write_example_logdir

    me = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp, ProcessReaper() as other:
        reaper = ProcessReaper()
        p4, p6, p_stub = free_port(), free_port(socket.AF_INET6), free_port()
        start_listener(reaper, p4)
        start_listener(reaper, p6, family=socket.AF_INET6)
        with socket.socket() as s4:
            assert s4.connect_ex(("127.0.0.1", p6)) != 0, "AF_INET6 listener must be v6-only"
        assert http_get(f"http://127.0.0.1:{p4}/data/logdir")[0] == 404
        client = start_client(reaper, p4)
        start_client(reaper, p6, host="::1")
        stubborn = start_listener(reaper, p_stub, ignore_sigterm=True)
        write_example_logdir(Path(tmp, "logs"))
        t0 = time.monotonic()
        # Own TMPDIR => own .tensorboard-info: concurrent tbctl tests must not find (and stop) it.
        env = {**os.environ, "TMPDIR": tmp}
        tb_port = free_port()
        start_plain_tensorboard(reaper, Path(tmp, "logs"), tb_port, log_dir=Path(tmp), env=env)
        print(f"tensorboard ready in {time.monotonic() - t0:.2f}s, children {[c.name() for c in me.children()]}")
        tags = json.loads(http_get(f"http://127.0.0.1:{tb_port}/data/plugin/scalars/tags", 5)[1])
        assert set(tags) == {"lr_0.1", "lr_0.01"} and set(tags["lr_0.1"]) == {"loss", "accuracy"}, tags
        # A "detached" process (new session, parent gone) that only its pid leads to.
        # (Its stdio must not be our pipe, or run() would wait for the grandchild's EOF.)
        code = "import subprocess as s, sys; print(s.Popen([sys.executable, '-c', 'import time; time.sleep(1e6)'], "
        code += "start_new_session=True, stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"
        launcher = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        detached = reaper.adopt(int(launcher.stdout))
        assert detached is not None and detached.ppid() != me.pid
        # Wrong create_time: the reaper must refuse it; `other` owns it and reaps it later.
        decoy = other.popen([sys.executable, "-c", "import time; time.sleep(1e6)"])
        assert reaper.adopt(decoy.pid, create_time=psutil.Process(decoy.pid).create_time() + 60) is None
        all_pids = reaper.pids() + [c.pid for c in me.children(recursive=True) if c.pid != decoy.pid]
        t0 = time.monotonic()
        results = reaper.close()
        took = time.monotonic() - t0
        outcome = {r.pid: r.outcome for r in results}
        for r in results:
            print(f"  {r.pid:>7} {r.outcome:<10} {' '.join(r.cmdline.split())[:90]}")
        assert outcome[stubborn.pid] == "killed" and outcome[client.pid] == "terminated"
        assert outcome[decoy.pid] == "reused" and decoy.poll() is None, "decoy must not be signalled"
        assert TERM_GRACE_S <= took < TERM_GRACE_S + 2, took
        assert not any(psutil.pid_exists(p) and alive(psutil.Process(p)) for p in all_pids if p != decoy.pid)
        assert [c.pid for c in me.children(recursive=True)] == [decoy.pid]
        print(f"reaper.close() took {took:.2f}s (SIGTERM-ignoring listener escalated to SIGKILL)")
    assert decoy.poll() is not None and not me.children(recursive=True)
    print("procs self-check OK: no process left")


if __name__ == "__main__":
    _selfcheck()
