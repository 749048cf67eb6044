"""The commands: parse options, call core, render the records. No decisions of their own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tbctl.cli import render
from tbctl.cli.app import ConnectTimeoutOption, HostOption, JsonOption, app, command_env
from tbctl.cli.completion import complete_hosts, complete_targets
from tbctl.cli.environment import Environment
from tbctl.cli.session import browse, interrupt_on_hangup, local_host, open_host, store_of
from tbctl.errors import PortBusy, TbctlError, UsageError
from tbctl.models import browser_url

if TYPE_CHECKING:
    from tbctl.core.expose import Exposure
    from tbctl.hosts.base import Host
    from tbctl.models import TensorBoardInstance
    from tbctl.state import StateStore

TimeoutOption = Annotated[Optional[float], typer.Option("--timeout", min=0.1, help="Seconds to wait before escalating or giving up.")]
EnvOption = Annotated[Optional[str], typer.Option("--env", help="Remote: a venv or conda prefix to take python and tensorboard from.")]


def _flush_warnings(env: Environment, store: StateStore) -> None:
    for warning in store.warnings:
        env.warn(warning)
    store.warnings.clear()


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


@app.command()
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
    open_browser: Annotated[Optional[bool], typer.Option("--open/--no-open", help="Open the URL in a browser (default: `open` in the config file, else no).")] = None,
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
    env_prefix = env_prefix or per_host.env
    open_browser = per_host.open if open_browser is None else open_browser
    request = UpRequest(
        logdir=logdir or per_host.logdir or settings.logdir,
        port=parse_port(port, source="--port") if port is not None else (per_host.port or settings.port),
        timeout=timeout or settings.timeout,
        new=new,
        tensorboard=tensorboard or per_host.tensorboard,
        env_prefix=env_prefix,
        extra_args=per_host.tensorboard_args + tuple(extra),
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
        _flush_warnings(env, store)
        for warning in result.warnings:
            env.warn(warning)
        if env.json:
            render.print_json(env, result)
        else:
            render.up_result(env, result)
        env.stdout.flush()
        if open_browser:
            _open_browser(env, result.url)

    return announce


def _open_browser(env: Environment, url: str) -> None:
    if not browse(url):
        env.info(f"no browser available; open {url}")


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


@app.command()
def tunnel(
    ctx: typer.Context,
    host_spec: Annotated[str, typer.Argument(metavar="HOST", help="ssh_config alias or [user@]host[:port].", autocompletion=complete_hosts)],
    remote_port: Annotated[str, typer.Argument(metavar="REMOTE_PORT")],
    local_port: Annotated[Optional[str], typer.Option("--local-port", help="Local end (default REMOTE_PORT+10000).")] = None,
    connect_timeout: ConnectTimeoutOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Forward in the background and return; `tbctl down LOCAL_PORT` ends it.")] = False,
    open_browser: Annotated[Optional[bool], typer.Option("--open/--no-open", help="Open the URL in a browser (default: `open` in the config file, else no).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Forward localhost to a port already listening on HOST (`ssh -L 16008:127.0.0.1:6008 HOST`), until Ctrl-C."""
    from tbctl.config import parse_port
    from tbctl.core.expose import expose

    env = command_env(ctx, json_output)
    open_browser = env.settings.for_host(host_spec).open if open_browser is None else open_browser
    port = parse_port(remote_port, source="REMOTE_PORT")
    wanted_local = parse_port(local_port, source="--local-port") if local_port is not None else None
    store = store_of(env)
    with env.status():
        host = open_host(env, host_spec, connect_timeout=connect_timeout)
    with host:
        if detach:
            from tbctl.cli.session import ssh_backend
            from tbctl.core.forwards import detach_forward

            detached = detach_forward(host, local_host(env), store, backend=ssh_backend(env, host_spec).name,
                                      remote_port=port, local_port=wanted_local, instance=None, stop_instance=False,
                                      check_path=None, connect_timeout=connect_timeout)
            if detached.warning:
                env.warn(detached.warning)
            local, exposure = detached.local_port, None
        else:
            exposure = expose(host, local_host(env), port, local_port=wanted_local)
            local = exposure.local_port
            if exposure.note:
                env.notice(exposure.note)
        url = browser_url(local)

        def announce() -> None:
            if env.json:
                render.print_json(env, {"host": host.name, "remote_port": port, "local_port": local, "url": url,
                                        "detached": detach})
            else:
                env.info(f"{host.name}:{port} → 127.0.0.1:{local}")
                env.stdout.write(url + "\n")
            env.stdout.flush()
            if open_browser:
                _open_browser(env, url)

        if exposure is None:
            announce()
            env.info(f"forwarding in the background; `tbctl down {local}` ends it")
        else:
            _hold_then_clean(env, host, store, exposure, None, stop_after=False, announce=announce)


@app.command("_forwarder", hidden=True)
def forwarder_process(ctx: typer.Context, host_spec: Annotated[str, typer.Argument(metavar="HOST")],
                      connect_timeout: ConnectTimeoutOption = None, env_prefix: EnvOption = None,
                      jump: Annotated[Optional[str], typer.Option("--jump")] = None) -> None:
    """The background forwarder for HOST (started by --detach; not for direct use)."""
    from tbctl import daemon
    from tbctl.cli.session import unconnected_host
    from tbctl.hosts.backends import jumped_name

    env = command_env(ctx, False)
    name = jumped_name(jump, host_spec) if jump else host_spec
    raise typer.Exit(daemon.serve(name, store_of(env), lambda: unconnected_host(
        env, host_spec, env_prefix=env_prefix, connect_timeout=connect_timeout, jump=jump)))


@app.command("ls")
def ls(
    ctx: typer.Context,
    hosts: Annotated[Optional[list[str]], typer.Option("--host", "-H", help="List on these SSH hosts (repeatable) instead of here.", autocompletion=complete_hosts)] = None,
    all_hosts: Annotated[bool, typer.Option("--all-hosts", help="Here and every host in the config file or tbctl's records, in parallel.")] = False,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """List every TensorBoard on the machine (or hosts), ours or not, with its URL and status, and the
    health of background forwards."""
    from tbctl.core.forwards import list_forwards
    from tbctl.core.instances import HostError, list_instances, list_many, with_forwards

    env = command_env(ctx, json_output)
    store = store_of(env)
    specs: list[str | None] = list(hosts) if hosts else [None]
    if all_hosts:
        specs = [None, *(h for h in _known_hosts(env, store) if h not in specs)]
    errors: list[HostError] = []
    if len(specs) == 1:  # one host: its failure is the command's (exit code and all)
        with open_host(env, specs[0], connect_timeout=connect_timeout) as host:
            instances = list_instances(host, store)
    else:  # several: in parallel, never prompting, a dead host is a row with its error
        per_host = (connect_timeout or 10.0) + 20.0
        instances, errors = list_many(
            specs, lambda spec: open_host(env, spec, connect_timeout=connect_timeout, interactive=False), store,
            timeout=per_host)
    forwards = list_forwards(store)
    instances = with_forwards(instances, forwards)
    _flush_warnings(env, store)
    if env.json:
        render.print_json(env, {"instances": instances, "forwards": forwards, "errors": errors})
    else:
        render.instances_table(env, instances, errors=errors, show_host=specs != [None])
        render.forwards_table(env, forwards)


def _known_hosts(env: Environment, store: StateStore) -> list[str]:
    """Hosts named in the config file or in tbctl's records (instances started, forwards)."""
    from tbctl.models import LOCAL_HOST_NAME

    names = list(env.settings.hosts)
    for rec in [*store.load(), *store.forwards()]:
        if rec.host != LOCAL_HOST_NAME and rec.host not in names:
            names.append(rec.host)
    return names


@app.command()
def down(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[PORT|PID|LOGDIR]", show_default=False, autocompletion=complete_targets)] = None,
    all_instances: Annotated[bool, typer.Option("--all", help="Stop every TensorBoard of yours.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    host_spec: HostOption = None,
    timeout: TimeoutOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    job: Annotated[Optional[str], typer.Option("--job", help="Slurm: end what tbctl started in this job (with --host LOGIN).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stop TensorBoard gracefully (SIGTERM, then SIGKILL after --timeout); pid-reuse safe.

    Also ends background forwards: `down LOCAL_PORT` ends that forward, `down --host H` every forward to H,
    `down --all` every forward and what it leaves behind; a TensorBoard tbctl started for one stops with it."""
    from tbctl.core.down import FAILED, down_with_forwards

    env = command_env(ctx, json_output)
    store = store_of(env)
    if job is not None:
        from tbctl.core.job_down import down_job

        if target is not None or all_instances:
            raise UsageError("--job names what to end; give no target and no --all with it")
        with open_host(env, host_spec, connect_timeout=connect_timeout) as login:
            outcomes, closed, warnings = down_job(login, store, job)
        for warning in warnings:
            env.warn(warning)
        if env.json:
            render.print_json(env, {"instances": outcomes, "forwards": closed})
        else:
            render.stop_outcomes(env, outcomes, closed_forwards=closed)
        if any(o.outcome in FAILED for o in outcomes):
            raise TbctlError("a step could not be ended")
        return
    result = down_with_forwards(lambda spec: open_host(env, spec, connect_timeout=connect_timeout), store, target,
                                host_spec=host_spec, all_instances=all_instances, force=force,
                                timeout=timeout or env.settings.stop_timeout)
    for warning in result.warnings:
        env.warn(warning)
    _flush_warnings(env, store)
    if env.json:
        render.print_json(env, {"instances": result.outcomes, "forwards": result.closed_forwards})
    else:
        render.stop_outcomes(env, result.outcomes, closed_forwards=result.closed_forwards)
    failed = [o for o in result.outcomes if o.outcome in FAILED]
    if failed:
        raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")


@app.command("free-port")
def free_port(
    ctx: typer.Context,
    port: Annotated[str, typer.Argument(metavar="PORT", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before stopping a process.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show who holds the port.")] = False,
    host_spec: HostOption = None,
    timeout: TimeoutOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Free PORT: show who LISTENs on it, confirm, SIGTERM then SIGKILL, and verify it is free."""
    from tbctl.config import parse_port
    from tbctl.core import free_port as core

    env = command_env(ctx, json_output)
    number = parse_port(port)
    with open_host(env, host_spec, connect_timeout=connect_timeout) as host:
        report = core.inspect(host, number)
        summary: dict[str, Any] = {"port": number, "host": host.name, "holders": report.holders, "outcomes": [],
                                   "freed": not report.holders, "dry_run": dry_run}
        if not env.json:
            render.port_report(env, report)
        if not report.holders or dry_run:
            if env.json:
                render.print_json(env, summary)
            elif not report.holders:
                env.result_line(f"port {number} is free")
            else:
                how = "SIGKILL" if force else "SIGTERM, then SIGKILL if still running"
                env.result_line(f"dry run: would stop the holders with {how}")
            return
        asking = [h for h in report.holders if core.needs_confirmation(report, h) and not core.is_foreign(report, h)]
        if asking and not yes:
            _confirm(env, report, asking)
        result = core.free(host, report, force=force, timeout=timeout or env.settings.stop_timeout)
    if env.json:
        render.print_json(env, summary | {"outcomes": result.outcomes, "freed": result.freed})
    else:
        render.free_port_result(env, result)
    if not result.freed:
        denied = any(o.outcome == "denied" for o in result.outcomes)
        raise PortBusy(number, result.remaining, f"port {number} is still held",
                       hint="a process of another user needs sudo" if denied else None)


def _confirm(env: Environment, report: Any, asking: list[Any]) -> None:
    pids = ", ".join(sorted({str(h.pid) for h in asking}))
    if not env.stdin_isatty:
        raise PortBusy(report.port, report.holders, f"not stopping pid {pids} without confirmation",
                       hint="pass --yes to stop it without asking")
    env.stderr.write(f"stop pid {pids}? [y/N] ")
    env.stderr.flush()
    answer = env.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise PortBusy(report.port, report.holders, f"left pid {pids} running; port {report.port} is still held")
