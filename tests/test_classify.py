"""`classify`: how a probe scan (processes, info files) and tbctl's records become instances with a status,
shown on an in-memory FakeHost (tests/support/fake_host.py): each test runs in milliseconds. Last, that the
fake answers in the probe's own shapes, which is what makes these tests (and tests/test_decisions.py) mean
something about a real machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbctl.models import TensorBoardInstance
from tbctl.state import StateStore
from tbctl.tensorboard import classify
from tests.support.fake_host import OTHER_RUNS, RUNS, FakeHost, info_content, started


@pytest.fixture
def local() -> FakeHost:
    return FakeHost(directories=[RUNS, OTHER_RUNS])


def instances(host: FakeHost, store: StateStore | None = None) -> list[TensorBoardInstance]:
    records = store.for_host(host.name) if store is not None else []
    return classify(host.scan(), host=host.name, records=records)


def test_an_info_file_of_the_live_process_gives_its_port_and_serving(local: FakeHost) -> None:
    tb = local.add_tensorboard(RUNS, port=6006, extra_args=["--path_prefix", "/tb/"])
    [inst] = instances(local)
    assert (inst.pid, inst.port, inst.status, inst.started_by) == (tb.pid, 6006, "serving", "other")
    assert inst.info_file == f"/tmp/.tensorboard-info/pid-{tb.pid}.info" and inst.logdir == RUNS
    assert inst.path_prefix == "/tb" and inst.bind == "127.0.0.1" and inst.user == "me"


def test_a_tensorboard_not_listening_yet_is_starting(local: FakeHost) -> None:
    local.add_tensorboard(RUNS, port=6006, listening=False)
    [inst] = instances(local)
    assert inst.status == "starting" and inst.port == 6006


def test_without_an_info_file_the_port_comes_from_the_command_line_or_the_socket(local: FakeHost) -> None:
    local.add_tensorboard(RUNS, port=6006, info_file=False)
    auto = local.add_process(["tensorboard", "--logdir", "runs", "--port", "0", "--bind_all"], cwd="/data",
                             listen=[("::", 6111)])
    by_pid = {i.pid: i for i in instances(local)}
    assert len(by_pid) == 2 and all(i.info_file is None and i.status == "serving" for i in by_pid.values())
    assert by_pid[auto.pid].port == 6111 and by_pid[auto.pid].bind == "::" and by_pid[auto.pid].logdir == RUNS


def test_an_info_file_whose_process_is_gone_is_stale(local: FakeHost) -> None:
    tb = local.add_tensorboard(RUNS, port=6006)
    local.exit(tb.pid, cleanly=False)
    [inst] = instances(local)
    assert (inst.status, inst.pid, inst.port, inst.note) == ("stale", tb.pid, 6006, "process is gone")
    assert inst.started_by == "other"


def test_an_info_file_of_a_reused_pid_is_stale_and_the_newcomer_listed_on_its_own(local: FakeHost) -> None:
    """The pid now belongs to a TensorBoard that started after the file was written, serving something else."""
    local.add_info_file(info_content(4321, port=6006, logdir=RUNS, start_time=1000.0))
    newcomer = local.add_tensorboard(OTHER_RUNS, port=6100, info_file=False, pid=4321, create_time=5000.0)
    by_status = {i.status: i for i in instances(local)}
    assert by_status["stale"].note == "pid now belongs to another process" and by_status["stale"].port == 6006
    assert by_status["serving"].pid == newcomer.pid and by_status["serving"].info_file is None


def test_an_info_file_is_matched_across_a_wall_clock_step_when_the_process_serves_what_it_says(
        local: FakeHost) -> None:
    local.add_info_file(info_content(4321, port=6006, logdir=RUNS, start_time=1000.0))
    local.add_tensorboard(RUNS, port=6006, info_file=False, pid=4321, create_time=5000.0)
    [inst] = instances(local)
    assert inst.status == "serving" and inst.info_file is not None


def test_another_users_info_file_and_a_damaged_one(local: FakeHost) -> None:
    theirs = local.add_tensorboard(RUNS, port=6006, user="alice")
    local.add_info_file(None, name="pid-77.info")  # half written: not JSON
    [inst] = instances(local)
    assert inst.user == "alice" and inst.pid == theirs.pid and inst.info_file is not None


def test_a_zombie_is_dead_and_its_info_file_stale(local: FakeHost) -> None:
    tb = local.add_tensorboard(RUNS, port=6006, zombie=True)
    [inst] = instances(local)
    assert inst.status == "stale" and inst.pid == tb.pid and inst.note == "process is gone"


def test_tbctls_record_makes_it_tbctls_and_outlives_the_process(local: FakeHost, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "fake-state")
    ours = started(local, store)
    theirs = local.add_tensorboard(OTHER_RUNS, port=6100)
    by_pid = {i.pid: i for i in instances(local, store)}
    assert by_pid[ours.pid].started_by == "tbctl" and by_pid[ours.pid].log_path == ours.log_path
    assert by_pid[theirs.pid].started_by == "other"
    local.exit(ours.pid or 0, cleanly=False)  # killed: the info file stays, and still leads to the record
    stale = {i.pid: i for i in instances(local, store)}[ours.pid]
    assert (stale.status, stale.started_by, stale.log_path) == ("stale", "tbctl", ours.log_path)
    local.remove_info_file(stale.info_file or "")  # what a SIGTERM'd TensorBoard does itself
    exited = {i.pid: i for i in instances(local, store)}[ours.pid]
    assert (exited.status, exited.started_by, exited.port, exited.user) == ("exited", "tbctl", 6006, "me")


def test_a_record_names_its_process_by_start_not_by_pid_alone(local: FakeHost, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "fake-state")
    """A process that got the recorded pid later is not tbctl's; start ticks decide where both sides have them."""
    ours = started(local, store)
    local.exit(ours.pid or 0, cleanly=True)
    reused = local.add_tensorboard(OTHER_RUNS, port=6100, pid=ours.pid, create_time=(ours.create_time or 0) + 60)
    by_status = {i.status: i for i in instances(local, store)}
    assert by_status["serving"].pid == reused.pid and by_status["serving"].started_by == "other"
    assert by_status["exited"].pid == ours.pid


# --- the fake itself -----------------------------------------------------------------------------------------


def test_the_fake_answers_in_the_shapes_the_probe_does(local: FakeHost, tmp_path: Path) -> None:
    """What the decisions above were shown is what a real machine would answer (same keys), so a change
    to the probe's answers shows here rather than as tests that pass against a fake of the past."""
    import os

    from tbctl.hosts.local import LocalHost

    real = LocalHost(tmp_path)
    tb = local.add_tensorboard(RUNS, port=6006)
    me = os.getpid()
    for op, fake_args, real_args in [
        ("scan", {}, {}),
        ("free_port", {"candidates": [6006]}, {"candidates": [6006]}),
        ("resolve_path", {"path": RUNS}, {"path": str(tmp_path)}),
        ("alive", {"pid": tb.pid, "create_time": None}, {"pid": me, "create_time": None}),
        ("proc_info", {"pid": tb.pid}, {"pid": me}),
        ("wait_gone", {"procs": [[tb.pid, None]], "timeout": 0}, {"procs": [[me, None]], "timeout": 0}),
        ("tail", {"path": "/nowhere"}, {"path": str(tmp_path / "log")}),
        ("private_dir", {"path": "/home/me"}, {"path": str(tmp_path)}),
        ("send_signal", {"pid": 1, "create_time": None, "sig": "SIGTERM"}, {"pid": 1, "create_time": None,
                                                                             "sig": "SIGTERM"}),
    ]:
        fake, answer = local.call(op, **fake_args), real.call(op, **real_args)
        assert set(fake) - {"error"} == set(answer) - {"error"}, op  # "error" only where something failed
    process_keys = set(real.call("proc_info", pid=me)["info"])
    assert set(local.call("proc_info", pid=tb.pid)["info"]) == process_keys
    scanned = set(local.call("scan")["processes"][0])
    assert scanned == process_keys | {"listen", "logdir_abs", "sockets_visible", "user_listen_ports"}


def test_every_status_says_whether_it_runs_may_answer_or_has_ended() -> None:
    """One table (tbctl/models.py) answers these questions for every command; a new status must join it."""
    from typing import get_args

    from tbctl.models import ENDED, MAY_ANSWER, RUNNING, Status

    assert set(get_args(Status)) == RUNNING | ENDED | {"unknown"}
    assert not RUNNING & ENDED and RUNNING < MAY_ANSWER and not MAY_ANSWER & ENDED


def test_a_launcher_chain_is_one_tensorboard_known_by_its_first_pid(local: FakeHost) -> None:
    """On Windows, pip's Scripts\\tensorboard.exe runs `python.exe Scripts\\tensorboard.exe ARGS` as its child
    and waits, and a venv's python.exe runs the base python the same way again: three processes with the
    same arguments. One TensorBoard: the launcher's pid (what a launch returns and tbctl records), the
    last one's sockets and info file. Another user's process is never folded into yours."""
    args = ["--logdir", RUNS, "--port", "6006"]
    launcher = local.add_process([r"C:\venv\Scripts\tensorboard.exe", *args])
    redirector = local.add_process([r"C:\venv\Scripts\python.exe", r"C:\venv\Scripts\tensorboard.exe", *args])
    real = local.add_tensorboard(RUNS, port=6006)
    theirs = local.add_process([r"C:\Python312\python.exe", r"C:\venv\Scripts\tensorboard.exe", *args], user="other")
    scan = local.scan()
    parents = {redirector.pid: launcher.pid, real.pid: redirector.pid, theirs.pid: real.pid}
    scan = {**scan, "processes": [{**p, "ppid": parents.get(p["pid"], 1)} for p in scan["processes"]]}
    by_pid = {i.pid: i for i in classify(scan, host=local.name)}
    assert sorted(by_pid) == sorted([launcher.pid, theirs.pid]), by_pid
    inst = by_pid[launcher.pid]
    assert (inst.status, inst.port, inst.logdir) == ("serving", 6006, RUNS)
    assert inst.info_file == f"/tmp/.tensorboard-info/pid-{real.pid}.info"
    assert not any(i.status == "stale" for i in by_pid.values())
