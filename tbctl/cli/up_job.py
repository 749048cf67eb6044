"""`tbctl up --host LOGIN --job J`: the login node schedules; TensorBoard runs as a step of the job on its
node, reached through the login node as a jump host. Rendering and holding are `up`'s own."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tbctl.cli.up import _announcer, _hold_then_clean
from tbctl.cli.environment import Environment
from tbctl.cli.session import local_host, open_host
from tbctl.errors import TbctlError, UsageError

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.models import TensorBoardInstance
    from tbctl.state import StateStore


def up_job(env: Environment, host_spec: str | None, store: StateStore, request: Any, *, wanted_local: int | None,
            keep: bool, detach: bool, open_browser: bool, connect_timeout: float | None) -> None:
    """`up --job`: the login node (--host) schedules; TensorBoard runs as a job step on the node, reached
    through the login node as a jump host."""
    from tbctl.core.job_up import up_job
    from tbctl.tensorboard import readiness_path

    from tbctl.core.slurm import check_job_id

    if request.job is None and request.job_name is None:
        raise UsageError("--node, --wait and --bind-node-address go with --job or --job-name")
    if request.bind_node_address and detach:
        raise UsageError("--bind-node-address forwards in the foreground only", hint="run it without --detach")
    if request.job is not None:
        check_job_id(request.job)  # before connecting: a typo costs no login
    with env.status():
        login = open_host(env, host_spec, connect_timeout=connect_timeout)
    with login:
        if detach:
            from tbctl.core.forwards import detach_warning

            detach_warning(login)

        def open_node(name: str) -> Host:
            return open_host(env, name, env_prefix=request.env_prefix, connect_timeout=connect_timeout, jump=host_spec)

        with env.status():
            started = up_job(login, open_node, store, request, progress=env.progress, notice=env.notice)
        result, node_host, inst = started.result, started.node_host, started.result.instance
        assert inst.port is not None
        stop_after = not (result.reused or keep)

        def stop_step() -> None:
            from tbctl.core.job_down import end_step

            said = end_step(login, store, inst)
            if said:
                env.warn(f"could not end step {inst.step} of job {inst.job}: {said}")
            else:
                env.info(f"ended step {inst.step} (TensorBoard on {inst.node}); job {inst.job} keeps running")

        exposure = None
        # the fallback serves through the login node's own connection: closed with it, not here
        with contextlib.nullcontext(node_host) if node_host is login else node_host:
            try:
                already = _live_forward(store, node_host.name, inst.port) if detach and result.reused else None
                if already is not None:  # a reused step that a background forward already serves
                    forward_port = already
                elif detach:
                    from tbctl.cli.session import ssh_backend
                    from tbctl.core.forwards import detach_forward

                    detached = detach_forward(node_host, local_host(env), store, backend=ssh_backend(env, host_spec).name,
                                              remote_port=inst.port, local_port=wanted_local, instance=inst,
                                              stop_instance=False, check_path=readiness_path(inst.path_prefix),
                                              connect_timeout=connect_timeout, env_prefix=request.env_prefix,
                                              route=(str(inst.node), str(host_spec)) if host_spec else None)
                    forward_port = detached.local_port
                    result = dataclasses.replace(result, warnings=(*result.warnings, *filter(None, [detached.warning])))
                else:
                    from tbctl.core.expose import expose

                    exposure = expose(node_host, local_host(env), inst.port, local_port=wanted_local,
                                      check_path=readiness_path(inst.path_prefix),
                                      remote_host=inst.bind if request.bind_node_address else "127.0.0.1")
                    forward_port = exposure.local_port if exposure.forwarder is not None else None
            except BaseException:
                if stop_after:
                    stop_step()
                raise
            if forward_port is not None:
                inst = dataclasses.replace(inst, forward_port=forward_port)
                result = dataclasses.replace(result, instance=inst, url=inst.url or result.url)

            announce = _announcer(env, store, result, open_browser=open_browser)
            if exposure is None or exposure.forwarder is None:
                announce()
                if forward_port is not None:
                    env.info(f"forwarding in the background; `tbctl down --job {inst.job} --host {host_spec}` ends it")
            else:
                _hold_then_clean(env, node_host, store, exposure, None, stop_after=False, announce=announce,
                                 stop=stop_step if stop_after else None, ended=_job_watch(login, node_host, inst))


def _job_watch(login: Host, node_host: Host, inst: TensorBoardInstance) -> Callable[[], str]:
    """For the foreground forward of a job step: every few seconds, whether its TensorBoard still runs
    (on the node; through squeue where the node is out of sight), and once it does not, why."""
    from tbctl.core.job_up import step_ended

    last = [time.monotonic()]

    def ended() -> str:
        if time.monotonic() - last[0] < JOB_WATCH_SECONDS:
            return ""
        last[0] = time.monotonic()
        try:
            return step_ended(login, node_host, inst)
        except TbctlError:
            return ""  # the link: the connection watcher reports it

    return ended


JOB_WATCH_SECONDS = 3.0


def _live_forward(store: StateStore, host: str, remote_port: int) -> int | None:
    from tbctl.core.forwards import list_forwards

    return next((f.local_port for f in list_forwards(store) if f.host == host and f.remote_port == remote_port
                 and f.tunnel in ("up", "reconnecting")), None)
