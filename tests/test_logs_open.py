"""`tbctl logs` (show, follow, JSON; local and over SSH) and `tbctl open` (a browser, or the URL printed),
against real TensorBoards started by tbctl."""

from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.browser_process import fake_browser, tbctl_process
from tests.support.foreground import Foreground
from tests.support.procs import TENSORBOARD, ProcessReaper, free_port, start_plain_tensorboard, wait_until


def _banner_line(text: str, port: int) -> bool:
    return any(line.startswith("TensorBoard ") and f" at http://127.0.0.1:{port}/" in line for line in text.splitlines())


class Follower:
    """`tbctl ARGS` as a real process (for -f), its stdout and stderr read as they come."""

    def __init__(self, reaper: ProcessReaper, *args: str) -> None:
        self.proc = reaper.popen([sys.executable, "-m", "tbctl", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, encoding="utf-8")
        self.stdout = ""
        self.stderr = ""
        self._threads = [threading.Thread(target=self._drain, args=(name,), daemon=True) for name in ("stdout", "stderr")]
        for t in self._threads:
            t.start()

    def _drain(self, name: str) -> None:
        stream = getattr(self.proc, name)
        for line in stream:
            setattr(self, name, getattr(self, name) + line)

    def wait_stdout(self, text: str, timeout: float = 15) -> bool:
        return wait_until(lambda: text in self.stdout, timeout)

    def finish(self, timeout: float = 15) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(5)
        return rc


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:  # O_APPEND, as TensorBoard's own stdout is
        f.write(data)


# --- logs -----------------------------------------------------------------------------------------------------


def test_logs_shows_the_log_by_port_pid_or_logdir(cli: Cli, logdir: Path, port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    by_port = cli("logs", str(port))
    assert _banner_line(by_port.stdout, port), by_port.stdout
    assert f"log of TensorBoard pid {inst['pid']} (port {port}, running) on localhost: {inst['log_path']}" in by_port.stderr
    assert cli("logs", str(inst["pid"])).stdout == by_port.stdout
    assert cli("logs", str(logdir)).stdout == by_port.stdout
    last = cli("logs", str(port), "-n", "1").stdout
    assert last.count("\n") <= 1 and _banner_line(last, port), last
    assert cli("logs", str(port), "--lines", "0").stdout == ""
    assert cli("-q", "logs", str(port)).stderr == ""


def test_logs_json(cli: Cli, logdir: Path, port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    data = cli("logs", str(port), "--json").json()
    assert set(data) == {"host", "pid", "port", "logdir", "log_path", "running", "lines"}
    assert (data["host"], data["pid"], data["port"], data["running"]) == ("localhost", inst["pid"], port, True)
    assert data["log_path"] == inst["log_path"] and data["logdir"] == str(logdir)
    assert _banner_line("\n".join(data["lines"]), port)


def test_logs_follow_shows_what_is_appended_and_ends_when_tensorboard_exits(
    cli: Cli, reaper: ProcessReaper, logdir: Path, port: int
) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    follower = Follower(reaper, "logs", str(port), "-f")
    assert wait_until(lambda: _banner_line(follower.stdout, port), 15), follower.stderr
    # One character cut in half across two writes must arrive whole.
    _append(inst["log_path"], "first appended line\nsecond: h".encode() + "é".encode()[:1])
    assert follower.wait_stdout("first appended line\n"), follower.stdout
    _append(inst["log_path"], "é".encode()[1:] + b"llo\n")
    assert follower.wait_stdout("second: héllo\n"), follower.stdout
    cli("down", str(port))
    assert follower.finish() == 0, follower.stderr
    assert f"TensorBoard pid {inst['pid']} exited" in follower.stderr
    assert "\ufffd" not in follower.stdout


def test_logs_follow_json_lines_and_ctrl_c(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    follower = Follower(reaper, "logs", str(port), "-f", "--json")
    _append(inst["log_path"], b"appended while following\n")
    assert follower.wait_stdout("appended while following"), follower.stderr
    follower.proc.send_signal(signal.SIGINT)
    assert follower.finish() == 0, follower.stderr
    records = [json.loads(line) for line in follower.stdout.splitlines()]
    assert records and all(set(r) == {"host", "pid", "port", "line"} for r in records)
    assert {(r["host"], r["pid"], r["port"]) for r in records} == {("localhost", inst["pid"], port)}
    assert records[-1]["line"] == "appended while following"
    assert any(_banner_line(r["line"], port) for r in records)
    assert "Traceback" not in follower.stderr


def test_logs_of_a_tensorboard_that_died(cli: Cli, logdir: Path, port: int) -> None:
    """Killed without `tbctl down` (its record stays): the log says why it is gone, -f does not hang."""
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    os.kill(inst["pid"], signal.SIGKILL)
    assert wait_until(lambda: cli("logs", str(port), "--json").json()["running"] is False, 10)
    shown = cli("logs", str(port), "-f")
    assert _banner_line(shown.stdout, port)
    assert "not running" in shown.stderr
    cli("down", str(port))  # removes the record and the info file SIGKILL left behind
    assert "no TensorBoard matching" in cli("logs", str(port), exit_code=4).stderr


def test_logs_refuses_what_tbctl_did_not_start(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    start_plain_tensorboard(reaper, logdir, port)
    err = cli("logs", str(port), exit_code=4).stderr
    assert "was not started by tbctl" in err
    assert "no TensorBoard matching '1'" in cli("logs", "1", exit_code=4).stderr


def test_logs_over_ssh_show_and_follow(ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
                                       logdir: Path) -> None:
    remote = ssh_env
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6640")
    reaper.adopt(fg.pid_from_stderr())
    data = cli("logs", "6640", "--host", remote.alias, "--json").json()
    assert data["host"] == remote.alias and data["running"] is True
    assert any("TensorBoard " in line and ":6640/" in line for line in data["lines"])
    follower = Follower(reaper, "logs", "6640", "--host", remote.alias, "-f")
    assert follower.wait_stdout(":6640/"), follower.stderr
    _append(data["log_path"], b"written on the remote\n")  # one filesystem: the remote is a network namespace
    assert follower.wait_stdout("written on the remote\n"), follower.stderr
    follower.proc.send_signal(signal.SIGINT)
    assert follower.finish() == 0, follower.stderr
    assert fg.interrupt() == 0


# --- open -----------------------------------------------------------------------------------------------------


def _headless_env(tmp_path: Path) -> dict[str, str]:
    """No display and no console browser on PATH: what a server over SSH looks like."""
    env = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    ssh = shutil.which("ssh")
    if ssh and not (empty / "ssh").exists():
        (empty / "ssh").symlink_to(ssh)  # the OpenSSH backend runs the user's ssh, which a server has too
    env["PATH"] = str(empty)
    return env


def test_open_hands_the_url_to_the_browser(cli: Cli, logdir: Path, port: int, tmp_path: Path) -> None:
    url = cli.up(str(logdir), "--port", str(port))["url"]
    browser, got = fake_browser(tmp_path)
    env = _headless_env(tmp_path) | {"BROWSER": browser}
    done = tbctl_process("open", str(port), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{url}\n"  # the browser's chatter went to stderr, not here
    assert got.read_text() == f"{url}\n"
    assert f"opened {url} in the browser" in done.stderr
    # (Without TARGET it would open the only TensorBoard running, but this machine may run others.)
    data = json.loads(tbctl_process("open", str(logdir), "--json", env=env).stdout)
    assert data["url"] == url and data["opened"] is True and data["port"] == port


def test_open_remote_needs_a_forward(ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
                                     logdir: Path, tmp_path: Path) -> None:
    remote = ssh_env
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6650", "--keep")
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    assert fg.interrupt() == 0  # --keep: TensorBoard stays, the forward is gone
    err = cli("open", "6650", "--host", remote.alias, exit_code=4).stderr
    assert "has no forward to this machine" in err and f"tbctl tunnel {remote.alias} 6650" in err
    # A background forward makes it openable, by its remote port on --host or by the forward's local port.
    local = free_port()
    cli("tunnel", remote.alias, "6650", "--local-port", str(local), "--detach")
    env = _headless_env(tmp_path)
    for args in (("open", "6650", "--host", remote.alias, "--json"), ("open", str(local), "--json")):
        data = json.loads(tbctl_process(*args, env=env).stdout)
        assert data["url"] == f"http://127.0.0.1:{local}/" and data["port"] == 6650 and data["host"] == remote.alias
    cli("down", str(local))
    cli("down", "6650", "--host", remote.alias)


def test_up_open_says_it_opened_the_browser(logdir: Path, port: int, tmp_path: Path, reaper: ProcessReaper) -> None:
    browser, got = fake_browser(tmp_path)
    done = tbctl_process("up", str(logdir), "--port", str(port), "--open", env=dict(os.environ, BROWSER=browser))
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    reaper.adopt(next(i["pid"] for i in json.loads(tbctl_process("ls", "--json", env=dict(os.environ)).stdout)["instances"]
                      if i["port"] == port))
    assert got.read_text() == f"{url}\n"
    assert done.stderr.rstrip().endswith(f"opened {url} in the browser"), done.stderr
    tbctl_process("down", str(port), env=dict(os.environ))


@pytest.mark.parametrize("command", ["open", "up"])
def test_without_a_browser_the_url_comes_before_the_words_about_it(
        cli: Cli, logdir: Path, port: int, tmp_path: Path, reaper: ProcessReaper, command: str) -> None:
    """stdout and stderr into one pipe (`tbctl open 2>&1 | cat`): the URL is not left behind in a buffer
    while the message that refers to it goes first."""
    url = cli.up(str(logdir), "--port", str(port))["url"]
    args = [command, str(port)] if command == "open" else [command, str(logdir), "--port", str(port), "--open"]
    done = subprocess.run([sys.executable, "-m", "tbctl", *args], env=_headless_env(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    about = next(i for i, line in enumerate(lines) if "no browser available" in line)
    assert lines.index(url) < about, done.stdout
    assert url in lines[about], "the message names the URL itself, wherever stdout went"
