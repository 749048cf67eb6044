"""`tbctl tunnel`: forward to a port already listening on an SSH host."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_hosts
from tbctl.cli.options import ConnectTimeoutOption, JsonOption, command_env, verb_app
from tbctl.cli.session import local_host, open_host, open_in_browser, store_of
from tbctl.cli.up import _hold_then_clean

verb = verb_app()


@verb.command()
def tunnel(
    ctx: typer.Context,
    host_spec: Annotated[str, typer.Argument(metavar="HOST", help="ssh_config alias or [user@]host[:port].", autocompletion=complete_hosts)],
    remote_port: Annotated[str, typer.Argument(metavar="REMOTE_PORT")],
    local_port: Annotated[Optional[str], typer.Option("--local-port", help="Local end (default REMOTE_PORT+10000).")] = None,
    connect_timeout: ConnectTimeoutOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Forward in the background and return; `tbctl down LOCAL_PORT` ends it.")] = False,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the URL in a browser.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Forward localhost to a port already listening on HOST (`ssh -L 16008:127.0.0.1:6008 HOST`), until Ctrl-C."""
    from tbctl.config import parse_port
    from tbctl.core.expose import expose

    env = command_env(ctx, json_output)
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
        url = f"http://127.0.0.1:{local}/"

        def announce() -> None:
            if env.json:
                render.print_json(env, {"host": host.name, "remote_port": port, "local_port": local, "url": url,
                                        "detached": detach})
            else:
                env.info(f"{host.name}:{port} → 127.0.0.1:{local}")
                env.stdout.write(url + "\n")
            env.stdout.flush()
            if open_browser:
                open_in_browser(env, url)

        if exposure is None:
            announce()
            env.info(f"forwarding in the background; `tbctl down {local}` ends it")
        else:
            _hold_then_clean(env, host, store, exposure, None, stop_after=False, announce=announce)


command = typer.main.get_command(verb)
