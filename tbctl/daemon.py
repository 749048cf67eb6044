"""The background forwarder: one detached tbctl process per SSH host, serving every detached forward to
that host (`up --host … --detach`, `tunnel … --detach`).

What it should serve is the forwards file in the state dir (written by tbctl commands); what it does is
its status file there (read by `ls` and `down`). It reconnects through `Link`, closes a forward whose
TensorBoard is gone, and exits when it has nothing left to serve."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tbctl import probe
from tbctl.errors import ExitCode, PortBusy, SSHError, TbctlError
from tbctl.hosts.link import LinkState
from tbctl.records import ForwarderStatus, ForwardRecord, ForwardState
from tbctl.state import StateStore

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.hosts.link import Forward

SYNC_SECONDS = 0.5  # how soon a new or removed forward takes effect
INSTANCE_CHECK_SECONDS = 3.0  # how soon a forward notices its TensorBoard died
START_TIMEOUT = 15.0


def is_running(status: ForwarderStatus) -> bool:
    """The forwarder that wrote `status` is still that process (pid and start time), not a reused pid."""
    return probe.Probe().alive(status.pid, status.create_time)


def running_status(store: StateStore, host: str) -> ForwarderStatus | None:
    for status in store.forwarder_statuses():
        if status.host == host and is_running(status):
            return status
    return None


def ensure_running(store: StateStore, host: str, *, backend: str, connect_timeout: float | None = None,
                   env_prefix: str | None = None, route: tuple[str, str] | None = None) -> ForwarderStatus:
    """The host's forwarder, started if it is not running (one per host, even when two commands race).

    It runs as `python -I -m tbctl` from `/`: isolated mode puts neither the caller's directory nor
    PYTHONPATH on sys.path, so a `tbctl/` folder where the user typed the command cannot shadow tbctl."""
    with store.lock(f"forwarder-{host}"):
        status = running_status(store, host)
        if status is not None:
            return status
        log_path = store.forwarder_log_path(host)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # a host behind a jump host is named JUMP/SPEC: the forwarder is told the spec and the jump apart
        target = [route[0], "--jump", route[1]] if route is not None else [host]
        argv = [sys.executable, "-I", "-m", "tbctl", "--ssh", backend, "_forwarder", *target]
        argv += ["--connect-timeout", str(connect_timeout)] if connect_timeout else []
        argv += ["--env", env_prefix] if env_prefix else []
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                **probe.default_control().popen_options(),  # outlives the terminal and the command
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            status = running_status(store, host)
            if status is not None and _started_by(status, proc.pid):
                return status
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        tail = probe.tail(str(log_path), 10)["text"]
        raise TbctlError(f"the background forwarder for {host} did not start", hint=f"its log {log_path} says:\n{tail}")


def _started_by(status: ForwarderStatus, pid: int) -> bool:
    """The forwarder that wrote `status` is the process `pid`, or its child: a venv's python.exe on Windows
    is a redirector that runs the base interpreter as a child process."""
    if status.pid == pid:
        return True
    return (probe.default_backend().proc_info(status.pid) or {}).get("ppid") == pid


def wait_listening(store: StateStore, host: str, local_port: int, timeout: float = 10.0) -> ForwardState:
    """Wait until the host's forwarder reports `local_port` open; its error otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        status = running_status(store, host)
        fwd = next((f for f in (status.forwards if status else ()) if f.forward.local_port == local_port), None)
        if fwd is not None and fwd.listening:
            return fwd
        if fwd is not None and fwd.error:
            raise PortBusy(local_port, (), f"the background forwarder could not open 127.0.0.1:{local_port}: {fwd.error}")
        if status is None or time.monotonic() >= deadline:
            raise TbctlError(f"the background forwarder for {host} did not open 127.0.0.1:{local_port}",
                             hint=f"see {store.forwarder_log_path(host)}")
        time.sleep(0.05)


def stop(status: ForwarderStatus, timeout: float = 5.0) -> None:
    """Stop a forwarder (SIGTERM, then SIGKILL; on Windows CTRL_BREAK, then TerminateProcess), pid-reuse safe."""
    pid, ct = status.pid, status.create_time
    local = probe.Probe()
    if local.send_signal(pid, ct, "SIGTERM")["outcome"] == "sent":
        if local.wait_gone([[pid, ct]], timeout)["alive"]:
            local.send_signal(pid, ct, "SIGKILL")
            local.wait_gone([[pid, ct]], 5.0)


def serve(host_spec: str, store: StateStore, open_host: Callable[[], Host], *, backend: str = "") -> ExitCode:
    """The forwarder's main loop (run as `tbctl _forwarder HOST` in its own session). `open_host` gives the
    host unconnected, over the SSH backend `backend`: it connects, and reconnects, in the background."""
    stopping = threading.Event()
    # SIGHUP exists on POSIX only; SIGBREAK (the CTRL_BREAK `stop` sends) on Windows only
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stopping.set())
    me = probe.default_backend().proc_info(os.getpid()) or {}
    base = ForwarderStatus(host=host_spec, pid=os.getpid(), create_time=me.get("create_time"),
                           log_path=str(store.forwarder_log_path(host_spec)), started_at=time.time(),
                           link=LinkState("reconnecting", time.time(), 0, "starting"), backend=backend)
    link = base.link  # the latest state the host reported (set from its watcher's thread)
    forwarders: dict[int, Forward] = {}
    errors: dict[int, str] = {}
    tensorboards: dict[int, str] = {}
    published: ForwarderStatus | None = None

    def log(text: str) -> None:
        print(time.strftime("%Y-%m-%d %H:%M:%S"), text, flush=True)

    def publish() -> None:
        """Write the status file, only when it says something new (it is read, not watched)."""
        nonlocal published
        rows = []
        for rec in store.forwards(host_spec):
            fwd = forwarders.get(rec.local_port)
            rows.append(ForwardState(
                rec, listening=fwd is not None and fwd.listening,
                error=errors.get(rec.local_port, "") or (str(fwd.errors[0]) if fwd and fwd.errors else ""),
                active_connections=fwd.active_connections if fwd else 0, served=fwd.served if fwd else 0,
                tensorboard=tensorboards.get(rec.local_port, "unknown")))
        status = dataclasses.replace(base, link=link, forwards=tuple(rows))
        if status != published:
            store.write_forwarder_status(host_spec, status)
            published = status

    def on_change(state: LinkState) -> None:
        nonlocal link
        link = state
        via = f" via {state.via}" if state.via else ""
        log(f"link {state.state}{via}" + (f" (attempt {state.attempts}): {state.error}" if state.error else ""))
        publish()

    try:
        host = open_host()
    except TbctlError as exc:  # a config ssh cannot use, no ssh client: nothing will ever connect
        host = None
        on_change(LinkState("down", time.time(), 0, exc.message))
    if host is not None:
        host.watch_connection(on_change)
        host.keep_connected()
        from tbctl.core.pulling import PullKeeper, keep_polling

        pulls = threading.Thread(target=keep_polling, args=(host, PullKeeper(store, host_spec, log).pollers, stopping),
                                 name="tbctl-pulls", daemon=True)
        pulls.start()
    log(f"forwarding for {host_spec} (pid {os.getpid()})")
    publish()
    last_check = 0.0
    try:
        while not stopping.wait(SYNC_SECONDS):
            wanted = {r.local_port: r for r in store.forwards(host_spec)}
            for port in [p for p in forwarders if p not in wanted]:
                forwarders.pop(port).close()
                log(f"closed 127.0.0.1:{port}")
            for port, rec in wanted.items():
                if host is not None and port not in forwarders and port not in errors:
                    fwd = host.forward(rec.remote_port, local_port=port, remote_socket=rec.remote_socket)
                    assert fwd is not None
                    try:
                        forwarders[port] = fwd.start()
                        last_check = 0.0  # learn the new forward's TensorBoard health at once
                        log(f"127.0.0.1:{port} -> {host_spec}:{rec.remote_socket or rec.remote_port}")
                    except TbctlError as exc:  # the local port is taken, or the master refused it
                        errors[port] = exc.message
            if host is not None and host.link_state.state == "up" \
                    and time.monotonic() - last_check >= INSTANCE_CHECK_SECONDS:
                last_check = time.monotonic()
                _close_forwards_of_dead_instances(host, store, host_spec, wanted, tensorboards, log)
            if not wanted and _nothing_left(store, host_spec):
                log("nothing left to forward; exiting")
                break
            publish()
    finally:
        for fwd in forwarders.values():
            fwd.close()
        if host is not None:
            host.close()
        store.remove_forwarder_status(host_spec)
    return ExitCode.OK


def has_work(store: StateStore, host_spec: str) -> bool:
    """Whether a forward or a pull (`up --pull … --detach`) still needs the host's forwarder."""
    return bool(store.forwards(host_spec)) or any(s.host == host_spec for p in store.pulls() for s in p.sources)


def _nothing_left(store: StateStore, host_spec: str) -> bool:
    """Checked under the lock `ensure_running` holds, so a `--detach` that adds a forward and finds this
    forwarder running is never left without one: either it is seen here, or the forwarder is gone first."""
    with store.lock(f"forwarder-{host_spec}"):
        if has_work(store, host_spec):
            return False
        store.remove_forwarder_status(host_spec)
        return True


def _close_forwards_of_dead_instances(host: Any, store: StateStore, host_spec: str, wanted: dict[int, ForwardRecord],
                                      tensorboards: dict[int, str], log: Any) -> None:
    for port, rec in wanted.items():
        pid = rec.instance_pid
        if pid is None:
            continue
        try:
            alive = host.alive(pid, rec.instance_create_time, rec.instance_start_ticks)
        except (SSHError, TbctlError, OSError):
            return  # the link went down meanwhile; the watcher handles it
        tensorboards[port] = "serving" if alive else "dead"
        if not alive:
            store.remove_forwards(lambda r: r.host == host_spec and r.local_port == port)  # called at once
            log(f"TensorBoard pid {pid} on {host_spec} is gone; closing 127.0.0.1:{port}")
