"""What every command module shares: its option types, its Typer, and the environment it runs with.

Command modules import this, never `tbctl.cli.app`: the root group finds them by name (its table), so
the root imports no command and no command imports the root."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from tbctl.cli.completion import complete_hosts
from tbctl.cli.environment import Environment
from tbctl.hosts.ssh_config import DEFAULT_CONNECT_TIMEOUT

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else there.")]
HostOption = Annotated[Optional[str], typer.Option(
    "--host", "-H", help="On this SSH host (ssh_config alias or [user@]host[:port]).", autocompletion=complete_hosts)]
ConnectTimeoutOption = Annotated[Optional[float], typer.Option(
    "--connect-timeout", min=0.1, help=f"Seconds to wait for SSH to connect (default {DEFAULT_CONNECT_TIMEOUT:g}).")]
TimeoutOption = Annotated[Optional[float], typer.Option("--timeout", min=0.1, help="Seconds to wait before escalating or giving up.")]
EnvOption = Annotated[Optional[str], typer.Option("--env", help="Remote: a venv or conda prefix to take python and tensorboard from.")]

# The settings of tbctl's own Typer, which each command's Typer shares so its help reads the same.
TYPER_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}


def verb_app(**settings: Any) -> typer.Typer:
    """The Typer of one command (or one group of subcommands); its click command is what the root lists."""
    return typer.Typer(**TYPER_SETTINGS, **settings)


def env_of(ctx: Any) -> Environment:
    """The environment the root command put in its context (a fresh one when there is none)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Environment) else Environment()


def command_env(ctx: typer.Context, json_output: bool) -> Environment:
    """The injected environment of this command; a command's own `--json` counts like the global one."""
    env = env_of(ctx)
    if json_output:
        env.json = True
    return env
