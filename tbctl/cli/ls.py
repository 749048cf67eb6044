"""`tbctl ls`: every TensorBoard here or on hosts, and the health of background forwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_hosts
from tbctl.cli.environment import Environment
from tbctl.cli.options import ConnectTimeoutOption, JsonOption, command_env, verb_app
from tbctl.cli.session import flush_warnings, open_host, store_of

if TYPE_CHECKING:
    from tbctl.state import StateStore

verb = verb_app()


@verb.command("ls")
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
    flush_warnings(env, store)
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
        if rec["host"] != LOCAL_HOST_NAME and rec["host"] not in names:
            names.append(rec["host"])
    return names


command = typer.main.get_command(verb)
