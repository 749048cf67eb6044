"""The command line: parse, call core, render. The one place errors become messages and exit codes."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from tbctl import __version__
from tbctl.cli.completion import complete_hosts
from tbctl.cli.environment import Environment
from tbctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, TbctlError, TensorBoardFailed

# typer vendors click; its UsageError is the base of typer.BadParameter (found without a private import).
ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class TbctlGroup(TyperGroup):
    """Maps every error to one line, a hint and a documented exit code; `--debug` adds the traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TbctlError as exc:
            env = _env_of(ctx)
            if env.debug:
                traceback.print_exc(file=env.stderr)
            env.error(exc.message, exc.hint)
            if isinstance(exc, TensorBoardFailed) and exc.log_tail:
                env.stderr.write(f"last lines of {exc.log_path}:\n")
                env.stderr.write("".join(f"  | {line}\n" for line in exc.log_tail.splitlines()))
            raise typer.Exit(exc.exit_code) from None
        except ClickUsageError as exc:  # a subcommand's arguments: one line and a hint, like ours
            sub = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "tbctl"
            _env_of(ctx).error(exc.format_message(), f"see '{sub} -h'")
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            _env_of(ctx).stderr.write("\ninterrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug in tbctl, not a user error: one line unless --debug
            if getattr(exc, "__module__", "").startswith(("click", "typer")):
                raise
            env = _env_of(ctx)
            if env.debug:
                traceback.print_exc(file=env.stderr)
            env.error(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
            raise typer.Exit(EXIT_ERROR) from None


def _env_of(ctx: Any) -> Environment:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Environment) else Environment()


app = typer.Typer(
    cls=TbctlGroup,
    name="tbctl",
    help="Start, find, forward and stop TensorBoard — locally and over SSH — and clean up after yourself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else there.")]
HostOption = Annotated[Optional[str], typer.Option(
    "--host", "-H", help="On this SSH host (ssh_config alias or [user@]host[:port]).", autocompletion=complete_hosts)]
ConnectTimeoutOption = Annotated[Optional[float], typer.Option(
    "--connect-timeout", min=0.1, help="Seconds to wait for SSH to connect (default 10).")]


def command_env(ctx: typer.Context, json_output: bool) -> Environment:
    """The injected environment of this command; a command's own `--json` counts like the global one."""
    env = _env_of(ctx)
    if json_output:
        env.json = True
    return env


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tbctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    json_output: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
    ssh: Annotated[Optional[str], typer.Option(
        "--ssh", metavar="openssh|paramiko",
        help="SSH client for remote hosts: the system's OpenSSH (default where it can multiplex) or tbctl's own.")] = None,
) -> None:
    env = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    env.json, env.quiet, env.debug = env.json or json_output, env.quiet or quiet, env.debug or debug
    env.ssh = env.ssh or ssh
    ctx.obj = env


from tbctl.cli import commands as _commands  # noqa: E402,F401  (registers the commands on `app`)
from tbctl.cli import extra_commands as _extra_commands  # noqa: E402,F401
from tbctl.cli import connections as _connections  # noqa: E402,F401


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register_only_the_invoked_command(app, sys.argv[1:] if argv is None else argv)
    app(args=argv, prog_name="tbctl")


def _register_only_the_invoked_command(typer_app: typer.Typer, args: list[str]) -> None:
    """typer builds a click command for every subcommand on each start (20-30 ms here); a run invokes at
    most one. Keep just that one when the first word that is not an option names it (global options take
    no values). `tbctl`, `tbctl --help`, an unknown name and TAB completion keep them all."""
    import os

    from tbctl.cli.completion import COMPLETE_VAR

    name = next((a for a in args if not a.startswith("-")), None)
    if name is None or COMPLETE_VAR in os.environ:
        return
    from typer.main import get_command_name

    commands = [c for c in typer_app.registered_commands
                if (c.name or (c.callback and get_command_name(c.callback.__name__))) == name]
    groups = [g for g in typer_app.registered_groups
              if name in (g.name, g.typer_instance.info.name if g.typer_instance else None)]
    if commands or groups:
        typer_app.registered_commands, typer_app.registered_groups = commands, groups
