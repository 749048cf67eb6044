"""The command line: parse, call core, render. The one place errors become messages and exit codes."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from tbctl import __version__
from tbctl.cli import render
from tbctl.cli.environment import Environment
from tbctl.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PortBusy,
    TbctlError,
    TensorBoardFailed,
    UsageError,
)

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.state import StateStore


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
TimeoutOption = Annotated[Optional[float], typer.Option("--timeout", min=0.1, help="Seconds to wait before escalating or giving up.")]


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
) -> None:
    env = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    env.json, env.quiet, env.debug = env.json or json_output, env.quiet or quiet, env.debug or debug
    ctx.obj = env


def _command_env(ctx: typer.Context, json_output: bool) -> Environment:
    env = _env_of(ctx)
    if json_output:
        env.json = True
    return env


def _local(env: Environment) -> tuple[Host, StateStore]:
    from tbctl.hosts.local import LocalHost
    from tbctl.state import StateStore

    store = StateStore(env.settings.state_dir)
    return LocalHost(env.settings.state_dir), store


def _flush_warnings(env: Environment, store: StateStore) -> None:
    for warning in store.warnings:
        env.warn(warning)
    store.warnings.clear()


def _split_logdir_and_extra(positional: list[str], logdir_option: str | None) -> tuple[str | None, list[str]]:
    """`up [LOGDIR] [-- TENSORBOARD FLAGS]`: click hands us everything positional after `--` too, so the
    LOGDIR is the first word before any flag-looking word."""
    words = list(positional)
    logdir = logdir_option
    if words and not words[0].startswith("-") and logdir is None:
        logdir = words.pop(0)
    elif words and not words[0].startswith("-") and logdir is not None:
        raise UsageError(f"two logdirs given: {logdir!r} and {words[0]!r}")
    return logdir, words


@app.command()
def up(
    ctx: typer.Context,
    args: Annotated[Optional[list[str]], typer.Argument(metavar="[LOGDIR] [-- TENSORBOARD_FLAGS...]", show_default=False)] = None,
    logdir_option: Annotated[Optional[str], typer.Option("--logdir", help="The logdir (default: runs).")] = None,
    port: Annotated[Optional[str], typer.Option("--port", "-p", help="Preferred port (default 6006; the next free one if taken).")] = None,
    timeout: TimeoutOption = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the URL in a browser.")] = False,
    new: Annotated[bool, typer.Option("--new", help="Start another instance even if one serves this logdir.")] = False,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", help="Path of the tensorboard executable.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Serve LOGDIR with TensorBoard on a free port, verified ready; reuse one already serving it."""
    from tbctl.config import parse_port
    from tbctl.core.up import UpRequest, up as run_up

    env = _command_env(ctx, json_output)
    logdir, extra = _split_logdir_and_extra(args or [], logdir_option)
    settings = env.settings
    request = UpRequest(
        logdir=logdir or settings.default_logdir,
        port=parse_port(port, source="--port") if port is not None else settings.default_port,
        timeout=timeout or settings.start_timeout,
        new=new,
        tensorboard=tensorboard,
        extra_args=tuple(extra),
    )
    host, store = _local(env)
    with host:
        result = run_up(host, store, request, progress=env.info)
    _flush_warnings(env, store)
    for warning in result.warnings:
        env.warn(warning)
    if result.port_note:
        env.notice(result.port_note)
    if env.json:
        render.print_json(env, result)
    else:
        render.up_result(env, result)
    if open_browser:
        import webbrowser

        if not webbrowser.open(result.url):
            env.info(f"no browser available; open {result.url}")


@app.command("ls")
def ls(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List every TensorBoard on the machine, ours or not, with its URL and status."""
    from tbctl.core.instances import list_instances

    env = _command_env(ctx, json_output)
    host, store = _local(env)
    with host:
        instances = list_instances(host, store)
    _flush_warnings(env, store)
    if env.json:
        render.print_json(env, instances)
    else:
        render.instances_table(env, instances)


@app.command()
def down(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[PORT|PID|LOGDIR]", show_default=False)] = None,
    all_instances: Annotated[bool, typer.Option("--all", help="Stop every TensorBoard of yours.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Stop TensorBoard gracefully (SIGTERM, then SIGKILL after --timeout); pid-reuse safe."""
    from tbctl.core.down import down as run_down

    env = _command_env(ctx, json_output)
    host, store = _local(env)
    with host:
        outcomes = run_down(host, store, target, all_instances=all_instances, force=force,
                            timeout=timeout or env.settings.stop_timeout)
    _flush_warnings(env, store)
    if env.json:
        render.print_json(env, outcomes)
    else:
        render.stop_outcomes(env, outcomes)
    failed = [o for o in outcomes if o.outcome in ("denied", "survived", "protected")]
    if failed:
        raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")


@app.command("free-port")
def free_port(
    ctx: typer.Context,
    port: Annotated[str, typer.Argument(metavar="PORT", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before stopping a process.")] = False,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once instead of SIGTERM first.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show who holds the port.")] = False,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Free PORT: show who LISTENs on it, confirm, SIGTERM then SIGKILL, and verify it is free."""
    from tbctl.config import parse_port
    from tbctl.core import free_port as core

    env = _command_env(ctx, json_output)
    number = parse_port(port)
    host, store = _local(env)
    with host:
        report = core.inspect(host, number)
        if not env.json:
            render.port_report(env, report)
        if not report.holders:
            if env.json:
                render.print_json(env, {"port": number, "host": host.name, "holders": [], "outcomes": [], "freed": True, "dry_run": dry_run})
            else:
                env.result_line(f"port {number} is free")
            return
        if dry_run:
            if env.json:
                render.print_json(env, {"port": number, "host": host.name, "holders": report.holders, "outcomes": [], "freed": False, "dry_run": True})
            else:
                how = "SIGKILL" if force else "SIGTERM, then SIGKILL if still running"
                env.result_line(f"dry run: would stop the holders with {how}")
            return
        asking = [h for h in report.holders if core.needs_confirmation(report, h) and not core.is_foreign(report, h)]
        if asking and not yes:
            _confirm(env, report, asking)
        result = core.free(host, report, force=force, timeout=timeout or env.settings.stop_timeout)
    if env.json:
        render.print_json(env, {"port": number, "host": result.host, "holders": report.holders,
                                "outcomes": result.outcomes, "freed": result.freed, "dry_run": False})
    else:
        render.free_port_result(env, result)
    if not result.freed:
        raise PortBusy(number, result.remaining, f"port {number} is still held",
                       hint="a process of another user needs sudo" if any(o.outcome == "denied" for o in result.outcomes) else None)


def _confirm(env: Environment, report: Any, asking: list[Any]) -> None:
    pids = ", ".join(sorted({str(h.pid) for h in asking}))
    if not env.stdin_isatty:
        raise PortBusy(report.port, report.holders, f"not stopping pid {pids} without confirmation",
                       hint="pass --yes to stop it without asking")
    env.stderr.write(f"stop pid {pids}? [y/N] ")
    env.stderr.flush()
    answer = env.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise PortBusy(report.port, report.holders, f"left pid {pids} running; port {report.port} is still held")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="tbctl")
