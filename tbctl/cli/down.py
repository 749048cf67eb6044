"""`tbctl down`: stop TensorBoards and end background forwards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_targets
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, TimeoutOption, command_env, verb_app
from tbctl.cli.session import flush_warnings, open_host, store_of
from tbctl.errors import TbctlError, UsageError

verb = verb_app()


@verb.command()
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
    flush_warnings(env, store)
    if env.json:
        render.print_json(env, {"instances": result.outcomes, "forwards": result.closed_forwards})
    else:
        render.stop_outcomes(env, result.outcomes, closed_forwards=result.closed_forwards)
    failed = [o for o in result.outcomes if o.outcome in FAILED]
    if failed:
        raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")


command = typer.main.get_command(verb)
