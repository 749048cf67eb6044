"""`tbctl ls`: every TensorBoard on the machine, with honest liveness."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, start_plain_tensorboard


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


def test_ls_with_nothing_running_is_not_an_error(cli: Cli) -> None:
    # the machine may run other TensorBoards; the command must still succeed
    cli("ls")
