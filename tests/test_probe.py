"""The probe's two ways of seeing a machine (/proc + sock_diag on Linux, psutil elsewhere) agree, and its
safety rules hold."""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path

import pytest

from tbctl import probe
from tests.support.procs import ProcessReaper, free_port, start_listener, start_plain_tensorboard


def test_linux_path_does_not_import_psutil() -> None:
    assert probe.psutil is None or not probe._HAS_PROC
    assert probe.whoami()["psutil"] is (probe.psutil is not None)


def test_proc_and_psutil_answers_agree(reaper: ProcessReaper, logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tb_port, v4, v6 = free_port(), free_port(), free_port(socket.AF_INET6)
    tb = start_plain_tensorboard(reaper, logdir, tb_port)
    start_listener(reaper, v4)
    start_listener(reaper, v6, family=socket.AF_INET6)
    proc_view = {p: probe.holders(p) for p in (tb_port, v4, v6)}
    proc_scan = probe.scan()
    monkeypatch.setenv("TBCTL_PROBE_PSUTIL", "1")
    forced = importlib.reload(probe)
    try:
        assert forced.psutil is not None
        ps_view = {p: forced.holders(p) for p in (tb_port, v4, v6)}
        ps_scan = forced.scan()
    finally:
        monkeypatch.delenv("TBCTL_PROBE_PSUTIL")
        importlib.reload(probe)

    def key(rows: list[dict]) -> list[tuple]:
        return sorted((r["pid"], r["family"], r["addr"], r["port"], r["username"], r["is_tensorboard"]) for r in rows)

    for port in (tb_port, v4, v6):
        assert key(proc_view[port]) == key(ps_view[port]) and proc_view[port]
    for a, b in zip(proc_view[tb_port], ps_view[tb_port]):
        assert abs(a["create_time"] - b["create_time"]) < 0.05
    mine = [p for p in proc_scan["processes"] if p["pid"] == tb.pid]
    theirs = [p for p in ps_scan["processes"] if p["pid"] == tb.pid]
    assert len(mine) == len(theirs) == 1
    for field in ("cmdline", "cwd", "username", "logdir_abs", "zombie"):
        assert mine[0][field] == theirs[0][field], field
    assert [(s["addr"], s["port"]) for s in mine[0]["listen"]] == [(s["addr"], s["port"]) for s in theirs[0]["listen"]]


def test_never_signals_pid_1_itself_or_its_parent() -> None:
    for pid in (1, os.getpid(), os.getppid()):
        assert probe.send_signal(pid, None, "SIGTERM") == {"outcome": "protected"}


def test_a_reused_pid_is_never_signalled(reaper: ProcessReaper) -> None:
    listener = start_listener(reaper, free_port())
    real = probe._proc_info(listener.pid)["create_time"]
    assert probe.send_signal(listener.pid, real - 100.0, "SIGTERM") == {"outcome": "gone"}  # "another" process
    assert listener.poll() is None
    assert probe.send_signal(listener.pid, real, "SIGTERM") == {"outcome": "sent"}
    assert listener.wait(timeout=5) is not None


def test_recognises_tensorboard_command_lines_and_not_lookalikes() -> None:
    yes = [
        ["/venv/bin/python3", "/venv/bin/tensorboard", "--logdir", "runs"],
        ["/venv/bin/tensorboard", "serve", "--logdir=runs"],
        ["python", "-m", "tensorboard.main", "--logdir", "x"],
        ["python3", "-u", "-m", "tensorboard", "--port", "6006"],
    ]
    no = [
        ["/venv/lib/python3.11/site-packages/tensorboard_data_server/bin/server", "--port=0", "--die-after-stdin"],
        ["python", "-c", "import tensorboard; print('tensorboard')"],
        ["vim", "tensorboard"],
        [],
    ]
    assert all(probe.tensorboard_args(c) is not None for c in yes)
    assert all(probe.tensorboard_args(c) is None for c in no)
    assert probe.flag_value(["--logdir", "a", "--logdir=b"], "logdir") == "b"


def test_remove_info_file_refuses_anything_else(tmp_path: Path) -> None:
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    assert probe.remove_info_file(str(victim))["removed"] is False
    assert victim.exists()
