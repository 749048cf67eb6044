"""`tbctl down`: stop TensorBoards and end background forwards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_targets
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, StopTimeoutOption, command_env, verb_app
from tbctl.cli.hosts import flush_warnings, reach, store_of

verb = verb_app()


@verb.command()
def down(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[PORT|PID|LOGDIR]", show_default=False, autocompletion=complete_targets)] = None,
    all_instances: Annotated[bool, typer.Option("--all", help="Stop every TensorBoard of yours.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    host_spec: HostOption = None,
    timeout: StopTimeoutOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    job: Annotated[Optional[str], typer.Option("--job", metavar="JOB", help="Slurm: end what tbctl started in this job (with --host LOGIN).")] = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the mirrors of pulls (`up --pull`) that no longer run; alone, only that.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Stop TensorBoard gracefully (SIGTERM, then SIGKILL after --timeout); pid-reuse safe.

    Also ends background forwards: `down LOCAL_PORT` ends that forward, `down --host H` every forward to H,
    `down --all` every forward and what it leaves behind; a TensorBoard tbctl started for one stops with it.
    A pull (`up --pull`) ends with its TensorBoard; its mirror stays until `down --purge`."""
    from tbctl.core.down import end, require_ended

    env = command_env(ctx, json_output)
    store = store_of(env)
    ended = end(reach(env), env.settings, store, target, host_spec=host_spec, all_instances=all_instances, force=force,
                timeout=timeout, connect_timeout=connect_timeout, job=job, purge=purge)
    for warning in ended.warnings:
        env.warn(warning)
    flush_warnings(env, store)
    if env.json:
        render.print_json(env, {"instances": ended.outcomes, "forwards": ended.closed_forwards,
                                "pulls": ended.pulls, "purged": ended.purged})
    else:
        render.stop_outcomes(env, ended.outcomes, closed_forwards=ended.closed_forwards,
                             quiet_if_empty=bool(ended.pulls or ended.purged))
        render.pulls_ended(env, ended.pulls, ended.purged)
    require_ended(ended)


command = typer.main.get_command(verb)
