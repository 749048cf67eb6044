"""`tbctl _forwarder`: the background process that keeps detached forwards to one host."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tbctl.cli.options import ConnectTimeoutOption, EnvOption, command_env, verb_app
from tbctl.cli.hosts import store_of

verb = verb_app()


@verb.command("_forwarder", hidden=True)
def forwarder_process(ctx: typer.Context, host_spec: Annotated[str, typer.Argument(metavar="HOST")],
                      connect_timeout: ConnectTimeoutOption = None, env_prefix: EnvOption = None,
                      jump: Annotated[Optional[str], typer.Option("--jump", metavar="HOST")] = None) -> int:
    """The background forwarder for HOST (started by --detach; not for direct use)."""
    from tbctl import daemon
    from tbctl.cli.hosts import ssh_reach
    from tbctl.hosts.host_spec import jumped_name

    env = command_env(ctx, False)
    name = jumped_name(jump, host_spec) if jump else host_spec
    hosts = ssh_reach(env)
    # its exit status is the command's: the root group exits with what a command returns
    return daemon.serve(name, store_of(env), lambda: hosts.unconnected(
        host_spec, env_prefix=env_prefix, connect_timeout=connect_timeout, jump=jump),
        backend=hosts.backend(host_spec))


command = typer.main.get_command(verb)
