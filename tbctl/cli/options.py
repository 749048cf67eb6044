"""What every command module shares: its option types, its Typer, and the environment it runs with.

Command modules import this, never `tbctl.cli.app`: the root group finds them by name (its table), so
the root imports no command and no command imports the root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from tbctl.cli.completion import complete_hosts
from tbctl.cli.environment import Environment
from tbctl.config import DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT
from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT

SHORTEST_WAIT = 0.1  # seconds: a shorter --timeout could not even see a process exit


def _seconds(value: float | None) -> float | None:
    """Checked here rather than with click's `min=`, which prints `<float range> [x>=0.1]` in the help."""
    if value is not None and value < SHORTEST_WAIT:
        raise typer.BadParameter(f"{value:g} is too short: give at least {SHORTEST_WAIT:g} seconds")
    return value


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else there.")]
HostOption = Annotated[Optional[str], typer.Option(
    "--host", "-H", metavar="HOST", help="On this SSH host (ssh_config alias or [user@]host[:port]).",
    autocompletion=complete_hosts)]
ConnectTimeoutOption = Annotated[Optional[float], typer.Option(
    "--connect-timeout", metavar="SECONDS", callback=_seconds,
    help=f"Seconds to wait for SSH to connect (default {DEFAULT_CONNECT_TIMEOUT:g}).")]
StartTimeoutOption = Annotated[Optional[float], typer.Option(
    "--timeout", metavar="SECONDS", callback=_seconds,
    help=f"Seconds to wait for TensorBoard to answer (default {DEFAULT_START_TIMEOUT:g}, or `timeout` in the config file).")]
StopTimeoutOption = Annotated[Optional[float], typer.Option(
    "--timeout", metavar="SECONDS", callback=_seconds,
    help=f"Seconds to wait after SIGTERM before SIGKILL (default {DEFAULT_STOP_TIMEOUT:g}, or `stop_timeout` in the config file).")]
EnvOption = Annotated[Optional[str], typer.Option(
    "--env", metavar="PREFIX", help="Remote: a venv or conda prefix to take python and tensorboard from.")]

# The settings of tbctl's own Typer, which each command's Typer shares so its help reads the same.
TYPER_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}


class TbctlCommand(TyperCommand):
    """A command whose help reads as tbctl's: a usage line without typer's braces around required
    arguments (`free-port [OPTIONS] PORT`), and the options of `tbctl` itself, which work after the command
    too (`tbctl up -q runs`), listed under "Global options"."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        super().format_options(ctx, formatter)
        root = ctx.find_root()
        if root is ctx:
            return
        own = {name for param in self.params for name in getattr(param, "opts", ())}
        records = [record for param in root.command.params
                   if param.param_type_name == "option" and not set(param.opts) & (own | {"--version", "--help"})
                   and (record := param.get_help_record(root)) is not None]
        if records:
            with formatter.section("Global options"):
                formatter.write_dl(records)


class VerbTyper(typer.Typer):
    """A Typer whose commands are TbctlCommands."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        kwargs.setdefault("cls", TbctlCommand)
        return super().command(*args, **kwargs)


def verb_app(**settings: Any) -> typer.Typer:
    """The Typer of one command (or one group of subcommands); its click command is what the root lists."""
    return VerbTyper(**TYPER_SETTINGS, **settings)


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
