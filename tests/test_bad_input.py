"""Bad input: one line, a hint, a documented exit code — never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli


@pytest.mark.parametrize("port", ["0", "-1", "65536", "abc", "6006x", ""])
def test_bad_ports(cli: Cli, port: str, logdir: Path) -> None:
    for args in (["free-port", port], ["up", str(logdir), "--port", port]):
        result = cli(*args, exit_code=2)
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") <= 3, result.stderr


def test_down_zero_is_a_usage_error(cli: Cli) -> None:
    cli("down", "0", exit_code=2)


def test_tensorboard_path_not_executable(cli: Cli, tmp_path: Path, logdir: Path) -> None:
    not_exec = tmp_path / "tb.txt"
    not_exec.write_text("hello")
    result = cli("up", str(logdir), "--tensorboard", str(not_exec), exit_code=2)
    assert "not an executable" in result.stderr
    cli("up", str(logdir), "--tensorboard", str(tmp_path / "missing"), exit_code=2)


def test_managed_flags_after_double_dash_are_refused(cli: Cli, logdir: Path) -> None:
    assert "set by tbctl" in cli("up", str(logdir), "--", "--port", "7000", exit_code=2).stderr


def test_missing_tensorboard_is_exit_4_naming_what_was_searched(tmp_path: Path) -> None:
    from tbctl.errors import TensorBoardNotFound
    from tbctl.hosts.local import LocalHost

    host = LocalHost(tmp_path)
    with pytest.raises(TensorBoardNotFound) as err:
        host.find_tensorboard(env_prefix=str(tmp_path / "no-such-env"))
    assert err.value.exit_code == 4 and str(tmp_path / "no-such-env" / "bin" / "tensorboard") in err.value.message


def test_corrupt_state_file_is_recovered_with_a_warning(cli: Cli, logdir: Path, port: int, state_dir: Path) -> None:
    pid = cli.up(str(logdir), "--port", str(port))["instance"]["pid"]
    records = state_dir / "instances.jsonl"
    good = records.read_text()
    records.write_text("{not json\n" + good + "\x00garbage\n")
    result = cli("ls", "--json")
    assert "damaged line" in result.stderr and "kept 1 record" in result.stderr
    row = [r for r in result.json()["instances"] if r["pid"] == pid][0]
    assert row["started_by"] == "tbctl"  # the good record survived
    assert list(state_dir.glob("instances.jsonl.corrupt-*"))
    assert "damaged" not in cli("ls").stderr  # repaired once


def test_unknown_command_and_option_are_usage_errors(cli: Cli) -> None:
    cli("frobnicate", exit_code=2)
    cli("ls", "--frobnicate", exit_code=2)


def test_debug_shows_the_traceback_and_plain_does_not(tmp_path: Path, state_dir: Path) -> None:
    env = {"TBCTL_STATE_DIR": str(state_dir), "PATH": "/usr/bin:/bin"}
    plain = subprocess.run([sys.executable, "-m", "tbctl", "free-port", "abc"], capture_output=True, text=True, env=env)
    debug = subprocess.run([sys.executable, "-m", "tbctl", "--debug", "free-port", "abc"], capture_output=True, text=True, env=env)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


def test_json_mode_prints_only_json_on_stdout(cli: Cli, tmp_path: Path, port: int) -> None:
    result = cli("up", "--json", str(tmp_path / "missing"), "--port", str(port))
    json.loads(result.stdout)
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["-V"], ["--bogus", "ls"]])
def test_an_unknown_option_of_tbctl_itself_is_one_line_and_a_hint(cli: Cli, args: list[str]) -> None:
    result = cli(*args, exit_code=2)
    assert result.stderr == f"tbctl: No such option: {args[0]}\nhint: see 'tbctl -h'\n"
    assert result.stdout == ""


def test_the_same_from_the_installed_command() -> None:
    done = subprocess.run([sys.executable, "-m", "tbctl", "-V"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "tbctl: No such option: -V\nhint: see 'tbctl -h'\n")


def test_only_a_near_miss_is_suggested(cli: Cli) -> None:
    assert cli("up", "--bogus", exit_code=2).stderr.splitlines()[0] == "tbctl: No such option: --bogus"
    assert "did you mean --host?" in cli("up", "--hots", exit_code=2).stderr
    assert "did you mean --port?" in cli("up", "--prot", exit_code=2).stderr
    assert "did you mean --all?" in cli("down", "--al", exit_code=2).stderr


@pytest.mark.parametrize("lines", ["abc", "-5", "1.5", ""])
def test_logs_lines_must_be_a_whole_number(cli: Cli, lines: str) -> None:
    result = cli("logs", "6006", "-n", lines, exit_code=2)
    assert result.stderr.splitlines()[0] == f"tbctl: -n: expected a whole number of lines, got {lines!r}"
