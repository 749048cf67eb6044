"""`tbctl ls`: every TensorBoard here or on hosts, and the health of background forwards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_hosts
from tbctl.cli.options import ConnectTimeoutOption, JsonOption, command_env, verb_app
from tbctl.cli.hosts import reach, flush_warnings, store_of

verb = verb_app()


@verb.command("ls")
def ls(
    ctx: typer.Context,
    hosts: Annotated[Optional[list[str]], typer.Option("--host", "-H", metavar="HOST", help="List on these SSH hosts (repeatable) instead of here.", autocompletion=complete_hosts)] = None,
    all_hosts: Annotated[bool, typer.Option("--all-hosts", help="Here and every host in the config file or tbctl's records, in parallel.")] = False,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """List every TensorBoard on the machine (or hosts), ours or not, with its URL and status, and the
    health of background forwards and pulls."""
    from tbctl.core.listing import hosts_to_list, list_hosts

    env = command_env(ctx, json_output)
    store = store_of(env)
    specs = hosts_to_list(hosts or [], all_hosts=all_hosts, settings=env.settings, store=store)
    listing = list_hosts(specs, reach(env), store, connect_timeout=connect_timeout)
    from tbctl.core.pull import list_pulls

    pulls = list_pulls(store)
    flush_warnings(env, store)
    if env.json:
        render.print_json(env, {"instances": listing.instances, "forwards": listing.forwards, "errors": listing.errors,
                                "pulls": pulls})
    if listing.failure is not None:  # after its JSON, said as any error is (one line, exit code)
        raise listing.failure
    if not env.json:
        render.instances_table(env, listing.instances, errors=listing.errors, show_host=listing.elsewhere)
        render.forwards_table(env, listing.forwards)
        render.pulls_table(env, pulls)


command = typer.main.get_command(verb)
