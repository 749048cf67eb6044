"""`tbctl logs`: the log of a TensorBoard tbctl started, followed with -f."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_targets
from tbctl.cli.environment import Environment
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, command_env, verb_app
from tbctl.cli.hosts import connect, store_of
from tbctl.cli.visible import visible

if TYPE_CHECKING:
    from tbctl.core.logs import LogSource

verb = verb_app()


@verb.command()
def logs(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PORT|PID|LOGDIR", show_default=False, autocompletion=complete_targets)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing what is written until Ctrl-C or TensorBoard exits.")] = False,
    lines: Annotated[str, typer.Option("--lines", "-n", metavar="N", show_default=False, help="How many of the last lines to show first (default 50).")] = "50",
    host_spec: HostOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show (and with -f follow) the log of a TensorBoard tbctl started, running or exited.

    With --json: one object with its lines; with -f --json, one JSON object per line (JSON Lines)."""
    from tbctl.core.logs import find_log, follow_to_end, read_tail

    env = command_env(ctx, json_output)
    count = _line_count(lines)
    store = store_of(env)
    with connect(env, host_spec, connect_timeout=connect_timeout) as host:
        source = find_log(host, store, target)
        tail = read_tail(host, source, count)
        state = "running" if source.running else "not running"
        env.info(f"log of TensorBoard pid {source.pid} (port {source.port}, {state}) on {host.name}: {source.log_path}")
        if env.json and not follow:
            render.print_json(env, _log_json(source) | {"lines": tail.lines})
            return
        out = _LogWriter(env, source)
        if not follow:
            out.write(tail.text)
            out.flush_partial()
            return
        try:
            ended = follow_to_end(host, tail, emit=out.write, on_truncated=lambda: env.warn(
                f"{source.log_path} was truncated; reading it from the start"))
        except BrokenPipeError:  # `tbctl logs -f … | head`: the reader has had enough
            _stdout_to_devnull()
            return
        out.flush_partial()
        if ended == "not running":
            env.info(f"TensorBoard pid {source.pid} is not running; nothing more will be written")
        elif ended == "exited":
            env.info(f"TensorBoard pid {source.pid} exited")


def _line_count(raw: str) -> int:
    # Parsed here, not by click: its message for `-n abc` ("not a valid int range") names a type, not the fix.
    from tbctl.errors import UsageError

    if not raw.isdigit():
        raise UsageError(f"-n: expected a whole number of lines, got {raw!r}", hint="e.g. `-n 200`; `-n 0` shows none")
    return int(raw)


def _stdout_to_devnull() -> None:
    """After EPIPE, point fd 1 at /dev/null so the interpreter's final flush does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _log_json(source: LogSource) -> dict[str, Any]:
    return {"host": source.host, "pid": source.pid, "port": source.port, "logdir": source.logdir,
            "log_path": source.log_path, "running": source.running}


class _LogWriter:
    """Log text to stdout as it arrives: on a pipe as it is (like `tail -f`); on a terminal with its control
    characters made visible, newlines and tabs kept (a log quotes logdirs and whatever TensorBoard was
    fed, and must not drive the terminal); or one JSON object per complete line with --json (a line still
    being written waits for its newline)."""

    def __init__(self, env: Environment, source: LogSource) -> None:
        self.env = env
        self.source = source
        self.partial = ""

    def write(self, text: str) -> None:
        if not text:
            return
        if not self.env.json:
            self.env.stdout.write(visible(text, keep="\n\t") if self.env.stdout_isatty else text)
            self.env.stdout.flush()
            return
        import json

        *complete, self.partial = (self.partial + text).split("\n")
        for line in complete:
            self._json_line(json, line)
        self.env.stdout.flush()

    def flush_partial(self) -> None:
        if self.env.json:
            import json

            if self.partial:
                self._json_line(json, self.partial)
                self.partial = ""
        self.env.stdout.flush()

    def _json_line(self, json: Any, line: str) -> None:
        record = {"host": self.source.host, "pid": self.source.pid, "port": self.source.port, "line": line}
        self.env.stdout.write(json.dumps(record, sort_keys=True) + "\n")


command = typer.main.get_command(verb)
