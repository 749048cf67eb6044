"""The probe's process control per OS: how a child is launched detached, known to be running, and stopped.

POSIX's (sessions and signals) runs for real in the rest of the suite. Windows' is tested here on this
machine, which is not Windows, against psutil's API with real children: the options it would give
Popen are checked and then left out (POSIX's Popen refuses creationflags), its graceful step (CTRL_BREAK,
which needs Windows' consoles) is recorded instead of sent, and TerminateProcess is psutil's kill(),
here SIGKILL. That is the stand-in for Windows' kernel. The last tests run only on Windows itself (the
windows job of .github/workflows/tests.yml).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tbctl import probe
from tbctl.probe import PosixControl, Probe, WindowsControl
from tests.support.procs import ProcessReaper, alive

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class RecordedWindowsControl(WindowsControl):
    """Windows' control with the CTRL_BREAK it would send recorded, and answered by `breaks_reach`."""

    def __init__(self, *, breaks_reach: bool) -> None:
        super().__init__()
        self.breaks_reach = breaks_reach
        self.asked: list[int] = []

    def ask_to_stop(self, pid: int) -> bool:
        self.asked.append(pid)
        return self.breaks_reach


@pytest.fixture
def popen_options(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What launch() hands Popen beyond the command; the Windows-only options are then dropped."""
    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def popen(argv: Any, **kwargs: Any) -> Any:
        seen.append(dict(kwargs))
        if os.name != "nt":
            kwargs.pop("creationflags", None)
        return real(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    return seen


def launched(probe_: Probe, tmp_path: Path, reaper: ProcessReaper) -> tuple[int, float]:
    started = probe_.launch(SLEEPER, str(tmp_path / "logs" / "sleeper.log"))
    reaper.adopt(started["pid"], started["create_time"])
    return started["pid"], started["create_time"]


def windows_launch(tmp_path: Path, reaper: ProcessReaper, *,
                   breaks_reach: bool) -> tuple[RecordedWindowsControl, Probe, int, float]:
    """A real child launched by a probe with Windows' control (CTRL_BREAK recorded)."""
    control = RecordedWindowsControl(breaks_reach=breaks_reach)
    local = Probe(control=control)
    return (control, local, *launched(local, tmp_path, reaper))


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_each_os_has_its_control() -> None:
    assert type(probe.default_control()) is (WindowsControl if os.name == "nt" else PosixControl)
    assert PosixControl.popen_options() == {"start_new_session": True}


def test_windows_launches_in_a_process_group_and_a_windowless_console_of_its_own() -> None:
    flags = WindowsControl.popen_options()["creationflags"]
    assert flags == 0x00000200 | 0x08000000  # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    assert not flags & 0x00000008  # not DETACHED_PROCESS: a process without a console cannot get CTRL_BREAK
    if os.name == "nt":  # Windows' own names for them
        assert flags == subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_windows_launch_hands_popen_its_flags_and_knows_its_child_by_the_handle(
        tmp_path: Path, reaper: ProcessReaper, popen_options: list[dict[str, Any]]) -> None:
    control, local, pid, create_time = windows_launch(tmp_path, reaper, breaks_reach=True)
    assert popen_options[-1]["creationflags"] == WindowsControl.popen_options()["creationflags"]
    assert "start_new_session" not in popen_options[-1]
    assert local.alive(pid, create_time) and control.child_running(pid) is True
    psutil.Process(pid).kill()
    assert wait_dead(pid)
    assert control.child_running(pid) is False and not local.alive(pid, create_time)
    assert control.child_running(pid) is None  # reaped and forgotten: no longer a child to ask about


@pytest.mark.timeout(60)
def test_windows_stops_with_ctrl_break_first_and_leaves_the_process_to_exit(
        tmp_path: Path, reaper: ProcessReaper, popen_options: list[dict[str, Any]]) -> None:
    control, local, pid, create_time = windows_launch(tmp_path, reaper, breaks_reach=True)
    assert local.send_signal(pid, create_time, "SIGTERM") == {"outcome": "sent"}
    assert control.asked == [pid]
    assert alive(pid)  # nothing was terminated: the break (not sent here) is what would end it


@pytest.mark.timeout(60)
def test_windows_terminates_what_no_ctrl_break_can_reach(
        tmp_path: Path, reaper: ProcessReaper, popen_options: list[dict[str, Any]]) -> None:
    control, local, pid, create_time = windows_launch(tmp_path, reaper, breaks_reach=False)
    assert local.send_signal(pid, create_time, "SIGTERM") == {"outcome": "sent"}
    assert control.asked == [pid] and wait_dead(pid)
    assert local.wait_gone([[pid, create_time]], 5.0) == {"alive": []}


@pytest.mark.timeout(60)
def test_windows_sigkill_is_terminate_at_once(tmp_path: Path, reaper: ProcessReaper,
                                              popen_options: list[dict[str, Any]]) -> None:
    control, local, pid, create_time = windows_launch(tmp_path, reaper, breaks_reach=True)
    assert local.send_signal(pid, create_time, "SIGKILL") == {"outcome": "sent"}
    assert control.asked == [] and wait_dead(pid)
    assert local.send_signal(pid, create_time, "SIGKILL") == {"outcome": "gone"}


LAUNCHER = [sys.executable, "-c", "import subprocess, sys; "
            "sys.exit(subprocess.call([sys.executable, '-c', 'import time; time.sleep(60)']))"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sig", "breaks_reach"), [("SIGKILL", True), ("SIGTERM", False)])
def test_windows_terminates_a_launchers_child_with_it(sig: str, breaks_reach: bool, tmp_path: Path,
                                                      reaper: ProcessReaper, popen_options: list[dict[str, Any]]) -> None:
    """A wrapper (a .cmd given as --tensorboard) runs TensorBoard in a child and waits for it; the pid tbctl
    knows is the wrapper's. TerminateProcess ends one process, not its children (pip's Scripts\\*.exe
    launcher is the exception: a kill-on-close job object ends its child), so the child (here: a real
    one, under a real parent that waits for it) must be ended too."""
    control = RecordedWindowsControl(breaks_reach=breaks_reach)
    local = Probe(control=control)
    started = local.launch(LAUNCHER, str(tmp_path / "logs" / "launcher.log"))
    reaper.adopt(started["pid"], started["create_time"])
    deadline = time.monotonic() + 20
    while not psutil.Process(started["pid"]).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(started["pid"]).children()[0]
    reaper.adopt(child.pid, child.create_time())
    assert local.send_signal(started["pid"], started["create_time"], sig) == {"outcome": "sent"}
    assert wait_dead(started["pid"]) and wait_dead(child.pid)


@pytest.mark.timeout(60)
def test_windows_never_touches_a_pid_that_is_another_process_now(reaper: ProcessReaper) -> None:
    """A recorded (pid, create_time) whose pid now runs something started later: neither asked nor
    terminated. The process is not a child of this probe, so only its create time tells (psutil's)."""
    other = reaper.popen(SLEEPER)
    control = RecordedWindowsControl(breaks_reach=False)
    local = Probe(control=control)
    earlier = psutil.Process(other.pid).create_time() - 5.0
    for sig in ("SIGTERM", "SIGKILL"):
        assert local.send_signal(other.pid, earlier, sig) == {"outcome": "gone"}
    assert control.asked == [] and other.poll() is None


def test_windows_break_helper_is_python_that_names_the_process_tree() -> None:
    argv = WindowsControl().break_argv(4242, [4243, 4250])
    assert argv[:3] == [sys.executable, "-I", "-c"] and argv[4:] == ["4242", "4243", "4250"]
    compile(argv[3], "<break helper>", "exec")  # it runs only on Windows (below); here: it is valid Python
    assert "GenerateConsoleCtrlEvent(1, pid)" in argv[3] and "GetConsoleProcessList" in argv[3]


@pytest.mark.timeout(60)
def test_windows_asks_the_helper_about_the_whole_tree_of_the_process(
        reaper: ProcessReaper, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper is told the process and its descendants (psutil's, of a real parent and child), so that
    it sends the break only where the console holds nothing else; what it answers is what ask_to_stop says."""
    parent = reaper.popen([sys.executable, "-c", "import subprocess, sys, time; "
                           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    deadline = time.monotonic() + 20
    while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(parent.pid).children()[0]
    reaper.adopt(child)
    ran: list[list[str]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append(argv)
        assert kwargs["creationflags"] == WindowsControl.popen_options()["creationflags"]
        return subprocess.CompletedProcess(argv, 1)

    monkeypatch.setattr(subprocess, "run", run)
    assert WindowsControl().ask_to_stop(parent.pid) is False
    assert [argv[4:] for argv in ran] == [[str(parent.pid), str(child.pid)]]


# --- on Windows itself --------------------------------------------------------------------------------------

windows_only = pytest.mark.skipif(os.name != "nt", reason="needs Windows' consoles and TerminateProcess")


@windows_only
@pytest.mark.timeout(60)
def test_on_windows_ctrl_break_stops_a_launched_child(tmp_path: Path, reaper: ProcessReaper) -> None:
    local = Probe()
    pid, create_time = launched(local, tmp_path, reaper)
    assert local.control.ask_to_stop(pid)  # type: ignore[union-attr]
    assert local.wait_gone([[pid, create_time]], 10.0) == {"alive": []}


@windows_only
@pytest.mark.timeout(60)
def test_on_windows_down_and_kill_stop_a_launched_child(tmp_path: Path, reaper: ProcessReaper) -> None:
    local = Probe()
    for sig in ("SIGTERM", "SIGKILL"):
        pid, create_time = launched(local, tmp_path, reaper)
        assert local.send_signal(pid, create_time, sig) == {"outcome": "sent"}
        assert local.wait_gone([[pid, create_time]], 10.0) == {"alive": []}
