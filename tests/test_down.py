"""`tbctl down`: by port, pid, logdir and --all; graceful first, forced when needed, pid-reuse safe."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import Cli, tensorboard_pids_for
from tests.support.procs import ProcessReaper, alive, free_port, start_listener, start_plain_tensorboard, wait_until

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def info_file(pid: int) -> Path:
    """Where TensorBoard `pid` writes its info file: `tempfile.gettempdir()` as that process sees it (its
    TMPDIR, TEMP or TMP, else /tmp), as TensorBoard itself decides. Ask while it is alive."""
    found = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                           env=psutil.Process(pid).environ(), capture_output=True, text=True, timeout=30, check=True)
    return Path(found.stdout.strip()) / ".tensorboard-info" / f"pid-{pid}.info"


@pytest.mark.parametrize("by", ["port", "pid", "logdir"])
def test_down_by_port_pid_or_logdir(cli: Cli, logdir: Path, port: int, by: str) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    info = info_file(inst["pid"])
    assert wait_until(info.exists, 5)
    target = {"port": str(port), "pid": str(inst["pid"]), "logdir": str(logdir)}[by]
    out = cli("down", target, "--json").json()["instances"]
    assert [(o["outcome"], o["instance"]["pid"]) for o in out] == [("stopped", inst["pid"])]
    assert not alive(inst["pid"])
    # SIGTERM lets TensorBoard remove its own info file
    assert not info.exists()
    assert not [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == inst["pid"]]


def test_down_stops_a_tensorboard_not_started_by_tbctl(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    tb = start_plain_tensorboard(reaper, logdir, port)
    result = cli("down", str(port))
    assert f"stopped pid {tb.pid}" in result.stdout
    assert tb.wait(timeout=10) == 0


def test_down_all_stops_every_instance_of_this_user(cli: Cli, logdir: Path, tmp_path: Path) -> None:
    """--all means every TensorBoard of this user on the machine, as documented: so this test runs only
    where it would stop nothing but its own (always in CI; on a workstation, not while you use TensorBoard)."""
    mine = [r for r in cli("ls", "--json").json()["instances"] if r["status"] != "stale" and r["user"] == psutil.Process().username()]
    if mine:
        pytest.skip(f"{len(mine)} other TensorBoard(s) of this user are running; down --all would stop them")
    other = tmp_path / "other"
    other.mkdir()
    a = cli.up(str(logdir), "--port", str(free_port()))["instance"]["pid"]
    b = cli.up(str(other), "--port", str(free_port()))["instance"]["pid"]
    out = cli("down", "--all", "--json").json()["instances"]
    stopped = {o["instance"]["pid"] for o in out if o["outcome"] == "stopped"}
    assert {a, b} <= stopped
    assert not tensorboard_pids_for(logdir) and not tensorboard_pids_for(other)


@pytest.mark.parametrize("own_tmpdir", [False, True], ids=["tmp", "TMPDIR"])
def test_down_force_kills_and_removes_the_stale_info_file(cli: Cli, logdir: Path, port: int, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, own_tmpdir: bool) -> None:
    if own_tmpdir:  # TensorBoard (started with this environment) writes its info file under TMPDIR
        monkeypatch.setenv("TMPDIR", str(tmp_path / "tmpdir"))
        (tmp_path / "tmpdir").mkdir()
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    info = info_file(inst["pid"])
    assert info.is_relative_to(tmp_path / "tmpdir") == own_tmpdir
    assert wait_until(info.exists, 5)
    out = cli("down", str(port), "--force", "--json").json()["instances"]
    assert out[0]["outcome"] == "killed" and out[0]["info_file_removed"] is True
    assert not info.exists()


def test_down_escalates_to_kill_after_the_timeout(cli: Cli, logdir: Path, port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    # Make this TensorBoard ignore SIGTERM the way a wedged process would: stop it (SIGSTOP) so the
    # TERM stays pending; only SIGKILL ends it.
    psutil.Process(inst["pid"]).send_signal(signal.SIGSTOP)
    out = cli("down", str(inst["pid"]), "--timeout", "0.5", "--json").json()["instances"]
    assert out[0]["outcome"] == "killed" and out[0]["info_file_removed"] is True


def test_down_only_touches_tensorboards(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    """A real listener, as the probe sees it here and under the layers' rules (its decision: test_cli_decisions)."""
    listener = start_listener(reaper, port)
    cli("down", str(port), exit_code=4)
    cli("down", str(listener.pid), exit_code=4)
    assert listener.poll() is None
