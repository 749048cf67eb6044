"""`tbctl up` against real TensorBoard processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Cli, tensorboard_pids_for
from tests.support.procs import ProcessReaper, free_port, http_get, start_listener, wait_until

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def test_up_serves_the_logdir_and_the_url_answers(cli: Cli, logdir: Path, port: int) -> None:
    result = cli.up(str(logdir), "--port", str(port))
    assert result["url"] == f"http://127.0.0.1:{port}/"
    assert result["reused"] is False
    inst = result["instance"]
    assert inst["logdir"] == str(logdir.resolve()) and inst["started_by"] == "tbctl"
    status, body = http_get(result["url"] + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(logdir.resolve())
    # the example runs are really there: the scalars dashboard has both runs
    status, body = http_get(result["url"] + "data/plugin/scalars/tags")
    assert status == 200 and set(json.loads(body)) == {"lr_0.1", "lr_0.01"}
    # loopback only
    proc = psutil.Process(inst["pid"])
    listens = [c for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listens and all(c.laddr.ip == "127.0.0.1" for c in listens)
    # detached: its own session, output to a log file under the state dir
    assert os.getsid(inst["pid"]) == inst["pid"]
    assert Path(inst["log_path"]).is_file()


def test_up_reuses_a_live_instance_unless_new(cli: Cli, logdir: Path, port: int) -> None:
    first = cli.up(str(logdir), "--port", str(port))
    again = cli("up", str(logdir), "--port", str(port))
    assert "reusing" in again.stderr and again.stdout.strip() == first["url"]
    second = cli.up(str(logdir), "--port", str(port), "--new")
    assert second["reused"] is False and second["instance"]["pid"] != first["instance"]["pid"]
    assert second["instance"]["port"] != port  # the first still holds it
    assert sorted(tensorboard_pids_for(logdir)) == sorted([first["instance"]["pid"], second["instance"]["pid"]])


def test_up_reuses_by_resolved_path(cli: Cli, logdir: Path, port: int, monkeypatch) -> None:
    first = cli.up(str(logdir), "--port", str(port))
    monkeypatch.chdir(logdir.parent)
    again = cli.up("runs")  # relative, same directory
    assert again["reused"] is True and again["instance"]["pid"] == first["instance"]["pid"]


def test_up_skips_a_port_held_by_another_server_and_says_by_whom(
    cli: Cli, reaper: ProcessReaper, logdir: Path, port: int
) -> None:
    holder = start_listener(reaper, port)
    result = cli("up", str(logdir), "--port", str(port), "--json")
    data = result.json()
    assert data["instance"]["port"] != port
    assert f"port {port} is held by pid {holder.pid}" in result.stderr
    assert holder.poll() is None  # never silently killed
    assert data["port_note"]


def test_up_skips_a_port_held_only_on_ipv6(cli: Cli, reaper: ProcessReaper, logdir: Path) -> None:
    """A browser asking for localhost may try ::1 first: a port held there only is not free."""
    port = free_port(socket.AF_INET6)
    holder = start_listener(reaper, port, family=socket.AF_INET6)
    data = cli.up(str(logdir), "--port", str(port))
    assert data["instance"]["port"] != port
    assert str(holder.pid) in data["port_note"]


def test_concurrent_ups_of_one_logdir_end_with_one_instance(reaper: ProcessReaper, logdir: Path, port: int, state_dir: Path) -> None:
    """Two `tbctl up` started at the same moment (real processes, the installed entry point)."""
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    cmd = [sys.executable, "-m", "tbctl", "up", "--json", str(logdir), "--port", str(port)]
    procs = [reaper.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err.decode()
        outs.append(json.loads(out))
    for o in outs:
        reaper.adopt(o["instance"]["pid"], o["instance"]["create_time"])
    assert {o["instance"]["pid"] for o in outs} == set(tensorboard_pids_for(logdir))
    assert len(tensorboard_pids_for(logdir)) == 1
    assert sorted(o["reused"] for o in outs) == [False, True]


def test_up_of_a_missing_logdir_warns_and_still_serves(cli: Cli, tmp_path: Path, port: int) -> None:
    missing = tmp_path / "not-yet"
    result = cli("up", str(missing), "--port", str(port), "--json")
    assert "does not exist yet" in result.stderr
    assert http_get(result.json()["url"] + "data/logdir")[0] == 200


def test_up_passes_extra_tensorboard_flags(cli: Cli, logdir: Path, port: int) -> None:
    data = cli.up(str(logdir), "--port", str(port), "--", "--path_prefix", "/tb", "--reload_interval", "7")
    assert data["url"] == f"http://127.0.0.1:{port}/tb/"
    assert "--reload_interval" in data["instance"]["cmdline"]
    assert http_get(data["url"] + "data/logdir")[0] == 200


def test_a_tensorboard_that_dies_gives_exit_6_with_its_log_and_leaves_nothing(cli: Cli, tmp_path: Path, port: int) -> None:
    fake = tmp_path / "tensorboard"
    fake.write_text("#!/bin/sh\necho 'E1123 fatal: simulated crash while loading plugins' >&2\nexit 3\n")
    fake.chmod(0o755)
    result = cli("up", str(tmp_path), "--port", str(port), "--tensorboard", str(fake), exit_code=6)
    assert "exited before it was ready" in result.stderr
    assert "simulated crash" in result.stderr


def test_a_tensorboard_that_never_answers_times_out_and_is_stopped(cli: Cli, logdir: Path, tmp_path: Path, port: int) -> None:
    """A real process that never serves (sleeps, ignoring SIGTERM): timeout → exit 6, and it is killed."""
    fake = tmp_path / "tensorboard"
    fake.write_text(f"#!{sys.executable}\nimport signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('loading…', flush=True)\ntime.sleep(600)\n")
    fake.chmod(0o755)
    started = time.monotonic()
    result = cli("up", str(logdir), "--port", str(port), "--tensorboard", str(fake), "--timeout", "1", exit_code=6)
    assert "did not answer within 1 s" in result.stderr and "loading" in result.stderr
    assert time.monotonic() - started < 15
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(fake) in (p.info["cmdline"] or [])]


def test_ctrl_c_while_waiting_exits_130_and_leaves_nothing(reaper: ProcessReaper, tmp_path: Path, state_dir: Path, port: int) -> None:
    fake = tmp_path / "tensorboard"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    fake.chmod(0o755)
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    proc = reaper.popen([sys.executable, "-m", "tbctl", "up", str(tmp_path), "--port", str(port), "--tensorboard", str(fake)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    def fake_running() -> bool:  # the fake itself, not tbctl (whose own argv names it after --tensorboard)
        return any(p.info["cmdline"][1:2] == [str(fake)] for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"])

    assert wait_until(fake_running, 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert wait_until(lambda: not fake_running(), 10)


def test_two_launches_with_one_log_name_keep_separate_logs(tmp_path: Path) -> None:
    """Two TensorBoards launched on one port within one second are given the same log name by `up`;
    the probe must never open an existing log for a new launch, so neither output is lost."""
    from tbctl import probe

    log = tmp_path / "logs" / "tensorboard-6006-20261123-091240.log"
    local = probe.Probe()
    launched = [local.launch([sys.executable, "-c", f"print('output of launch {n}')"], str(log)) for n in (1, 2)]
    assert not local.wait_gone([[a["pid"], a["create_time"]] for a in launched], 10)["alive"]
    paths = [Path(a["log_path"]) for a in launched]
    assert paths[0] == log and paths[1] != log and paths[1].parent == log.parent
    assert paths[1].name.startswith("tensorboard-6006-20261123-091240") and paths[1].suffix == ".log"
    assert [p.read_text() for p in paths] == ["output of launch 1\n", "output of launch 2\n"]


def test_up_of_a_regular_file_says_it_is_not_a_directory_and_exits_2(cli: Cli, reaper: ProcessReaper, tmp_path: Path,
                                                                     port: int) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a logdir\n")
    try:
        err = cli("up", str(afile), "--port", str(port), exit_code=2).stderr
    finally:  # one served in spite of it must not outlive the test
        for pid in tensorboard_pids_for(afile):
            reaper.adopt(pid)
    assert f"logdir {afile} is not a directory" in err and "does not exist yet" not in err


def test_remote_up_of_a_regular_file_says_it_is_not_a_directory_and_exits_2(ssh_env, cli: Cli, tmp_path: Path) -> None:
    afile = tmp_path / "afile"  # the remote shares this filesystem
    afile.write_text("not a logdir\n")
    tensorboard = str(Path(sys.executable).parent / "tensorboard")
    err = cli("up", "--host", ssh_env.alias, str(afile), "--tensorboard", tensorboard, exit_code=2).stderr
    assert f"logdir {afile} is not a directory on {ssh_env.alias}" in err and "does not exist yet" not in err


def _free_run(length: int) -> int:
    """The first of `length` consecutive ports that are all free now."""
    for _ in range(50):
        first = free_port()
        if first + length < 65536:
            try:
                for p in range(first, first + length):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", p))
                return first
            except OSError:
                continue
    raise RuntimeError("no run of free ports")


def test_up_names_every_port_it_skipped_and_who_held_it_before_starting(
    cli: Cli, reaper: ProcessReaper, logdir: Path, tmp_path: Path
) -> None:
    from tests.support.procs import start_plain_tensorboard

    first = _free_run(3)
    other = tmp_path / "other-runs"
    other.mkdir()
    tb = start_plain_tensorboard(reaper, other, first)
    listener = start_listener(reaper, first + 1)
    result = cli("up", "--json", str(logdir), "--port", str(first))
    reaper.adopt(result.json()["instance"]["pid"])
    assert result.json()["instance"]["port"] == first + 2
    note = result.json()["port_note"]
    # the part that tells TensorBoards apart (its logdir), not the path of the program cut short
    assert f"port {first} is held by pid {tb.pid} (tensorboard --logdir {other}" in note
    assert "/bin/tensorboard" not in note
    assert f", {first + 1} by pid {listener.pid} (" in note and note.endswith(f"; using {first + 2}")
    lines = result.stderr.splitlines()
    noted = next(i for i, line in enumerate(lines) if f"port {first} is held by" in line)
    starting = next(i for i, line in enumerate(lines) if line.startswith("starting TensorBoard on"))
    assert noted < starting and lines[starting].endswith(f":{first + 2}"), result.stderr
