"""The session of `up --host LOGIN --job J`: the step started (core/job_up.py), forwarded as plain `up`
forwards (core/session.py), watched for the job's end, and ended with the session unless it was reused
or kept."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tbctl.core import slurm
from tbctl.core.job_up import JobUpRequest, up_job
from tbctl.core.session import ServeReport, ServeSession, with_forward
from tbctl.errors import TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.models import TensorBoardInstance
from tbctl.state import StateStore

if TYPE_CHECKING:
    from tbctl.core.host_opener import HostOpener
    from tbctl.core.serve import ServeRequest

JOB_WATCH_SECONDS = 3.0  # how often a foreground forward asks whether its job step still runs


def check_job_flags(request: ServeRequest) -> None:
    """The Slurm flags that make sense together, refused before anything connects."""
    if request.job is None and request.job_name is None:
        raise UsageError("--node, --wait and --bind-node-address go with --job or --job-name")
    if request.bind_node_address and request.private:
        raise UsageError("--bind-node-address and --private contradict each other",
                         hint="--private serves on a unix socket on the node, forwarded through the login node")
    if request.bind_node_address and request.detach:
        raise UsageError("--bind-node-address forwards in the foreground only", hint="run it without --detach")
    if request.job is not None:
        slurm.check_job_id(request.job)  # before connecting: a typo costs no login


@contextlib.contextmanager
def serve_job(request: ServeRequest, job_request: JobUpRequest, hosts: HostOpener, store: StateStore,
              report: ServeReport, *, wanted_local: int | None) -> Iterator[ServeSession]:
    """`serve()` for `up --job`: `request` as given, `job_request` merged with the settings."""
    from tbctl.tensorboard import readiness_path

    check_job_flags(request)
    login_spec = request.host
    with report.busy():
        login = hosts.open(login_spec, connect_timeout=request.connect_timeout)
    with login:
        if request.detach:
            from tbctl.core.forwards import detach_warning

            detach_warning(login)

        def open_node(name: str) -> Host:
            return hosts.open(name, env_prefix=job_request.env_prefix, connect_timeout=request.connect_timeout,
                              jump=login_spec)

        with report.busy():
            started = up_job(login, open_node, store, job_request, progress=report.progress, notice=report.notice)
        result, node_host, inst = started.result, started.node_host, started.result.instance
        assert inst.port is not None or inst.socket is not None
        remote_port = inst.port or 0  # 0: a private step, reached through its socket
        stop_after = not (result.reused or request.keep)

        def stop_step() -> None:
            from tbctl.core.down import end_step

            problem = end_step(login, store, inst)
            if problem:
                report.step_not_ended(inst, problem)
            else:
                report.step_ended(inst)

        exposure = None
        # the fallback serves through the login node's own connection: closed with it, not here
        with contextlib.nullcontext(node_host) if node_host is login else node_host:
            try:
                already = _live_forward(store, node_host.name, remote_port, inst.socket) \
                    if request.detach and result.reused else None
                if already is not None:  # a reused step that a background forward already serves
                    forward_port: int | None = already
                    result = with_forward(result, forward_port)
                elif request.detach:
                    from tbctl.core.forwards import detach_forward

                    detached = detach_forward(node_host, hosts.local(), store, backend=hosts.backend(login_spec),
                                              remote_port=remote_port, remote_socket=inst.socket,
                                              local_port=wanted_local, instance=inst,
                                              stop_instance=False, check_path=readiness_path(inst.path_prefix),
                                              connect_timeout=request.connect_timeout,
                                              env_prefix=job_request.env_prefix,
                                              route=(str(inst.node), str(login_spec)) if login_spec else None)
                    forward_port = detached.local_port
                    result = with_forward(result, forward_port, detached.warning)
                else:
                    from tbctl.core.expose import expose

                    exposure = expose(node_host, hosts.local(), remote_port, local_port=wanted_local,
                                      check_path=readiness_path(inst.path_prefix), remote_socket=inst.socket,
                                      remote_host=inst.bind if request.bind_node_address else "127.0.0.1")
                    forward_port = exposure.local_port if exposure.forwarder is not None else None
                    result = with_forward(result, forward_port)
            except BaseException:
                if stop_after:
                    stop_step()
                raise
            background = forward_port if exposure is None else None
            with ServeSession(result, node_host, report, exposure=exposure, background_port=background,
                              stops=(stop_step,) if stop_after else (),
                              ended=_job_watch(login, node_host, result.instance),
                              catch_hangup=request.catch_hangup) as session:
                yield session


def _job_watch(login: Host, node_host: Host, inst: TensorBoardInstance) -> Callable[[], str]:
    """For the foreground forward of a job step: every few seconds, whether its TensorBoard still runs
    (on the node; through squeue where the node is out of sight), and once it does not, why."""
    last = [time.monotonic()]

    def ended() -> str:
        if time.monotonic() - last[0] < JOB_WATCH_SECONDS:
            return ""
        last[0] = time.monotonic()
        try:
            return slurm.step_ended(login, node_host, inst)
        except TbctlError:
            return ""  # the link: the connection watcher reports it

    return ended


def _live_forward(store: StateStore, host: str, remote_port: int, remote_socket: str | None = None) -> int | None:
    from tbctl.core.forwards import list_forwards

    return next((f.local_port for f in list_forwards(store) if f.host == host and f.remote_port == remote_port
                 and f.remote_socket == remote_socket and f.tunnel in ("up", "reconnecting")), None)
