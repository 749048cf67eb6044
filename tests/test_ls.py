"""`tbctl ls`: every TensorBoard on the machine, with honest liveness."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, alive, start_plain_tensorboard

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def _row(rows: list[dict], pid: int) -> dict:
    matches = [r for r in rows if r["pid"] == pid]
    assert len(matches) == 1, rows
    return matches[0]


def test_ls_shows_a_tensorboard_started_by_hand(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    tb = start_plain_tensorboard(reaper, logdir, port)
    row = _row(cli("ls", "--json").json()["instances"], tb.pid)
    assert row["status"] == "serving" and row["started_by"] == "other"
    assert row["port"] == port and row["logdir"] == str(logdir) and row["url"] == f"http://127.0.0.1:{port}/"
    assert row["info_file"].endswith(f"pid-{tb.pid}.info")
    # never the data-server child as an instance
    import psutil

    children = {c.pid for c in psutil.Process(tb.pid).children(recursive=True)}
    assert children, "TensorBoard's data server child was expected"
    assert not children & {r["pid"] for r in cli("ls", "--json").json()["instances"]}


def test_ls_marks_what_tbctl_started(cli: Cli, logdir: Path, port: int) -> None:
    pid = cli.up(str(logdir), "--port", str(port))["instance"]["pid"]
    row = _row(cli("ls", "--json").json()["instances"], pid)
    assert row["started_by"] == "tbctl" and row["log_path"]
    table = cli("ls").stdout
    assert "started-by" in table.splitlines()[0]
    assert any(str(pid) in line and "tbctl" in line and "serving" in line for line in table.splitlines())


def test_ls_reports_a_stale_info_file_after_sigkill(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    tb = start_plain_tensorboard(reaper, logdir, port)
    tb.send_signal(signal.SIGKILL)
    tb.wait()
    rows = cli("ls", "--json").json()["instances"]
    row = _row(rows, tb.pid)
    assert row["status"] == "stale" and row["url"] is None
    assert Path(row["info_file"]).exists()  # TensorBoard leaves it behind on SIGKILL
    assert "stale" in cli("ls").stdout
    # and down cleans it
    out = cli("down", str(tb.pid), "--json").json()["instances"]
    assert any(o["outcome"] == "cleaned" and o["instance"]["pid"] == tb.pid for o in out)
    assert not Path(row["info_file"]).exists()
    assert not [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == tb.pid]


@pytest.mark.parametrize("by", ["port", "pid", "all"])
def test_a_tensorboard_that_exited_cleanly_is_listed_as_exited_until_down_cleans_it(
    cli: Cli, logdir: Path, port: int, by: str
) -> None:
    import os

    import psutil

    from tests.support.procs import wait_until

    if by == "all":
        mine = [r for r in cli("ls", "--json").json()["instances"]
                if r["status"] != "stale" and r["user"] == psutil.Process().username()]
        if mine:
            pytest.skip(f"{len(mine)} other TensorBoard(s) of this user are running; down --all would stop them")
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    info = Path(tempfile.gettempdir(), ".tensorboard-info", f"pid-{inst['pid']}.info")  # TensorBoard's TMPDIR is ours
    assert wait_until(info.exists, 10)
    os.kill(inst["pid"], signal.SIGTERM)  # a plain `kill -TERM`: TensorBoard exits and removes its info file
    assert wait_until(lambda: not info.exists(), 10)
    assert wait_until(lambda: not alive(inst["pid"]), 10)
    row = _row(cli("ls", "--json").json()["instances"], inst["pid"])
    assert (row["status"], row["started_by"], row["port"], row["url"]) == ("exited", "tbctl", port, None)
    assert row["log_path"] == inst["log_path"] and row["logdir"] == str(logdir)
    assert any(str(inst["pid"]) in line and "exited" in line for line in cli("ls").stdout.splitlines())
    assert cli("logs", str(port), "--json").json()["running"] is False
    target = {"port": [str(port)], "pid": [str(inst["pid"])], "all": ["--all"]}[by]
    out = cli("down", *target, "--json").json()["instances"]
    assert [(o["instance"]["pid"], o["outcome"]) for o in out if o["instance"]["pid"] == inst["pid"]] == [(inst["pid"], "cleaned")]
    assert not [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == inst["pid"]]
    cli("down", str(port), exit_code=4)  # the record is gone


def test_ls_fits_an_80_column_terminal(reaper: ProcessReaper, tmp_path: Path, port: int) -> None:
    """Long logdirs are shortened in the middle (their start and their run name stay), one row per line;
    headers stay whole."""
    import os
    import re
    import sys

    from examples.make_example_logdir import write_example_logdir
    from tests.support.terminal import Terminal

    logdir = tmp_path / "a-rather-long-experiment-name-for-the-learning-rate-sweep" / "seed-1234-runs"
    write_example_logdir(logdir)
    tb = start_plain_tensorboard(reaper, logdir, port)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    term = Terminal([sys.executable, "-m", "tbctl", "ls"], env=env, size=(40, 80))
    try:
        assert term.wait_exit(timeout=60) == 0, term.screen()
    finally:
        term.close(wait=0)
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line) for line in term.out.decode().split("\r\n")]
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    header = lines[0].split()
    # the columns, whole; "started-by" is "by" on a terminal this narrow
    assert header[:3] == ["pid", "port", "logdir"] and "by" in header and header[-2:] == ["exposure", "status"], lines[0]
    mine = [line for line in lines if line.startswith(f"{tb.pid} ")]
    assert len(mine) == 1, "\n".join(lines)
    cells = mine[0].split()
    assert cells[1] == str(port) and "serving" in cells and f"http://127.0.0.1:{port}/" in cells
    logdir_cell = cells[2]
    assert "…" in logdir_cell and logdir_cell.startswith("/") and logdir_cell.endswith("runs"), logdir_cell


def test_ls_with_nothing_running_is_not_an_error(cli: Cli) -> None:
    """The real scan, here and under the layers' rules; the machine may run other TensorBoards."""
    cli("ls")
