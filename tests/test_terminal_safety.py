"""Other people's text on our terminal: command lines, logdirs, what TensorBoard or a host printed, a Slurm
reason. None of it may drive the terminal (title, screen clear, OSC 8 links, OSC 52 clipboard writes) or be
read as rich markup; it shows with its control characters made visible. JSON stays the exact data."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from examples.make_example_logdir import write_example_logdir
from tests.conftest import Cli
from tests.support.procs import ProcessReaper, free_port, start_plain_tensorboard
from tests.support.terminal import Terminal, run_on_pty

pytestmark = pytest.mark.timeout(120)

# A window title, a screen clear, an OSC 8 link and an OSC 52 clipboard write, then rich markup.
HOSTILE = ("\x1b]0;pwned\x07\x1b[2J\x1b]8;;https:evil.example\x07click\x1b]8;;\x07"
           "\x1b]52;c;cHduZWQ=\x07[link=https:evil.example]x[/link][/oops]")
# What must never reach a terminal from it (rich draws its own colours with ESC [ … m, which is fine).
FORBIDDEN = ("\x1b]0;", "\x1b[2J", "\x1b]8;", "\x1b]52;", "\x07")
VISIBLE = "\\x1b]0;pwned\\x07"  # how the title change shows instead


def _assert_safe(text: str) -> None:
    for seq in FORBIDDEN:
        assert seq not in text, f"{seq!r} reached the terminal:\n{text!r}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM", "COLUMNS", "LINES")}
    return env | {"TERM": "xterm-256color"} | extra


@pytest.fixture
def hostile_logdir(tmp_path: Path) -> Path:
    path = tmp_path / f"runs-{HOSTILE}"
    write_example_logdir(path)
    return path


def test_ls_and_free_port_show_a_hostile_command_line_escaped(
        cli: Cli, reaper: ProcessReaper, hostile_logdir: Path, port: int) -> None:
    tb = start_plain_tensorboard(reaper, hostile_logdir, port)
    row = next(r for r in cli("ls", "--json").json()["instances"] if r["pid"] == tb.pid)
    assert row["logdir"] == str(hostile_logdir), "JSON keeps the exact data"
    piped = cli("ls")
    _assert_safe(piped.stdout + piped.stderr)
    assert VISIBLE in piped.stdout
    held = cli("free-port", str(port), "--dry-run")
    _assert_safe(held.stdout + held.stderr)
    assert VISIBLE in held.stdout and f"pid {tb.pid}" in held.stdout
    # up's note about who holds the port it wanted
    other = Path(hostile_logdir.parent, "plain")
    write_example_logdir(other)
    busy = cli("up", str(other), "--port", str(port), "--timeout", "60")
    for inst in cli("ls", "--json").json()["instances"]:
        if inst["logdir"] == str(other):
            reaper.adopt(inst["pid"], inst["create_time"])
    cli("down", str(other))
    _assert_safe(busy.stdout + busy.stderr)
    assert f"pid {tb.pid}" in busy.stderr
    for args in (["ls"], ["free-port", str(port), "--dry-run"]):  # and on a real terminal, wide enough
        code, out = _on_wide_pty(args)
        assert code == 0, out
        _assert_safe(out)
        assert VISIBLE in out


def _on_wide_pty(args: list[str]) -> tuple[int, str]:
    term = Terminal([sys.executable, "-m", "tbctl", *args], env=_env(), size=(50, 500))
    try:
        code = term.wait_exit(timeout=60)
    finally:
        term.close(wait=0)
    return code, term.out.decode(errors="replace")


STATUS_SCRIPT = """
import sys
from tbctl.cli.environment import Environment
env = Environment()
reason = sys.argv[1]
with env.status() as progress:
    progress("waiting for job 7 (" + reason + ")")
    env.warn("squeue says: " + reason)
    progress("still waiting (" + reason + ")")
env.error("the host said: " + reason, hint=reason)
"""


def test_a_status_line_shows_markup_and_escapes_as_text() -> None:
    """An squeue reason like `[link=…]` or `[/oops]` is text: no link, no MarkupError."""
    term = Terminal([sys.executable, "-c", STATUS_SCRIPT, HOSTILE], env=_env())
    try:
        code = term.wait_exit(timeout=60)
    finally:
        term.close(wait=0)
    out = term.out.decode(errors="replace")
    assert code == 0, out
    assert "MarkupError" not in out and "[/oops]" in out and "[link=https:evil.example]" in out
    _assert_safe(out)
    assert VISIBLE in out


def test_a_failing_tensorboards_output_is_shown_escaped(cli: Cli, tmp_path: Path, logdir: Path) -> None:
    fake = tmp_path / "tensorboard"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' {_sh_quote('ERROR: ' + HOSTILE)} >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    failed = cli("up", str(logdir), "--tensorboard", str(fake), "--port", str(free_port()), exit_code=6)
    _assert_safe(failed.stdout + failed.stderr)
    assert "ERROR: " + VISIBLE in failed.stderr


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_logs_on_a_terminal_are_made_safe_but_keep_lines_and_tabs(cli: Cli, reaper: ProcessReaper, logdir: Path,
                                                                  port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    with open(inst["log_path"], "a") as log:
        log.write(f"col1\tcol2\nfrom the logdir: {HOSTILE}\nlast\n")
    code, out = run_on_pty(["logs", str(port)], [], env=_env())
    assert code == 0, out
    _assert_safe(out)
    assert "col1\tcol2\r\n" in out and VISIBLE in out
    piped = cli("logs", str(port)).stdout  # a pipe gets the file as it is, like `tail`
    assert f"from the logdir: {HOSTILE}\n" in piped
    cli("down", str(port))
