"""`tbctl tunnel`: forward to a port already listening on an SSH host."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_hosts
from tbctl.cli.options import ConnectTimeoutOption, JsonOption, command_env, verb_app
from tbctl.cli.browser import OpenOption, open_in_browser, opens_browser
from tbctl.cli.hosts import reach, store_of
from tbctl.cli.narrator import SessionNarrator
from tbctl.cli.visible import visible

verb = verb_app()


@verb.command()
def tunnel(
    ctx: typer.Context,
    host_spec: Annotated[str, typer.Argument(metavar="HOST", help="ssh_config alias or [user@]host[:port].", autocompletion=complete_hosts)],
    remote_port: Annotated[str, typer.Argument(metavar="REMOTE_PORT")],
    local_port: Annotated[Optional[str], typer.Option("--local-port", metavar="PORT", help="Local end (default REMOTE_PORT+10000).")] = None,
    connect_timeout: ConnectTimeoutOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Forward in the background and return; `tbctl down LOCAL_PORT` ends it.")] = False,
    open_browser: OpenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Forward localhost to a port already listening on HOST (`ssh -L 16008:127.0.0.1:6008 HOST`), until Ctrl-C."""
    from tbctl.core.serve import TunnelRequest, tunnel as open_tunnel

    env = command_env(ctx, json_output)
    request = TunnelRequest(host=host_spec, remote_port=remote_port, local_port=local_port,
                            connect_timeout=connect_timeout, detach=detach)
    with open_tunnel(request, reach(env), store_of(env), SessionNarrator(env)) as session:
        result = session.result
        if env.json:
            render.print_json(env, result)
        else:
            env.info(f"{result.host}:{result.remote_port} → 127.0.0.1:{result.local_port}")
            env.stdout.write(visible(result.url) + "\n")
        env.stdout.flush()
        if opens_browser(open_browser, env.settings, host_spec):
            open_in_browser(env, result.url)
        if session.background_port is not None:
            env.info(f"forwarding in the background; `tbctl down {session.background_port}` ends it")
        session.hold()


command = typer.main.get_command(verb)
