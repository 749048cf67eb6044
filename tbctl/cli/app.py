"""The command line: parse, call core, render. The one place errors become messages and exit codes."""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, Optional

import typer
from typer.core import TyperGroup

from tbctl import __version__
from tbctl.cli.environment import Environment
from tbctl.cli.options import TYPER_SETTINGS, JsonOption, env_of
from tbctl.cli.visible import TAB, visible
from tbctl.errors import ExitCode, TbctlError, TensorBoardFailed

# typer vendors click; its UsageError is the base of typer.BadParameter (found without a private import).
ClickUsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# How alike an unknown option must be to a real one to be suggested. click's own 0.6 calls `--host` a
# near miss of `--bogus` (the shared "--" counts); typos like `--hots` or `--prot` score above 0.8.
SUGGEST_CUTOFF = 0.8

# Every command, by name, and where it is defined ("module:attribute", a click command). Only the command
# a run invokes is imported; `tbctl --help` and TAB import them all. The order is `tbctl --help`'s.
COMMANDS: dict[str, str] = {
    "up": "tbctl.cli.up:command",
    "tunnel": "tbctl.cli.tunnel:command",
    "_forwarder": "tbctl.cli.forwarder:command",
    "ls": "tbctl.cli.ls:command",
    "down": "tbctl.cli.down:command",
    "free-port": "tbctl.cli.free_port:command",
    "logs": "tbctl.cli.logs:command",
    "open": "tbctl.cli.open:command",
    "connections": "tbctl.cli.connections:connections_command",
    "disconnect": "tbctl.cli.connections:disconnect_command",
    "config": "tbctl.cli.config:command",
    "completion": "tbctl.cli.completion_script:command",
}


@dataclass(frozen=True)
class GlobalOption:
    """An option of `tbctl` itself, accepted before the command's name or anywhere after it."""

    names: tuple[str, ...]
    takes_value: bool = False


# Every option of `main()` below, in one place. It is read before click parses anything: to find the
# command's name (so the value of a value-taking option is never taken for it) and to move these options
# from after the command to before it. tests/test_global_options.py checks it against `main()`.
GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(("--json",)),
    GlobalOption(("--quiet", "-q")),
    GlobalOption(("--debug",)),
    GlobalOption(("--version",)),
    GlobalOption(("--ssh",), takes_value=True),
)


def _match_global(arg: str, options: Sequence[GlobalOption]) -> tuple[GlobalOption, bool] | None:
    """The global option `arg` is, and whether its value is attached to it (`--ssh=gpu1`, `-Sgpu1`)."""
    for option in options:
        for name in option.names:
            if arg == name:
                return option, False
            attached = arg.startswith(name + "=") if name.startswith("--") else arg.startswith(name) and arg != name
            if option.takes_value and attached:
                return option, True
    return None


def command_index(args: Sequence[str], *, options: Sequence[GlobalOption] = GLOBAL_OPTIONS) -> int | None:
    """Where the command's name is in `args`: the first word that is neither an option of tbctl itself nor
    the value of one. None when there is no such word (`tbctl`, `tbctl --help`) or a `--` comes first."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return i
        found = _match_global(arg, options)
        i += 2 if found is not None and found[0].takes_value and not found[1] else 1
    return None


def hoist_global_options(root: Any, args: Sequence[str], *,
                         options: Sequence[GlobalOption] = GLOBAL_OPTIONS) -> list[str]:
    """`args` with the global options found after the command's name moved before it, so click, which
    takes a group's options only before its subcommand, sees them where it looks (`tbctl up -q runs`).

    Left where they are: everything after a literal `--` (up hands it to TensorBoard), the value of one
    of the command's own options (`--tensorboard --debug` is a path), and an option the command declares
    itself under the same name (each command has its own `--json`)."""
    start = command_index(args, options=options)
    if start is None:
        return list(args)
    head, kept, moved = list(args[:start]), [args[start]], list[str]()
    command = root.get_command(typer.Context(root), args[start])
    i = start + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            kept.extend(args[i:])
            break
        own = _own_option(command, arg)
        if own is not None:
            takes_value, attached = own
            take = 2 if takes_value and not attached else 1
            kept.extend(args[i:i + take])
            i += take
            continue
        found = _match_global(arg, options)
        if found is not None:
            take = 2 if found[0].takes_value and not found[1] else 1
            if take == 2 and (i + 1 == len(args) or args[i + 1] == "--"):
                # Its value is missing: alone at the front, click says so ("Option '--ssh' requires an
                # argument") instead of taking the command's name for the value.
                return head + moved + [arg]
            moved.extend(args[i:i + take])
            i += take
            continue
        kept.append(arg)
        sub = getattr(command, "commands", None)
        if sub is not None and not arg.startswith("-") and arg in sub:  # `config show`: now show's options
            command = sub[arg]
        i += 1
    return head + moved + kept


def _own_option(command: Any, arg: str) -> tuple[bool, bool] | None:
    """(whether it takes a value, whether the value is attached) when `arg` is an option `command`
    declares itself; None otherwise."""
    for param in getattr(command, "params", ()):
        if param.param_type_name != "option":
            continue
        takes_value = not (param.is_flag or param.count)
        for name in (*param.opts, *param.secondary_opts):
            if arg == name:
                return takes_value, False
            if takes_value and name.startswith("--") and arg.startswith(name + "="):
                return takes_value, True
    return None


class TbctlGroup(TyperGroup):
    """Finds its commands in COMMANDS (click's lazy group: `list_commands` and `get_command`) and maps
    every error to one line, a hint and a documented exit code; `--debug` adds the traceback."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = where.split(":")
        return getattr(importlib.import_module(module), attribute)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except ClickUsageError as exc:
            # typer suggests only among the commands built already, which here is none of them
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if close and "Did you mean" not in exc.message:
                exc.message = exc.message.rstrip(".") + ". Did you mean " + ", ".join(map(repr, close)) + "?"
            raise

    def main(self, args: Sequence[str] | None = None, *pos: Any, **kwargs: Any) -> Any:
        return super().main(hoist_global_options(self, sys.argv[1:] if args is None else args), *pos, **kwargs)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            # `tbctl` alone asks what tbctl does: the help is the answer, not an error. On stdout with exit 0,
            # as gh, docker and pip do (git exits 1), so `tbctl | less` pages it and nothing reads as a failure.
            typer.echo(ctx.get_help())
            ctx.exit(0)
        # tbctl's own options are parsed here, before invoke(): its handler below never sees their errors.
        try:
            return super().parse_args(ctx, args)
        except ClickUsageError as exc:
            _usage_error(ctx, exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            code = super().invoke(ctx)
            if isinstance(code, int) and not isinstance(code, bool) and code:  # a command's own exit status
                raise typer.Exit(code)
            return code
        except TbctlError as exc:
            env = env_of(ctx)
            if env.debug:
                traceback.print_exc(file=env.stderr)
            show_error(env, exc)
            raise typer.Exit(exc.exit_code) from None
        except ClickUsageError as exc:  # a subcommand's arguments: one line and a hint, like ours
            if type(exc).__name__ == "NoArgsIsHelpError":  # `tbctl config` alone: its help, on stdout, exit 2
                typer.echo(exc.format_message())
                raise typer.Exit(ExitCode.USAGE) from None
            _usage_error(ctx, exc)
        except KeyboardInterrupt:
            env_of(ctx).stderr.write("\ninterrupted\n")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug in tbctl, not a user error: one line unless --debug
            if getattr(exc, "__module__", "").startswith(("click", "typer")):
                raise
            env = env_of(ctx)
            if env.debug:
                traceback.print_exc(file=env.stderr)
            env.error(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
            raise typer.Exit(ExitCode.ERROR) from None


def show_error(env: Environment, exc: TbctlError) -> None:
    """A user's error as tbctl prints it: its line, its hint, and the end of TensorBoard's log when it failed."""
    env.error(exc.message, exc.hint)
    if isinstance(exc, TensorBoardFailed) and exc.log_tail:
        env.stderr.write(f"last lines of {visible(str(exc.log_path))}:\n")
        env.stderr.write("".join(f"  | {visible(line, keep=TAB)}\n" for line in exc.log_tail.splitlines()))


def _usage_error(ctx: Any, exc: Any) -> NoReturn:
    """click's usage error as tbctl's: one line, a hint, exit 2."""
    sub = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "tbctl"
    message = exc.format_message()
    if getattr(exc, "possibilities", None) is not None:  # an unknown option: suggest only a near miss
        import difflib

        close = difflib.get_close_matches(exc.option_name, exc.possibilities, n=3, cutoff=SUGGEST_CUTOFF)
        message = exc.message + (f" (did you mean {' or '.join(close)}?)" if close else "")
        if exc.option_name in ("--install-completion", "--show-completion"):  # typer's usual options
            env_of(ctx).error(message, "`tbctl completion bash|zsh|fish|powershell` prints the script")
            raise typer.Exit(ExitCode.USAGE) from None
    env_of(ctx).error(message, f"see '{sub} -h'")
    raise typer.Exit(ExitCode.USAGE) from None


app = typer.Typer(
    **TYPER_SETTINGS,
    cls=TbctlGroup,
    name="tbctl",
    help="Start, find, forward and stop TensorBoard — locally and over SSH — and clean up after yourself.",
    no_args_is_help=True,
)


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


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="tbctl")
