"""The state files' records: each survives a round trip through JSON, reads what an older tbctl wrote (keys
missing) and what a newer one wrote (keys it does not know, kept when the file is rewritten), and refuses a
line without what identifies it, which the store then sets aside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tbctl.hosts.link import LinkState
from tbctl.models import as_json
from tbctl.records import ForwarderStatus, ForwardRecord, ForwardState, InstanceRecord, JobStep
from tbctl.state import StateStore

INSTANCE = InstanceRecord(host="localhost", pid=4242, create_time=1700000000.25, port=6006, logdir="/runs",
                          log_path="/state/logs/tb.log", started_at=1700000001.5,
                          argv=("tensorboard", "--logdir", "/runs", "--port", "6006"), start_ticks=123456)
STEP = InstanceRecord(host="login", pid=77, create_time=5.5, port=6010, logdir="/scratch/runs", log_path="/l.log",
                      started_at=6.0, argv=("tensorboard",), start_ticks=None,
                      job=JobStep(id="12", display="12", step="3", node="node1", node_host="login/node1",
                                  srun_pid=900, srun_create_time=4.0))
FORWARD = ForwardRecord(host="gpu1", local_port=16006, remote_port=6006, instance_pid=4242,
                        instance_create_time=1700000000.25, instance_start_ticks=123456, logdir="/runs",
                        path_prefix="/tb", stop_instance=True, created_at=1700000002.0)
STATUS = ForwarderStatus(host="gpu1", pid=999, create_time=1700000003.0, log_path="/state/forwarders/gpu1.log",
                         started_at=1700000003.5, link=LinkState("up", 1700000004.0, 0, "", "your ControlMaster"),
                         forwards=(ForwardState(FORWARD, listening=True, active_connections=2, served=5,
                                                tensorboard="serving"),), backend="openssh")

# What tbctl wrote to its state files before this module existed, key for key: a reader must not need more.
INSTANCE_KEYS = {"host", "pid", "create_time", "port", "logdir", "log_path", "started_at", "argv", "start_ticks"}
JOB_KEYS = {"id", "display", "step", "node", "node_host", "srun_pid", "srun_create_time"}
FORWARD_KEYS = {"host", "local_port", "remote_port", "instance_pid", "instance_create_time", "instance_start_ticks",
                "logdir", "path_prefix", "stop_instance", "created_at", "remote_socket"}
STATUS_KEYS = {"host", "pid", "create_time", "log_path", "started_at", "link", "forwards", "backend"}
ROW_KEYS = FORWARD_KEYS | {"listening", "error", "active_connections", "served", "tensorboard"}


def _through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("record", [INSTANCE, STEP, FORWARD, STATUS], ids=["instance", "job step", "forward", "status"])
def test_a_record_survives_a_round_trip_through_json(record: Any) -> None:
    assert type(record).from_json(_through_json(record.to_json())) == record


def test_the_keys_on_disk_are_the_ones_tbctl_always_wrote() -> None:
    assert set(INSTANCE.to_json()) == INSTANCE_KEYS  # no "job" key outside Slurm
    assert set(STEP.to_json()) == INSTANCE_KEYS | {"job"} and set(STEP.to_json()["job"]) == JOB_KEYS
    assert set(FORWARD.to_json()) == FORWARD_KEYS
    status = STATUS.to_json()
    assert set(status) == STATUS_KEYS and set(status["link"]) == {"state", "since", "attempts", "error", "via"}
    assert set(status["forwards"][0]) == ROW_KEYS


def test_a_closed_forward_prints_the_keys_it_is_stored_with() -> None:
    """`down --json` prints the forwards it ended: the record's keys, not its bookkeeping of unknown ones."""
    newer = ForwardRecord.from_json({**FORWARD.to_json(), "added_later": 1})
    assert as_json(newer) == FORWARD.to_json()


def test_an_older_record_without_the_newer_keys_still_loads() -> None:
    old = InstanceRecord.from_json({"host": "localhost", "pid": 1, "create_time": 2, "port": 6006, "argv": ["tb"]})
    assert (old.start_ticks, old.job, old.started_at, old.log_path) == (None, None, None, None)
    assert old.create_time == 2.0 and old.argv == ("tb",)
    fwd = ForwardRecord.from_json({"host": "gpu1", "local_port": 16006, "remote_port": 6006})
    assert (fwd.instance_pid, fwd.instance_start_ticks, fwd.path_prefix, fwd.stop_instance, fwd.created_at,
            fwd.remote_socket) == (None, None, "", False, 0.0, None)
    status = ForwarderStatus.from_json({"host": "gpu1", "pid": 5})
    assert status.link is None and status.forwards == ()
    job = JobStep.from_json({"id": 12, "display": "12", "step": 0})  # numbers where strings are written now
    assert (job.id, job.step, job.node_host) == ("12", "0", None)


def test_unknown_keys_are_ignored_on_reading_and_kept_on_rewriting(tmp_path: Path) -> None:
    newer = {**STEP.to_json(), "from_the_future": {"a": 1}}
    newer["job"] = {**newer["job"], "array_task": 4}
    record = InstanceRecord.from_json(newer)
    assert record == STEP  # what this tbctl knows of it
    store = StateStore(tmp_path / "s")
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps(newer) + "\n")
    store.add(INSTANCE)  # rewrites the file
    lines = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert lines == [newer, INSTANCE.to_json()]
    row = {**FORWARD.to_json(), "listening": True, "error": "", "future_counter": 3}
    assert ForwarderStatus.from_json({**STATUS.to_json(), "forwards": [row], "extra": 1}).forwards[0].listening


@pytest.mark.parametrize("line", [
    {"pid": 1},  # no host
    {"host": "localhost", "pid": "1"},
    {"host": "localhost", "pid": True},
    {"host": "localhost", "pid": 1, "job": {"id": "12"}},  # a job without its step
    ["host", "pid"],
])
def test_an_instance_record_without_what_identifies_it_is_refused(line: Any) -> None:
    with pytest.raises(ValueError):
        InstanceRecord.from_json(line)


def test_a_forward_or_status_without_its_ports_or_pid_is_refused() -> None:
    for bad in ({"host": "gpu1", "local_port": 16006}, {"host": "gpu1", "local_port": "x", "remote_port": 1}):
        with pytest.raises(ValueError):
            ForwardRecord.from_json(bad)
    for bad_status in ({"host": "gpu1"}, {"host": "gpu1", "pid": 1, "forwards": [{"host": "gpu1"}]},
                       {"host": "gpu1", "pid": 1, "forwards": "none"}):
        with pytest.raises(ValueError):
            ForwarderStatus.from_json(bad_status)


def test_the_store_sets_aside_lines_that_are_no_record_and_keeps_the_rest(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    store.add_forward(FORWARD)
    text = store.forwards_path.read_text()
    store.forwards_path.write_text(text + json.dumps({"host": "gpu1", "local_port": 1}) + "\n[]\n")
    assert store.forwards() == [FORWARD]
    assert len(store.warnings) == 1 and "2 damaged line(s)" in store.warnings[0]


def test_a_status_the_store_cannot_read_is_ignored_with_a_warning(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    store.write_forwarder_status("gpu1", STATUS)
    store.forwarder_status_path("gpu2").write_text(json.dumps({"pid": 3}))  # no host
    assert store.forwarder_statuses() == [STATUS]
    assert store.warnings == [f"unreadable forwarder status {store.forwarder_status_path('gpu2')}; ignored"]
