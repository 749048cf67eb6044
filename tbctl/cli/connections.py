"""`tbctl connections` and `tbctl disconnect`: the SSH connections tbctl keeps open between commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.options import JsonOption, command_env, verb_app
from tbctl.cli.completion import complete_hosts

connections_app = verb_app()
disconnect_app = verb_app()


@connections_app.command("connections")
def connections(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the SSH connections (ControlMasters) tbctl keeps open so the next command needs no new login."""
    from tbctl.core.connections import list_kept

    env = command_env(ctx, json_output)
    kept = list_kept(env.settings.state_dir)
    if env.json:
        render.print_json(env, {"connections": kept})
        return
    if not kept:
        env.info("tbctl keeps no SSH connection open")
        return
    now = env.clock()
    render.table(env, ["host", "pid", "up", "idle-close", "socket"],
                 [[c.host, str(c.pid or "-"), render.human_duration(now - c.created_at),
                   render.human_duration(c.persist) if c.persist >= 1 else "with the command", c.control_path]
                  for c in kept])


@disconnect_app.command("disconnect")
def disconnect(
    ctx: typer.Context,
    host_spec: Annotated[Optional[str], typer.Argument(metavar="[HOST]", show_default=False,
                                                       autocompletion=complete_hosts)] = None,
    all_hosts: Annotated[bool, typer.Option("--all", help="Every connection tbctl keeps.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Close tbctl's SSH connection to HOST (or --all of them); a ControlMaster of your own is never touched.
    Forwards riding it close too."""
    from tbctl.core.connections import close
    from tbctl.errors import UsageError

    env = command_env(ctx, json_output)
    if (host_spec is None) == (not all_hosts):
        raise UsageError("name a HOST or pass --all", hint="`tbctl connections` lists them")
    closed = close(env.settings.state_dir, host_spec)
    if env.json:
        render.print_json(env, {"connections": closed})
        return
    for conn in closed:
        env.result_line(f"closed the SSH connection to {conn.host} (pid {conn.pid or '-'})")
    if not closed:
        env.info("tbctl keeps no SSH connection open")


connections_command = typer.main.get_command(connections_app)
disconnect_command = typer.main.get_command(disconnect_app)
