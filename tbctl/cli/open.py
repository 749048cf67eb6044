"""`tbctl open`: a running TensorBoard in the browser."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_targets
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, command_env, verb_app
from tbctl.cli.browser import open_in_browser
from tbctl.cli.hosts import connect, store_of
from tbctl.cli.visible import visible

verb = verb_app()


@verb.command("open")
def open_url(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[PORT|PID|LOGDIR]", show_default=False, autocompletion=complete_targets)] = None,
    host_spec: HostOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Open a running TensorBoard in the browser (the only one, or TARGET); print its URL when there is no
    browser. A remote one opens through its forward (`tbctl up --host H --detach` or `tbctl tunnel`); the
    local port of a forward names it too."""
    from tbctl.core.open_target import find_target

    env = command_env(ctx, json_output)
    chosen = find_target(store_of(env), target, host_spec,
                         connect=lambda: connect(env, host_spec, connect_timeout=connect_timeout))
    if env.json:
        render.print_json(env, {"url": chosen.url, "opened": env.browser(chosen.url), "host": chosen.host,
                                "pid": chosen.pid, "port": chosen.port, "logdir": chosen.logdir})
        return
    env.stdout.write(visible(chosen.url) + "\n")
    open_in_browser(env, chosen.url)


command = typer.main.get_command(verb)
