"""Everyday commands beyond the core lifecycle: `logs`, `open`, and `config path|show`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tbctl.cli import render
from tbctl.cli.app import ConnectTimeoutOption, HostOption, JsonOption, app, command_env
from tbctl.cli.completion import complete_targets
from tbctl.cli.environment import Environment
from tbctl.cli.session import browse, interrupt_on_hangup, open_host, store_of

if TYPE_CHECKING:
    from tbctl.core.logs import LogSource
    from tbctl.hosts.base import Host
    from tbctl.models import ForwardInfo
    from tbctl.state import StateStore



def _connect(env: Environment, spec: str | None, connect_timeout: float | None) -> Host:
    with env.status():  # the status line covers connecting (and any prompt pauses it)
        return open_host(env, spec, connect_timeout=connect_timeout)


# --- logs ---------------------------------------------------------------------------------------------------


@app.command()
def logs(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="PORT|PID|LOGDIR", show_default=False, autocompletion=complete_targets)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing what is written until Ctrl-C or TensorBoard exits.")] = False,
    lines: Annotated[str, typer.Option("--lines", "-n", metavar="N", help="How many of the last lines to show first.")] = "50",
    host_spec: HostOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show (and with -f follow) the log of a TensorBoard tbctl started, running or exited.

    With --json: one object with its lines; with -f --json, one JSON object per line (JSON Lines)."""
    from tbctl.core.logs import find_log, follow as follow_log, read_tail

    env = command_env(ctx, json_output)
    count = _line_count(lines)
    store = store_of(env)
    with _connect(env, host_spec, connect_timeout) as host:
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
            with interrupt_on_hangup():
                out.write(tail.text)
                if not source.running:
                    out.flush_partial()
                    env.info(f"TensorBoard pid {source.pid} is not running; nothing more will be written")
                    return
                follow_log(host, source, tail.offset, emit=out.write,
                           on_truncated=lambda: env.warn(f"{source.log_path} was truncated; reading it from the start"))
        except KeyboardInterrupt:  # Ctrl-C (or a closed terminal) is how one stops following: not an error
            out.flush_partial()
            return
        except BrokenPipeError:  # `tbctl logs -f … | head`: the reader has had enough
            _stdout_to_devnull()
            return
        out.flush_partial()
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
    """Log text to stdout as it arrives: raw on a terminal or a pipe (like `tail -f`), or one JSON object
    per complete line with --json (a line still being written waits for its newline)."""

    def __init__(self, env: Environment, source: LogSource) -> None:
        self.env = env
        self.source = source
        self.partial = ""

    def write(self, text: str) -> None:
        if not text:
            return
        if not self.env.json:
            self.env.stdout.write(text)
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


# --- open ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenTarget:
    url: str
    host: str
    pid: int | None
    port: int | None  # the TensorBoard's own port (on its host)
    logdir: str | None


@app.command("open")
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
    from tbctl.core.forwards import list_forwards

    env = command_env(ctx, json_output)
    store = store_of(env)
    forwards = list_forwards(store)
    chosen = _by_forward_port(forwards, target, host_spec)
    if chosen is None:
        with _connect(env, host_spec, connect_timeout) as host:
            chosen = _openable(host, store, forwards, target)
    opened = browse(chosen.url)
    if env.json:
        render.print_json(env, {"url": chosen.url, "opened": opened, "host": chosen.host, "pid": chosen.pid,
                                "port": chosen.port, "logdir": chosen.logdir})
        return
    env.stdout.write(chosen.url + "\n")
    if opened:
        env.info(f"opened {chosen.url} in the browser")
    else:
        env.info("no browser available here; open the URL above yourself")


def _by_forward_port(forwards: Sequence[ForwardInfo], target: str | None, host_spec: str | None) -> OpenTarget | None:
    """`open 16006`: the local end of a live detached forward names the TensorBoard behind it (no need to
    connect to its host)."""
    if target is None or not target.isdigit():
        return None
    for f in forwards:
        if f.local_port == int(target) and f.tunnel in ("up", "reconnecting") and host_spec in (None, f.host):
            return OpenTarget(url=f.url, host=f.host, pid=f.instance_pid, port=f.remote_port, logdir=f.logdir)
    return None


def _openable(host: Host, store: StateStore, forwards: Sequence[ForwardInfo], target: str | None) -> OpenTarget:
    from tbctl.core.instances import list_instances, select, with_forwards
    from tbctl.errors import NotFound, UsageError

    instances = [i for i in with_forwards(list_instances(host, store), forwards) if i.status in ("serving", "starting")]
    if target is not None:
        chosen = select(host, instances, target)
    elif not instances:
        raise NotFound(f"no TensorBoard running on {host.name}", hint="`tbctl up LOGDIR` starts one")
    elif len(instances) > 1:
        ports = ", ".join(str(i.port) for i in instances)
        raise UsageError(f"{len(instances)} TensorBoards are running on {host.name} (ports {ports}); name one",
                         hint="tbctl open PORT")
    else:
        chosen = instances
    inst = chosen[0]
    if inst.url is None:
        raise NotFound(
            f"TensorBoard pid {inst.pid} on {host.name}:{inst.port} has no forward to this machine",
            hint=f"`tbctl tunnel {host.name} {inst.port} --open` forwards it and opens it",
        )
    return OpenTarget(url=inst.url, host=inst.host, pid=inst.pid, port=inst.port, logdir=inst.logdir)


# --- config -------------------------------------------------------------------------------------------------

config_app = typer.Typer(
    name="config",
    help="Where the config file is and what tbctl makes of it (defaults < file < TBCTL_* environment < flags).",
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app)


@config_app.callback(invoke_without_command=True)
def config_main(ctx: typer.Context) -> None:
    # `tbctl config` alone: its help on stdout and exit 2, as `tbctl` alone does (click's no_args_is_help
    # would reach the error handler of the root group and print the help as an error message).
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


@config_app.command("path")
def config_path_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print the path of the config file (TBCTL_CONFIG, else the user config dir), existing or not."""
    from tbctl.config import config_path

    env = command_env(ctx, json_output)
    path = config_path()
    if env.json:
        render.print_json(env, {"path": str(path), "exists": path.is_file()})
    else:
        env.stdout.write(f"{path}\n")
        if not path.is_file():
            env.info("(no such file yet: tbctl uses its defaults)")


@config_app.command("show")
def config_show(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print the settings in effect, each with where it came from (default, file or environment)."""
    from tbctl.cli.session import ssh_backend
    from tbctl.config import settings_as_dict, top_level_rows

    env = command_env(ctx, json_output)
    view = settings_as_dict(env.settings)
    backend = ssh_backend(env, None)
    view |= {"ssh_in_effect": backend.name, "ssh_reason": backend.reason}
    if env.json:
        render.print_json(env, view)
        return
    status = "" if view["config_loaded"] else "  (not found)"
    out = [f"# config file: {view['config_file']}{status}", f"# state dir: {view['state_dir']}"]
    out.append(f"# SSH backend in effect: {backend.name} ({backend.reason})")
    for row in top_level_rows(env.settings):
        line = f"{row.key} = {_toml(row.value)}" if row.value not in (None, []) else f"# {row.key} (not set)"
        out.append(f"{line:<48} # {row.source}")
    for name, section in view["hosts"].items():
        out.append(f"\n[hosts.{_toml_key(name)}]")
        out.extend(f"{key} = {_toml(value)}" for key, value in section.items() if value not in (None, []))
    env.stdout.write("\n".join(out) + "\n")


def _toml(value: Any) -> str:
    import json

    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)  # strings, numbers and lists of strings are the same in TOML


def _toml_key(name: str) -> str:
    import json
    import re

    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
