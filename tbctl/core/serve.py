"""`up` and `tunnel` from the flags to a URL that answers, and what holds it: the use case behind both commands.

`serve()` merges the flags with the settings, opens the host, starts (or reuses) TensorBoard, and makes it
reachable from this machine: directly, through a forward this command holds, or through a background
forwarder (--detach). It yields a `ServeSession` whose `result` is the final record; `hold()` keeps a
foreground forward until Ctrl-C, and leaving the session closes that forward and stops what it started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tbctl.core.session import ServeReport, ServeSession, with_forward

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.core.host_opener import HostOpener
    from tbctl.core.job_up import JobUpRequest
    from tbctl.core.up import UpRequest
    from tbctl.hosts.base import Host
    from tbctl.models import ForwardInfo, TensorBoardInstance
    from tbctl.state import StateStore

STOP_TIMEOUT = 5.0  # stopping the TensorBoard a foreground `up` started, when its forward closes


@dataclass(frozen=True)
class ServeRequest:
    """`up`'s flags as given: None (or False, or empty) where not given, so the config can fill them in."""

    host: str | None = None
    logdir: str | None = None
    port: str | None = None
    local_port: str | None = None
    timeout: float | None = None
    new: bool = False
    tensorboard: str | None = None
    env_prefix: str | None = None
    extra_args: tuple[str, ...] = ()
    connect_timeout: float | None = None
    keep: bool = False
    detach: bool = False
    job: str | None = None
    job_name: str | None = None
    node: str | None = None
    wait: bool = False
    bind_node_address: bool = False
    expose_to_network: bool = False
    private: bool | None = None  # --private / --no-private; None: the `private` setting
    # Whether SIGTERM and SIGHUP end a foreground forward as Ctrl-C does: a command's own process, yes; a
    # library caller's (tbctl.up() in a notebook's kernel), no, since its signals are not tbctl's to take.
    catch_hangup: bool = True

    @property
    def in_job(self) -> bool:
        """Whether this is `up --job`: any of the Slurm flags says so."""
        return (self.job is not None or self.job_name is not None or self.node is not None or self.wait
                or self.bind_node_address)


@dataclass(frozen=True)
class TunnelRequest:
    host: str
    remote_port: str
    local_port: str | None = None
    connect_timeout: float | None = None
    detach: bool = False


@dataclass(frozen=True)
class TunnelResult:
    host: str
    remote_port: int
    local_port: int
    url: str
    detached: bool


def merged_request(request: ServeRequest, settings: Settings) -> tuple[UpRequest, int | None]:
    """The request for core's `up` and the wanted local port: flags > TBCTL_* > host section > file > defaults
    (`settings` already holds the environment over the file over the defaults)."""
    from tbctl.config import parse_port
    from tbctl.core.up import UpRequest

    per_host = settings.for_host(request.host)
    up_request = UpRequest(
        logdir=request.logdir or per_host.logdir or settings.logdir,
        port=parse_port(request.port, source="--port") if request.port is not None else (per_host.port or settings.port),
        timeout=request.timeout or settings.timeout,
        new=request.new,
        tensorboard=request.tensorboard or per_host.tensorboard,
        env_prefix=request.env_prefix or per_host.env,
        extra_args=per_host.tensorboard_args + request.extra_args,
        network_ok=request.expose_to_network,
        tensorboard_from="--tensorboard" if request.tensorboard else settings.origin("tensorboard", request.host),
        private=_private(request, per_host.private),
    )
    from tbctl.tensorboard import check_extra_args, check_private_args

    check_extra_args(up_request.extra_args, network_ok=up_request.network_ok)  # before connecting anywhere
    if up_request.private:
        check_private_args(up_request.extra_args, network_ok=up_request.network_ok)
    wanted_local = parse_port(request.local_port, source="--local-port") if request.local_port is not None else per_host.local_port
    return up_request, wanted_local


def _private(request: ServeRequest, setting: bool) -> bool:
    """--private, else the `private` setting, which applies to remote hosts only: here a browser cannot open
    a unix socket, so the flag is refused (exit 2) and the setting does not apply."""
    if request.host is None:
        if request.private:
            from tbctl.errors import UsageError

            raise UsageError("--private needs --host: a browser cannot open a unix socket on this machine",
                             hint="run it as `tbctl up --host HOST --private`, or leave --private out here")
        return False
    return setting if request.private is None else request.private


def job_request(request: ServeRequest, up_request: UpRequest) -> JobUpRequest:
    from tbctl.core.job_up import JobUpRequest

    return JobUpRequest(job=request.job, job_name=request.job_name, node=request.node, logdir=up_request.logdir,
                        port=up_request.port, timeout=up_request.timeout, wait=request.wait, new=request.new,
                        tensorboard=up_request.tensorboard, env_prefix=up_request.env_prefix,
                        extra_args=up_request.extra_args, bind_node_address=request.bind_node_address,
                        expose_to_network=request.expose_to_network,
                        tensorboard_from=up_request.tensorboard_from, private=up_request.private)


@contextlib.contextmanager
def serve(request: ServeRequest, settings: Settings, hosts: HostOpener, store: StateStore,
          report: ServeReport) -> Iterator[ServeSession]:
    """`up`: TensorBoard serving the logdir on the host, verified ready, and reachable from this machine."""
    up_request, wanted_local = merged_request(request, settings)
    if request.in_job:
        from tbctl.core.job_session import serve_job

        with serve_job(request, job_request(request, up_request), hosts, store, report,
                       wanted_local=wanted_local) as session:
            yield session
        return
    from tbctl.core.up import up
    from tbctl.tensorboard import readiness_path

    with report.busy():
        host = hosts.open(request.host, env_prefix=up_request.env_prefix, connect_timeout=request.connect_timeout)
    with host:
        if request.detach:
            from tbctl.core.forwards import detach_warning

            detach_warning(host)  # a refusal before TensorBoard starts, not after
        with report.busy():  # closed before the URL is announced: the status line must not cover it
            result = up(host, store, up_request, progress=report.progress, notice=report.notice)
        inst = result.instance
        assert inst.port is not None or inst.socket is not None
        remote_port = inst.port or 0  # 0: a private instance, reached through its socket
        stop_after = not (result.reused or request.keep)
        exposure = None
        try:
            if request.detach and not host.reachable_here:
                from tbctl.core.forwards import detach_forward

                detached = detach_forward(host, hosts.local(), store, backend=hosts.backend(request.host),
                                          remote_port=remote_port, local_port=wanted_local, instance=inst,
                                          stop_instance=stop_after, check_path=readiness_path(inst.path_prefix),
                                          connect_timeout=request.connect_timeout, env_prefix=up_request.env_prefix,
                                          remote_socket=inst.socket)
                forward_port: int | None = detached.local_port
                if detached.reused is not None:
                    report.notice(reusing_note(detached.reused))
                result = with_forward(result, forward_port, detached.warning)
            elif (existing := _reusable_forward(host, store, remote_port, wanted_local, inst.socket)
                  if result.reused else None):
                report.notice(reusing_note(existing))  # the instance's own background forward: no second one
                forward_port = existing.local_port
                result = with_forward(result, forward_port)
            else:
                from tbctl.core.expose import expose

                exposure = expose(host, hosts.local(), remote_port, local_port=wanted_local,
                                  check_path=readiness_path(inst.path_prefix), remote_socket=inst.socket)
                forward_port = exposure.local_port if exposure.forwarder is not None else None
                result = with_forward(result, forward_port)
        except BaseException:
            if stop_after:  # leave nothing behind
                _stop_started(host, store, inst)
            raise
        stops = (lambda: _stop_reporting(host, store, inst, report),) if stop_after else ()
        background = forward_port if exposure is None else None
        with ServeSession(result, host, report, exposure=exposure, background_port=background, stops=stops,
                          catch_hangup=request.catch_hangup) as session:
            yield session


def _reusable_forward(host: Host, store: StateStore, remote_port: int, wanted_local: int | None,
                      remote_socket: str | None = None) -> ForwardInfo | None:
    """A live background forward to this port (or unix socket) of the host, unless another local port was
    asked for."""
    if host.reachable_here and remote_socket is None:
        return None
    from tbctl.core.forwards import live_forward

    existing = live_forward(store, host.name, remote_port, remote_socket)
    return existing if existing is not None and wanted_local in (None, existing.local_port) else None


def reusing_note(forward: ForwardInfo) -> str:
    from tbctl.core.forwards import reusing_note as note

    return note(forward)


def _stop_started(host: Host, store: StateStore, inst: TensorBoardInstance) -> None:
    from tbctl.core.stopping import stop_instances

    stop_instances(host, store, [inst], force=False, timeout=STOP_TIMEOUT)


def _stop_reporting(host: Host, store: StateStore, inst: TensorBoardInstance, report: ServeReport) -> None:
    from tbctl.errors import TbctlError

    try:
        _stop_started(host, store, inst)
    except TbctlError as exc:
        report.not_stopped(host.name, inst, exc.message)
        return
    report.stopped(host.name, inst)


@contextlib.contextmanager
def tunnel(request: TunnelRequest, hosts: HostOpener, store: StateStore, report: ServeReport) -> Iterator[ServeSession]:
    """`tunnel`: a port already listening on the host (something must), reachable from this machine."""
    from tbctl.config import parse_port
    from tbctl.models import browser_url

    port = parse_port(request.remote_port, source="REMOTE_PORT")
    wanted_local = parse_port(request.local_port, source="--local-port") if request.local_port is not None else None
    with report.busy():
        host = hosts.open(request.host, connect_timeout=request.connect_timeout)
    with host:
        exposure = None
        if request.detach:
            from tbctl.core.forwards import detach_forward

            detached = detach_forward(host, hosts.local(), store, backend=hosts.backend(request.host),
                                      remote_port=port, local_port=wanted_local, instance=None, stop_instance=False,
                                      check_path=None, connect_timeout=request.connect_timeout)
            if detached.warning:
                report.warn(detached.warning)
            if detached.reused is not None:
                report.notice(reusing_note(detached.reused))
            local = detached.local_port
        elif (existing := _reusable_forward(host, store, port, wanted_local)) is not None:
            report.notice(reusing_note(existing))
            local = existing.local_port
        else:
            from tbctl.core.expose import expose

            exposure = expose(host, hosts.local(), port, local_port=wanted_local)
            local = exposure.local_port
            if exposure.note:
                report.notice(exposure.note)
        result = TunnelResult(host=host.name, remote_port=port, local_port=local, url=browser_url(local),
                              detached=exposure is None)
        with ServeSession(result, host, report, exposure=exposure,
                          background_port=local if exposure is None else None) as session:
            yield session
