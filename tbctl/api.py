"""tbctl from Python: `up()` returns a `Dashboard`; `ls()`, `down()` and `free_port()` return the records the
commands print as JSON. Errors are tbctl's own exceptions (`tbctl.errors`), never an exit; nothing is printed
unless a `messages` callable is given.

Every decision is core's (the same calls the commands make); this module only turns keyword arguments into
core's requests and keeps what a foreground `up` holds for as long as its `Dashboard` lives.

No SSH question can be asked from here (there is no terminal to ask on): keys come from the agent or the
ssh_config, as with `ssh -o BatchMode=yes`.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.core.down import Ended
    from tbctl.core.free_port import FreePortSummary
    from tbctl.core.listing import Listing
    from tbctl.core.reach import Reach
    from tbctl.core.serve import ServeRequest
    from tbctl.core.session import ServeSession
    from tbctl.hosts.link import LinkState
    from tbctl.models import TensorBoardInstance, UpResult
    from tbctl.state import StateStore

Messages = Callable[[str], None]

__all__ = ["Dashboard", "down", "free_port", "ls", "up"]


class _Report:
    """core's ServeReport for a caller with no terminal: every line to `messages`, if given."""

    def __init__(self, messages: Messages | None) -> None:
        self._say = messages or (lambda _: None)

    def progress(self, text: str) -> None:
        self._say(text)

    notice = progress

    def warn(self, text: str) -> None:
        self._say(f"warning: {text}")

    def busy(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def connection(self, host: str, state: LinkState) -> None:
        self._say(f"connection to {host}: {state.state}")

    def holding(self, *, stops_tensorboard: bool) -> None:
        pass

    def ended(self, why: str) -> None:
        self._say(why)

    def stopped(self, host: str, instance: TensorBoardInstance) -> None:
        self._say(f"stopped TensorBoard pid {instance.pid} on {host}")

    def not_stopped(self, host: str, instance: TensorBoardInstance, problem: str) -> None:
        self.warn(f"could not stop TensorBoard pid {instance.pid} on {host}: {problem}")

    def step_ended(self, instance: TensorBoardInstance) -> None:
        self._say(f"ended step {instance.step} (TensorBoard on {instance.node}); job {instance.job} keeps running")

    def step_not_ended(self, instance: TensorBoardInstance, problem: str) -> None:
        self.warn(f"could not end step {instance.step} of job {instance.job}: {problem}")

    def closed(self) -> None:
        self._say("forward closed")


def _context(ssh: str | None, messages: Messages | None) -> tuple[Settings, Reach, StateStore]:
    """The settings in effect now (file and TBCTL_* variables), how hosts are reached, and tbctl's records."""
    from tbctl.config import load_settings
    from tbctl.core.reach import Reach
    from tbctl.state import StateStore

    settings = load_settings()
    return settings, Reach(settings, ssh, None, messages or (lambda _: None)), StateStore(settings.state_dir)


class Dashboard:
    """A TensorBoard that answers at `url` from this machine, and what `up` holds to keep it so.

    `stop()` (or leaving a `with` block) ends what this `up` started: the TensorBoard unless it was reused
    (or `keep=True`), and the forward to it, in the foreground or the background. A foreground forward
    lives as long as the Dashboard is not stopped, at most as long as this process; a TensorBoard started
    here on this machine, or with `detach=True`, outlives the process unless stopped."""

    def __init__(self, session: ServeSession, stack: contextlib.ExitStack, request: ServeRequest,
                 ssh: str | None, messages: Messages | None, forwards_before: frozenset[int]) -> None:
        self._session = session
        self._stack = stack
        self._request = request
        self._ssh = ssh
        self._messages = messages
        self._forwards_before = forwards_before
        self._lock = threading.Lock()
        self.stopped = False

    @property
    def result(self) -> UpResult:
        """The record `tbctl up --json` prints."""
        return self._session.result  # type: ignore[no-any-return]

    @property
    def instance(self) -> TensorBoardInstance:
        return self.result.instance

    @property
    def url(self) -> str:
        """Where this machine opens it (through the forward for a remote one)."""
        return self.result.url

    @property
    def pid(self) -> int | None:
        return self.instance.pid

    @property
    def port(self) -> int | None:
        """TensorBoard's port on its host."""
        return self.instance.port

    @property
    def socket(self) -> str | None:
        """The unix socket a private TensorBoard serves on, on its host (None: it serves on `port`)."""
        return self.instance.socket

    @property
    def local_port(self) -> int | None:
        """This machine's end: the forward's port for a remote TensorBoard, else TensorBoard's own."""
        return self.instance.forward_port or self.instance.port

    @property
    def host(self) -> str:
        return self.instance.host

    @property
    def logdir(self) -> str | None:
        return self.instance.logdir

    @property
    def reused(self) -> bool:
        return self.result.reused

    @property
    def forwarding(self) -> bool:
        """Whether this process holds the forward (it closes with `stop()` or at exit)."""
        return self._session.forwarding

    @property
    def detached(self) -> bool:
        """Whether a background forwarder keeps the URL alive (it outlives this process)."""
        return self._session.background_port is not None

    def stop(self) -> None:
        """End what this `up` started (idempotent): its foreground forward, its background forward, and the
        TensorBoard unless it was reused or kept. An instance another `up` started is left running."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        _HELD.discard(self)
        session = self._session
        local_instance = not session.forwarding and session.background_port is None
        try:
            if local_instance and not (self.reused or self._request.keep):
                from tbctl.core.stopping import stop_instances
                from tbctl.core.serve import STOP_TIMEOUT
                from tbctl.state import StateStore

                settings = _context(self._ssh, self._messages)[0]
                stop_instances(session.host, StateStore(settings.state_dir), [self.instance], force=False,
                               timeout=STOP_TIMEOUT)
        finally:
            self._stack.close()  # the foreground forward, and what the session stops with it
        port = session.background_port
        if port is not None and self._request.detach and port not in self._forwards_before:
            settings, reach, store = _context(self._ssh, self._messages)
            from tbctl.core.down import end

            end(reach, settings, store, str(port), host_spec=None, all_instances=False, force=False, timeout=None,
                connect_timeout=self._request.connect_timeout, job=None)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else ("reused" if self.reused else "started")
        return f"<Dashboard {self.url} pid {self.pid} on {self.host} serving {self.logdir!r} ({state})>"


# Foreground forwards end with the process; what they stop with them must stop too (as Ctrl-C does for
# `tbctl up --host`), so those Dashboards are stopped at exit. Held here, a forward lives on when its
# Dashboard is no longer referenced (a notebook cell's result that was not assigned), until stop() or exit.
_HELD: set[Dashboard] = set()


def _hold(dashboard: Dashboard) -> None:
    """Stop `dashboard` at exit. Exit handlers run last registered first, and the SSH backend may register
    its own when it is imported (paramiko's closes every transport): registered again now, after the
    connection exists, ours runs while the connection still does."""
    _HELD.add(dashboard)
    atexit.unregister(_stop_held)
    atexit.register(_stop_held)


def _stop_held() -> None:
    for dashboard in list(_HELD):
        with contextlib.suppress(Exception):
            dashboard.stop()


def serve_request(request: ServeRequest, *, ssh: str | None = None, messages: Messages | None = None) -> Dashboard:
    """`up` from a request as the command builds it from its flags (the notebook magic's way in)."""
    import dataclasses

    from tbctl.core.serve import serve

    request = dataclasses.replace(request, catch_hangup=False)
    settings, reach, store = _context(ssh, messages)
    before = frozenset(f.local_port for f in store.forwards())
    stack = contextlib.ExitStack()
    session = stack.enter_context(serve(request, settings, reach, store, _Report(messages)))
    dashboard = Dashboard(session, stack, request, ssh, messages, before)
    if session.forwarding:
        _hold(dashboard)
    return dashboard


def up(logdir: str | None = None, *, host: str | None = None, port: int | None = None, new: bool = False,
       detach: bool = False, keep: bool = False, local_port: int | None = None, timeout: float | None = None,
       tensorboard: str | None = None, env: str | None = None, tensorboard_args: Sequence[str] = (),
       connect_timeout: float | None = None, expose_to_network: bool = False, private: bool | None = None,
       ssh: str | None = None, messages: Messages | None = None) -> Dashboard:
    """`tbctl up`: TensorBoard serving `logdir` (default: the `logdir` setting, else "runs") on `host` (None:
    here), verified ready and reachable from this machine. Reuses a live instance serving that logdir
    unless `new`. `private=True` (with `host`): TensorBoard serves on a unix socket in a 0700 directory of
    yours there and on no TCP port, so no other user of the host can open it (None: the `private` setting).
    Raises tbctl.errors.TbctlError (PortBusy, TensorBoardNotFound, TensorBoardFailed, SSHError, UsageError…)."""
    from tbctl.core.serve import ServeRequest

    request = ServeRequest(
        host=host, logdir=logdir, port=None if port is None else str(port),
        local_port=None if local_port is None else str(local_port), timeout=timeout, new=new,
        tensorboard=tensorboard, env_prefix=env, extra_args=tuple(tensorboard_args),
        connect_timeout=connect_timeout, keep=keep, detach=detach, expose_to_network=expose_to_network,
        private=private)
    return serve_request(request, ssh=ssh, messages=messages)


def ls(host: str | Sequence[str] | None = None, *, all_hosts: bool = False, connect_timeout: float | None = None,
       ssh: str | None = None) -> Listing:
    """`tbctl ls`: every TensorBoard here (or on the hosts), ours or not, and the background forwards.
    With several hosts, one that cannot be listed is an entry of `errors`; with one, its error is raised."""
    from tbctl.core.listing import hosts_to_list, list_hosts

    settings, reach, store = _context(ssh, None)
    hosts = [host] if isinstance(host, str) else list(host or [])
    specs = hosts_to_list(hosts, all_hosts=all_hosts, settings=settings, store=store)
    return list_hosts(specs, reach, store, connect_timeout=connect_timeout)


def down(target: str | int | None = None, *, host: str | None = None, all: bool = False,  # noqa: A002 (`--all`)
         force: bool = False, timeout: float | None = None, connect_timeout: float | None = None,
         job: str | None = None, ssh: str | None = None) -> Ended:
    """`tbctl down`: stop TensorBoards by port, pid or logdir (or `all=True`: every one of yours) and end the
    background forwards to them. Raises TbctlError when one could not be stopped (as the command exits 1)."""
    from tbctl.core.down import end, require_ended

    settings, reach, store = _context(ssh, None)
    ended = end(reach, settings, store, None if target is None else str(target), host_spec=host, all_instances=all,
                force=force, timeout=timeout, connect_timeout=connect_timeout, job=job)
    require_ended(ended)
    return ended


def free_port(port: int, *, host: str | None = None, yes: bool = False, force: bool = False, dry_run: bool = False,
              timeout: float | None = None, connect_timeout: float | None = None,
              ssh: str | None = None) -> FreePortSummary:
    """`tbctl free-port`: stop whatever LISTENs on `port` and verify it is free. Only your own TensorBoards
    are stopped without `yes=True` (nobody can be asked from here); raises PortBusy when the port stays held."""
    from tbctl.config import parse_port
    from tbctl.core import free_port as core

    settings, reach, _ = _context(ssh, None)
    number = parse_port(port)
    with reach.open(host, connect_timeout=connect_timeout) as opened:
        report = core.inspect(opened, number)
        if not report.holders or dry_run:
            return core.summary(report, dry_run=dry_run)
        asking = core.to_confirm(report)
        if asking and not yes:
            core.refuse_unconfirmed(report, asking, hint="pass yes=True to stop it without asking")
        result = core.free(opened, report, force=force, timeout=timeout, settings=settings)
    core.require_freed(result)
    return core.summary(report, dry_run=dry_run, result=result)

