"""`tbctl up`: serve a logdir with TensorBoard, here or on an SSH host, forwarded to this machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tbctl.cli import render
from tbctl.cli.environment import Environment
from tbctl.cli.options import ConnectTimeoutOption, EnvOption, HostOption, JsonOption, TimeoutOption, command_env, verb_app
from tbctl.cli.session import flush_warnings, interrupt_on_hangup, local_host, open_host, open_in_browser, store_of
from tbctl.errors import TbctlError, UsageError

if TYPE_CHECKING:
    from tbctl.core.expose import Exposure
    from tbctl.hosts.base import Host
    from tbctl.models import TensorBoardInstance
    from tbctl.state import StateStore

verb = verb_app()


def _split_logdir_and_extra(positional: list[str], logdir_option: str | None) -> tuple[str | None, list[str]]:
    """`up [LOGDIR] [-- TENSORBOARD FLAGS]`: click hands us everything positional after `--` too, so the
    LOGDIR is the first word before any flag-looking word."""
    words = list(positional)
    logdir = logdir_option
    if words and not words[0].startswith("-"):
        if logdir is not None:
            raise UsageError(f"two logdirs given: {logdir!r} and {words[0]!r}")
        logdir = words.pop(0)
    return logdir, words


@verb.command()
def up(
    ctx: typer.Context,
    args: Annotated[Optional[list[str]], typer.Argument(metavar="[LOGDIR] [-- TENSORBOARD_FLAGS...]", show_default=False)] = None,
    logdir_option: Annotated[Optional[str], typer.Option("--logdir", help="The logdir (default: runs).")] = None,
    port: Annotated[Optional[str], typer.Option("--port", "-p", help="Preferred port (default 6006; the next free one if taken).")] = None,
    host_spec: HostOption = None,
    local_port: Annotated[Optional[str], typer.Option("--local-port", help="Remote: the local end of the forward (default port+10000).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Remote: leave TensorBoard running when the forward closes.")] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Remote: forward in the background and return; `tbctl down` ends it.")] = False,
    timeout: TimeoutOption = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the URL in a browser.")] = False,
    new: Annotated[bool, typer.Option("--new", help="Start another instance even if one serves this logdir.")] = False,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", help="Path of the tensorboard executable.")] = None,
    env_prefix: EnvOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    job: Annotated[Optional[str], typer.Option("--job", help="Slurm: serve from inside this running job (ID or ARRAY_TASK), on its node.")] = None,
    job_name: Annotated[Optional[str], typer.Option("--job-name", help="Slurm: your newest running job of this name.")] = None,
    node: Annotated[Optional[str], typer.Option("--node", help="Slurm: which node of a multi-node job (default: its batch host).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Slurm: wait for a pending job to start.")] = False,
    bind_node_address: Annotated[bool, typer.Option("--bind-node-address", help="Slurm, where ssh to compute nodes is refused: bind the node's cluster address (everyone on that network can reach it) and forward from the login node.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Serve LOGDIR with TensorBoard on a free port, verified ready; reuse one already serving it.

    With --host, TensorBoard runs on that machine and is forwarded to localhost:PORT+10000 until Ctrl-C
    (or, with --detach, by a background tbctl process until `tbctl down`). With --job (or --job-name),
    --host is the Slurm login node: TensorBoard runs as a step of that job on its node, forwarded through
    the login node; a relative LOGDIR is relative to the job's WorkDir."""
    from tbctl.config import parse_port
    from tbctl.core.up import UpRequest, up as run_up
    from tbctl.tensorboard import readiness_path

    env = command_env(ctx, json_output)
    logdir, extra = _split_logdir_and_extra(args or [], logdir_option)
    settings = env.settings
    per_host = settings.for_host(host_spec)  # flags win over the host's section of the config file
    env_prefix = env_prefix or per_host.env_prefix
    request = UpRequest(
        logdir=logdir or per_host.logdir or settings.default_logdir,
        port=parse_port(port, source="--port") if port is not None else (per_host.port or settings.default_port),
        timeout=timeout or settings.start_timeout,
        new=new,
        tensorboard=tensorboard or per_host.tensorboard,
        env_prefix=env_prefix,
        extra_args=per_host.extra_args + tuple(extra),
    )
    wanted_local = parse_port(local_port, source="--local-port") if local_port is not None else per_host.local_port
    store = store_of(env)
    if job is not None or job_name is not None or node is not None or wait or bind_node_address:
        from tbctl.core.job_up import JobUpRequest

        job_request = JobUpRequest(job=job, job_name=job_name, node=node, logdir=request.logdir, port=request.port,
                                   timeout=request.timeout, wait=wait, new=new, tensorboard=request.tensorboard,
                                   env_prefix=env_prefix, extra_args=request.extra_args,
                                   bind_node_address=bind_node_address)
        from tbctl.cli.up_job import up_job

        up_job(env, host_spec, store, job_request, wanted_local=wanted_local, keep=keep, detach=detach,
               open_browser=open_browser, connect_timeout=connect_timeout)
        return
    with env.status():
        host = open_host(env, host_spec, env_prefix=env_prefix, connect_timeout=connect_timeout)
    with host:
        if detach:
            from tbctl.core.forwards import detach_warning

            detach_warning(host)  # a refusal before TensorBoard starts, not after
        with env.status():  # closed before the URL is announced: the status line must not cover it
            result = run_up(host, store, request, progress=env.progress, notice=env.notice)
        inst = result.instance
        assert inst.port is not None
        stop_after = not (result.reused or keep)
        exposure = None
        try:
            if detach and not host.reachable_here:
                from tbctl.cli.session import ssh_backend
                from tbctl.core.forwards import detach_forward

                detached = detach_forward(host, local_host(env), store, backend=ssh_backend(env, host_spec).name,
                                          remote_port=inst.port, local_port=wanted_local, instance=inst,
                                          stop_instance=stop_after, check_path=readiness_path(inst.path_prefix),
                                          connect_timeout=connect_timeout, env_prefix=env_prefix)
                forward_port = detached.local_port
                result = dataclasses.replace(result, warnings=(*result.warnings, *filter(None, [detached.warning])))
            else:
                from tbctl.core.expose import expose

                exposure = expose(host, local_host(env), inst.port, local_port=wanted_local,
                                  check_path=readiness_path(inst.path_prefix))
                forward_port = exposure.local_port if exposure.forwarder is not None else None
        except BaseException:
            if stop_after:  # leave nothing behind
                _stop_started(host, store, inst)
            raise
        if forward_port is not None:
            inst = dataclasses.replace(inst, forward_port=forward_port)
            result = dataclasses.replace(result, instance=inst, url=inst.url or result.url)

        announce = _announcer(env, store, result, open_browser=open_browser)
        if exposure is None or exposure.forwarder is None:
            announce()
            if forward_port is not None:
                env.info(f"forwarding in the background; `tbctl down {forward_port}` ends it")
        else:
            _hold_then_clean(env, host, store, exposure, inst, stop_after=stop_after, announce=announce)


def _announcer(env: Environment, store: StateStore, result: Any, *, open_browser: bool) -> Callable[[], None]:
    """What `up` prints once the URL answers (warnings, then the record), and the browser it opens."""

    def announce() -> None:
        flush_warnings(env, store)
        for warning in result.warnings:
            env.warn(warning)
        if env.json:
            render.print_json(env, result)
        else:
            render.up_result(env, result)
        env.stdout.flush()
        if open_browser:
            open_in_browser(env, result.url)

    return announce


def _stop_started(host: Host, store: StateStore, inst: TensorBoardInstance) -> None:
    from tbctl.core.down import stop_instances

    stop_instances(host, store, [inst], force=False, timeout=5.0)


def _hold_then_clean(env: Environment, host: Host, store: StateStore, exposure: Exposure,
                     inst: TensorBoardInstance | None, *, stop_after: bool, announce: Callable[[], None],
                     stop: Callable[[], None] | None = None, ended: Callable[[], str] | None = None) -> None:
    """Foreground: announce the URL, forward until Ctrl-C (or SIGTERM/SIGHUP), then close the forward and,
    when this command started it, stop TensorBoard. Exits 0: the user ended it on purpose."""
    from tbctl.core.expose import hold

    def on_change(state: Any) -> None:
        detail = f" (attempt {state.attempts})" if state.attempts else ""
        reason = f": {state.error}" if state.error and state.state != "up" else ""
        env.info(f"connection to {host.name}: {state.state}{detail}{reason}")

    host.watch_connection(on_change)
    try:
        with interrupt_on_hangup():
            announce()  # inside: a Ctrl-C right after the URL appears must still clean up
            env.info("forwarding; press Ctrl-C to stop" + (" (TensorBoard stops too)" if stop_after or stop else ""))
            why = hold(exposure, is_alive=host.connection_ok, ended=ended)
            if why:
                env.info(why)
    except KeyboardInterrupt:
        pass
    finally:
        exposure.close()
        if stop is not None:
            stop()
        if stop_after and inst is not None:
            try:
                _stop_started(host, store, inst)
                env.info(f"stopped TensorBoard pid {inst.pid} on {host.name}")
            except TbctlError as exc:
                env.warn(f"could not stop TensorBoard pid {inst.pid} on {host.name}: {exc.message}")
    env.info("forward closed")


command = typer.main.get_command(verb)
