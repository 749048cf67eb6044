"""Progress on stderr: one live rich status line on a terminal (a real pty here), plain lines anywhere else,
nothing with --quiet, no colours with NO_COLOR."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cli
from tests.support.procs import ProcessReaper
from tests.support.terminal import Terminal, run_on_pty

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # rich's "dots" frames
COLOUR = re.compile(r"\x1b\[(?:3[0-9]|9[0-7]|38;)[0-9;]*m")  # a foreground colour (not bold, not erase)
ERASE_LINE = "\x1b[2K"

# A command-shaped script: two slow steps, a message in between, then the result on stdout.
SCRIPT = """
import sys, time
from tbctl.cli.environment import Environment
env = Environment(quiet="--quiet" in sys.argv)
with env.status() as progress:
    progress("connecting to gpu1…")
    time.sleep(0.4)
    env.info("port 6006 is held by pid 1; using 6007")
    progress("starting TensorBoard on gpu1:6007")
    time.sleep(0.4)
env.stdout.write("http://127.0.0.1:16007/\\n")
"""


def _on_pty(*args: str, env: dict[str, str], script: str = SCRIPT, prompt: bytes = b"",
            answer: bytes = b"", quiet_after_prompt: list[bytes] | None = None, stdout_to: str | None = None) -> str:
    """`script` with a real terminal as stdin, stdout and stderr (stdout to the file `stdout_to` instead,
    if given); everything the terminal was sent. When the output shows `prompt`, wait a moment (collecting
    what is drawn meanwhile into `quiet_after_prompt`), then type `answer`."""
    term = Terminal([sys.executable, "-c", script, *args], env=env, stdout_to=stdout_to)
    try:
        if prompt and term.wait_for(prompt, timeout=30):
            meanwhile = term.read_for(0.5)  # half a second: several spinner frames, if it spun
            if quiet_after_prompt is not None:
                quiet_after_prompt.append(meanwhile)
            term.type(answer)
        code = term.wait_exit(timeout=60)
    finally:
        term.close(wait=0)
    assert code == 0, term.screen(last=len(term.out))
    return term.out.decode(errors="replace")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return env | {"TERM": "xterm-256color"} | extra


def test_a_terminal_gets_one_live_status_line_that_is_cleared() -> None:
    out = _on_pty(env=_env())
    assert "connecting to gpu1…" in out and "starting TensorBoard on gpu1:6007" in out
    assert any(frame in out for frame in SPINNER), "the status line animates"
    assert COLOUR.search(out), "colours on a colour terminal"
    assert "port 6006 is held by pid 1; using 6007" in out  # printed above the status line, kept
    # The status line is erased before the result appears, so the result stands alone on its line.
    before_url = out.split("http://127.0.0.1:16007/")[0]
    assert before_url.rfind(ERASE_LINE) > before_url.rfind("starting TensorBoard on gpu1:6007")
    # Each step is drawn only as the status line (spinner first), never as a plain line of its own.
    for step in ("connecting to gpu1…", "starting TensorBoard on gpu1:6007"):
        starts = [m.start() for m in re.finditer(re.escape(step), out)]
        assert starts and all(any(f in out[max(0, i - 12):i] for f in SPINNER) for i in starts), step


PROMPTING = """
import time
from tbctl.cli.environment import Environment
env = Environment()
with env.status() as progress:
    progress("connecting to gpu1…")
    time.sleep(0.3)
    with env.paused():  # what the SSH prompter does around a passphrase question
        env.stderr.write("Enter passphrase for key: ")
        env.stderr.flush()
        answer = env.stdin.readline().strip()
    progress(f"authenticated as {answer}")
    time.sleep(0.3)
"""


def test_a_question_pauses_the_status_line() -> None:
    meanwhile: list[bytes] = []
    out = _on_pty(env=_env(), script=PROMPTING, prompt=b"Enter passphrase for key: ", answer=b"me\n",
                  quiet_after_prompt=meanwhile)
    assert meanwhile and not any(f.encode() in meanwhile[0] for f in SPINNER), "no spinner over the question"
    after = out.split("Enter passphrase for key: ", 1)[1]
    assert "authenticated as me" in after and any(f in after for f in SPINNER), "the status line comes back"


def test_no_color_keeps_the_status_line_without_colours() -> None:
    out = _on_pty(env=_env(NO_COLOR="1"))
    assert "starting TensorBoard on gpu1:6007" in out and any(frame in out for frame in SPINNER)
    assert not COLOUR.search(out), repr(out[:500])


def test_quiet_shows_no_progress() -> None:
    out = _on_pty("--quiet", env=_env())
    assert "connecting" not in out and "starting" not in out and "port 6006" not in out
    assert not any(frame in out for frame in SPINNER)
    assert "http://127.0.0.1:16007/" in out


def test_a_dumb_terminal_gets_plain_lines() -> None:
    out = _on_pty(env=_env(TERM="dumb"))
    assert "connecting to gpu1…\r\n" in out and "starting TensorBoard on gpu1:6007\r\n" in out
    assert "\x1b[" not in out and not any(frame in out for frame in SPINNER)


def test_stdout_captured_by_a_script_gets_plain_lines(tmp_path: Path) -> None:
    """`url=$(tbctl up …)`: stderr is still the terminal, but no one is watching a redraw; plain lines."""
    out = _on_pty(env=_env(), stdout_to=str(tmp_path / "stdout"))
    assert "connecting to gpu1…\r\n" in out and "starting TensorBoard on gpu1:6007\r\n" in out
    assert not any(frame in out for frame in SPINNER)
    assert (tmp_path / "stdout").read_text() == "http://127.0.0.1:16007/\n"


def test_a_pipe_gets_plain_lines() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("connecting to gpu1…\nport 6006 is held by pid 1; using 6007\n"
                           "starting TensorBoard on gpu1:6007\n")
    assert done.stdout == "http://127.0.0.1:16007/\n"


def _up_on_pty(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int, *global_args: str, **extra: str) -> str:
    """`tbctl [GLOBAL_ARGS] up LOGDIR` on a pty; the TensorBoard it started is reaped and stopped again."""
    code, out = run_on_pty([*global_args, "up", str(logdir), "--port", str(port)], [], env=_env(**extra))
    started = [i for i in cli("ls", "--json").json()["instances"] if i["port"] == port]
    for inst in started:
        reaper.adopt(inst["pid"], inst["create_time"])
    cli("down", str(port))
    assert code == 0 and started, out
    return out


def test_up_on_a_terminal(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    out = _up_on_pty(cli, reaper, logdir, port)
    assert f"starting TensorBoard on localhost:{port}" in out and f"http://127.0.0.1:{port}/" in out
    assert not COLOUR.search(_up_on_pty(cli, reaper, logdir, port, NO_COLOR="1"))
    quiet = _up_on_pty(cli, reaper, logdir, port, "--quiet")
    assert "starting TensorBoard" not in quiet and f"http://127.0.0.1:{port}/" in quiet


def test_up_on_a_terminal_shows_the_live_status_line(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    out = _up_on_pty(cli, reaper, logdir, port)
    assert any(frame in out for frame in SPINNER)
    assert f"waiting for TensorBoard on localhost:{port}" in out
    before_url = out.split(f"http://127.0.0.1:{port}/")[0]
    assert before_url.rfind(ERASE_LINE) > before_url.rfind(f"starting TensorBoard on localhost:{port}")
