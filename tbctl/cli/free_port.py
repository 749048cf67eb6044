"""`tbctl free-port`: who holds a port; confirm; stop them; verify it is free."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from tbctl.cli import render
from tbctl.cli.environment import Environment
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, StopTimeoutOption, command_env, verb_app
from tbctl.cli.hosts import reach
from tbctl.errors import PortBusy

if TYPE_CHECKING:
    from tbctl.models import PortHolder, PortReport

verb = verb_app()


@verb.command("free-port")
def free_port(
    ctx: typer.Context,
    port: Annotated[str, typer.Argument(metavar="PORT", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before stopping a process.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show who holds the port.")] = False,
    host_spec: HostOption = None,
    timeout: StopTimeoutOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Free PORT: show who LISTENs on it, confirm, SIGTERM then SIGKILL, and verify it is free."""
    from tbctl.config import parse_port
    from tbctl.core import free_port as core

    env = command_env(ctx, json_output)
    number = parse_port(port)
    with reach(env).open(host_spec, connect_timeout=connect_timeout) as host:
        report = core.inspect(host, number)
        summary = core.summary(report, dry_run=dry_run)
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
        asking = core.to_confirm(report)
        if asking and not yes:
            _confirm(env, report, asking)
        result = core.free(host, report, force=force, timeout=timeout, settings=env.settings)
    if env.json:
        render.print_json(env, core.summary(report, dry_run=dry_run, result=result))
    else:
        render.free_port_result(env, result)
    core.require_freed(result)


def _confirm(env: Environment, report: PortReport, asking: Sequence[PortHolder]) -> None:
    """Ask on the terminal (none: refuse) whether to stop them; anything but yes keeps them running."""
    from tbctl.core.free_port import asked_pids, refuse_unconfirmed

    if not env.stdin_isatty:
        refuse_unconfirmed(report, asking)
    pids = asked_pids(asking)
    env.stderr.write(f"stop pid {pids}? [y/N] ")
    env.stderr.flush()
    answer = env.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise PortBusy(report.port, report.holders, f"left pid {pids} running; port {report.port} is still held")


command = typer.main.get_command(verb)
