"""Pid safety: a process is known by (pid, start), a wall-clock step does not change who is who, and a
pid reused between the identity check and the signal is never hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, alive, wait_until
from tbctl import probe
from tbctl.core.down import _stop_forwarded_instances
from tbctl.hosts.local import LocalHost
from tbctl.records import ForwardRecord
from tbctl.state import StateStore

STEP = 3600.0  # seconds the wall clock is stepped forward


def step_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the wall clock were stepped forward an hour now: /proc/stat's btime moves with the wall clock,
    and the probe derives create times from it. Stepping the real clock would disturb everything else on
    the machine, so the btime the probe read is shifted instead."""
    stepped = probe.ProcBackend().boot_time() + STEP
    monkeypatch.setattr(probe.ProcBackend, "boot_time", lambda self: stepped)


def _forward(pid: int, create_time: float) -> ForwardRecord:
    return ForwardRecord(host="localhost", local_port=1, remote_port=2, instance_pid=pid,
                         instance_create_time=create_time, stop_instance=True)


def test_a_forward_stops_only_its_own_tensorboard_not_one_that_got_its_pid(cli: Cli, logdir: Path, port: int,
                                                                            state_dir: Path) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    store = StateStore(state_dir)
    # The forward was made for an earlier process with this pid (it started 100 s before this one).
    outcomes, _ = _stop_forwarded_instances(lambda _name: LocalHost(state_dir), store,
                                            [_forward(inst["pid"], inst["create_time"] - 100)], force=False, timeout=5)
    assert outcomes == [] and alive(inst["pid"])
    outcomes, _ = _stop_forwarded_instances(lambda _name: LocalHost(state_dir), store,
                                            [_forward(inst["pid"], inst["create_time"])], force=False, timeout=5)
    assert [(o.instance.pid, o.outcome) for o in outcomes] == [(inst["pid"], "stopped")]


def test_a_wall_clock_step_does_not_make_a_live_instance_look_gone(cli: Cli, logdir: Path, port: int,
                                                                    state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    step_the_clock(monkeypatch)
    shown = probe.ProcBackend().proc_info(inst["pid"])
    assert shown is not None and shown["create_time"] == pytest.approx(inst["create_time"] + STEP, abs=0.05)
    rows = [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == inst["pid"] or r["port"] == port]
    assert [(r["status"], r["started_by"], r["log_path"]) for r in rows] == [("serving", "tbctl", inst["log_path"])]
    assert cli("logs", str(port), "--json").json()["running"] is True
    outcomes, _ = _stop_forwarded_instances(lambda _name: LocalHost(state_dir), StateStore(state_dir),
                                            [_forward(inst["pid"], inst["create_time"])], force=False, timeout=5)
    assert [(o.instance.pid, o.outcome) for o in outcomes] == [(inst["pid"], "stopped")]
    assert not StateStore(state_dir).load()


def test_start_ticks_identify_a_process_whatever_the_wall_clock(reaper: ProcessReaper,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    proc = reaper.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    seen = probe.ProcBackend()
    before = seen.proc_info(proc.pid)
    assert before is not None and isinstance(before["start_ticks"], int)
    step_the_clock(monkeypatch)
    after = seen.proc_info(proc.pid)
    assert after is not None and after["start_ticks"] == before["start_ticks"]
    assert after["create_time"] == pytest.approx(before["create_time"] + STEP)  # shown as epoch seconds


# --- a pid reused between the identity check and the signal ---

_NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def _spawn_with_pid(reaper: ProcessReaper, pid: int) -> subprocess.Popen | None:
    """A new process that gets `pid` (now free), the way pid reuse happens, forced through ns_last_pid
    (root only). None if another process on the machine took the pid first."""
    for _ in range(20):
        with open(_NS_LAST_PID, "w") as f:
            f.write(str(pid - 1))
        proc = reaper.popen([sys.executable, "-c", "import time; time.sleep(60)"])
        if proc.pid == pid:
            return proc
    return None


def test_a_pid_reused_after_the_identity_check_is_never_signalled(reaper: ProcessReaper,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        pytest.skip("no pidfd on this Python or kernel: the psutil-era check-then-kill is all there is")
    if not os.access(_NS_LAST_PID, os.W_OK):
        pytest.skip("reusing a chosen pid needs root (ns_last_pid)")
    target = reaper.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    local = probe.Probe()
    assert wait_until(lambda: local.backend.proc_info(target.pid) is not None, 5)
    identity = local.backend.proc_info(target.pid)
    assert identity is not None
    real_alive = local.alive
    reused: list[subprocess.Popen] = []

    # The one hook in this test (not a mock of what is tested): the race window between the identity
    # check and the signal lasts microseconds, so the test makes the pid reuse happen exactly there.
    # The processes, the pid reuse and the signal are all real.
    def alive_then_pid_reused(pid: int, create_time: float | None) -> bool:
        answer = real_alive(pid, create_time)
        if pid == target.pid and not reused:
            target.kill()
            target.wait()
            other = _spawn_with_pid(reaper, target.pid)
            if other is None:
                pytest.skip("another process took the freed pid first")
            reused.append(other)
        return answer

    monkeypatch.setattr(local, "alive", alive_then_pid_reused)
    answer = local.send_signal(target.pid, identity["create_time"], "SIGTERM")
    assert reused, "send_signal did not check the identity"
    time.sleep(0.2)
    assert reused[0].poll() is None, "the process that got the pid afterwards was signalled"
    assert answer["outcome"] == "gone"


def test_alive_by_start_ticks_survives_a_clock_step(reaper: ProcessReaper) -> None:
    """What a background forwarder asks of a forward's TensorBoard: its start in ticks since boot still
    names it when the create time recorded before a wall-clock step no longer matches."""
    from tbctl import probe

    proc = reaper.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    local = probe.Probe()
    info = local.backend.proc_info(proc.pid)
    assert info is not None and isinstance(info["start_ticks"], int)
    stepped = info["create_time"] - 3600.0  # recorded an hour "earlier" by a clock that was then set right
    assert not local.alive(proc.pid, stepped)
    assert local.alive(proc.pid, stepped, info["start_ticks"])
    assert not local.alive(proc.pid, stepped, info["start_ticks"] + 1)  # another start: another process
