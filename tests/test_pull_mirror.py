"""The pull's two halves without SSH: the probe's `pull_poll` on a real logdir, and the local mirror that
applies its answers. What goes over the wire in between is the same JSON (round-tripped here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tbctl import probe
from tbctl.hosts.base import Host
from tbctl.core.mirror import SourceMirror, safe_parts

pytestmark = pytest.mark.timeout(60)

EVENTS = "events.out.tfevents.1.host.1.0"


def poll(logdir: Path, mirror: SourceMirror, budget: int = 1 << 20) -> tuple[dict[str, Any], int]:
    """One poll as the wire carries it; (the answer, bytes fetched)."""
    sent = mirror.known()
    answer = json.loads(json.dumps(probe.pull_poll(str(logdir), known=sent, budget=budget)))
    return answer, mirror.apply(answer, sent).fetched


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    (tmp_path / "host" / "runs" / "a").mkdir(parents=True)
    return tmp_path / "host" / "runs"


@pytest.fixture
def mirror(tmp_path: Path) -> SourceMirror:
    return SourceMirror.open(tmp_path / "mirror" / "h1", tmp_path / "index" / "h1.json")


def test_appends_only_what_was_appended(host_dir: Path, mirror: SourceMirror) -> None:
    path = host_dir / "a" / EVENTS
    path.write_bytes(b"x" * 100)
    assert poll(host_dir, mirror)[1] == 100
    with open(path, "ab") as f:
        f.write(b"y" * 40)
    assert poll(host_dir, mirror)[1] == 40
    assert (mirror.directory / "a" / EVENTS).read_bytes() == path.read_bytes()
    answer, fetched = poll(host_dir, mirror)  # nothing new: the answer only counts the file
    assert fetched == 0 and answer["files"] == [] and answer["unchanged"] == 1
    assert len(json.dumps(answer)) < 300


def test_a_replaced_or_shrunk_file_becomes_a_new_local_file(host_dir: Path, mirror: SourceMirror) -> None:
    path = host_dir / "a" / EVENTS
    path.write_bytes(b"old" * 10)
    poll(host_dir, mirror)
    tmp = host_dir / "a" / ".tmp"
    tmp.write_bytes(b"new" * 20)
    os.replace(tmp, path)  # rsync: a new inode under the old name
    poll(host_dir, mirror)
    assert (mirror.directory / "a" / EVENTS).read_bytes() == b"old" * 10  # never rewritten
    assert (mirror.directory / "a" / f"{EVENTS}.2").read_bytes() == b"new" * 20
    with open(path, "r+b") as f:  # truncated in place, then written again
        f.truncate(0)
        f.write(b"z" * 5)
    poll(host_dir, mirror)
    assert (mirror.directory / "a" / f"{EVENTS}.3").read_bytes() == b"z" * 5
    assert sorted(p.name for p in (mirror.directory / "a").iterdir()) == [EVENTS, f"{EVENTS}.2", f"{EVENTS}.3"]


def test_the_budget_spreads_a_big_first_sync_over_polls(host_dir: Path, mirror: SourceMirror) -> None:
    data = os.urandom(250_000)
    (host_dir / "a" / EVENTS).write_bytes(data)
    pendings = []
    while True:
        answer, fetched = poll(host_dir, mirror, budget=100_000)
        assert fetched <= 100_000
        pendings.append(answer["pending"])
        if not answer["pending"]:
            break
    assert pendings == [150_000, 50_000, 0]
    assert (mirror.directory / "a" / EVENTS).read_bytes() == data


def test_resumes_from_the_mirror_after_a_restart(host_dir: Path, mirror: SourceMirror, tmp_path: Path) -> None:
    path = host_dir / "a" / EVENTS
    path.write_bytes(b"1" * 10)
    poll(host_dir, mirror)
    with open(path, "ab") as f:
        f.write(b"2" * 10)
    again = SourceMirror.open(mirror.directory, mirror.index_path)  # a new poller: the process restarted
    assert poll(host_dir, again)[1] == 10
    assert (mirror.directory / "a" / EVENTS).read_bytes() == path.read_bytes()


def test_a_stale_answer_is_not_appended_twice(host_dir: Path, mirror: SourceMirror) -> None:
    """Two pollers of one mirror (a foreground `up` and a background one): the second answer for the same
    bytes starts where the mirror no longer ends, and is dropped."""
    path = host_dir / "a" / EVENTS
    path.write_bytes(b"a" * 10)
    sent = mirror.known()
    answer = json.loads(json.dumps(probe.pull_poll(str(host_dir), known=sent)))
    assert mirror.apply(answer, sent).fetched == 10
    applied = mirror.apply(answer, sent)
    assert applied.fetched == 0 and applied.errors
    assert (mirror.directory / "a" / EVENTS).read_bytes() == b"a" * 10


def test_deleted_files_stay_in_the_mirror_marked_gone(host_dir: Path, mirror: SourceMirror) -> None:
    path = host_dir / "a" / EVENTS
    path.write_bytes(b"a" * 10)
    poll(host_dir, mirror)
    path.unlink()
    answer, _ = poll(host_dir, mirror)
    assert answer["gone"] == [f"a/{EVENTS}"]
    assert mirror.gone_count == 1 and (mirror.directory / "a" / EVENTS).exists()


def test_only_what_tensorboard_reads_is_pulled(host_dir: Path, mirror: SourceMirror) -> None:
    (host_dir / "a" / EVENTS).write_bytes(b"e")
    (host_dir / "a" / "projector_config.pbtxt").write_text("embeddings {}")
    (host_dir / "a" / "plugins" / "text").mkdir(parents=True)
    (host_dir / "a" / "plugins" / "text" / "asset.json").write_text("{}")
    (host_dir / "a" / "model.ckpt").write_bytes(b"big" * 1000)
    poll(host_dir, mirror)
    got = sorted(str(p.relative_to(mirror.directory)) for p in mirror.directory.rglob("*") if p.is_file())
    assert got == [f"a/{EVENTS}", "a/plugins/text/asset.json", "a/projector_config.pbtxt"]
    (host_dir / "a" / "projector_config.pbtxt").write_text("embeddings { tensor_name: 'x' }")
    poll(host_dir, mirror)  # a small file that changed is fetched whole and renamed into place
    assert (mirror.directory / "a" / "projector_config.pbtxt").read_text() == "embeddings { tensor_name: 'x' }"


def test_the_probe_reads_nothing_outside_the_logdir(host_dir: Path, mirror: SourceMirror, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    (secret / "run").mkdir(parents=True)
    (secret / "run" / EVENTS).write_bytes(b"secret")
    (host_dir / "a" / "link").symlink_to(secret)  # a symlinked directory
    (host_dir / "a" / f"{EVENTS}.lnk").symlink_to(secret / "run" / EVENTS)  # a symlinked file
    answer, fetched = poll(host_dir, mirror)
    assert answer["files"] == [] and fetched == 0


@pytest.mark.parametrize("path", ["../escape.tfevents", "/abs.tfevents", "a/../../x.tfevents", "a\\..\\x.tfevents",
                                  "a//x.tfevents", "./x.tfevents", "a/\x00.tfevents", ""])
def test_a_hostile_host_cannot_make_tbctl_write_outside_the_mirror(mirror: SourceMirror, tmp_path: Path,
                                                                  path: str) -> None:
    assert safe_parts(path) is None
    row = {"path": path, "dev": 1, "ino": 2, "size": 1, "mtime": 0.0, "offset": 0, "length": 1, "data": "eA==",
           "encoding": "raw"}
    before = sorted(tmp_path.rglob("*"))
    applied = mirror.apply({"files": [row], "gone": [], "pending": 0}, {})
    assert applied.fetched == 0 and applied.errors
    assert sorted(tmp_path.rglob("*")) == before


def test_a_symlink_planted_in_the_mirror_is_not_written_through(mirror: SourceMirror, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (mirror.directory / "run").symlink_to(outside)
    row = {"path": f"run/{EVENTS}", "dev": 1, "ino": 2, "size": 1, "mtime": 0.0, "offset": 0, "length": 1,
           "data": "eA==", "encoding": "raw"}
    assert mirror.apply({"files": [row], "gone": [], "pending": 0}, {}).errors
    assert list(outside.iterdir()) == []
    (mirror.directory / "f").mkdir()
    (mirror.directory / "f" / EVENTS).symlink_to(outside / "target")  # the file itself: written beside it
    row["path"] = f"f/{EVENTS}"
    mirror.apply({"files": [row], "gone": [], "pending": 0}, {})
    assert list(outside.iterdir()) == []
    assert (mirror.directory / "f" / f"{EVENTS}.2").read_bytes() == b"x"


def test_sources_are_parsed_as_scp_does_and_labelled_apart(tmp_path: Path) -> None:
    from tbctl.config import load_settings
    from tbctl.core.pull import parse_sources, pull_id

    settings = load_settings({"TBCTL_CONFIG": str(tmp_path / "none.toml"), "TBCTL_LOGDIR": "exp/runs"})
    got = parse_sources(["gpu1:runs", "me@box:2222:~/runs", "gpu1:old/runs", "gpu2", "gpu1:runs"], settings)
    assert [(s.host, s.logdir, s.label) for s in got] == [
        ("gpu1", "runs", "gpu1"), ("me@box:2222", "~/runs", got[1].label), ("gpu1", "old/runs", "gpu1-2"),
        ("gpu2", "exp/runs", "gpu2")]
    assert safe_parts(got[1].label) == [got[1].label] and not got[1].label.startswith(".")
    assert pull_id(got) == pull_id(parse_sources(["gpu1:runs", "me@box:2222:~/runs", "gpu1:old/runs", "gpu2"], settings))


@pytest.mark.parametrize("args", [["--pull", "-oProxyCommand=x:runs"], ["--pull", "h1:runs", "--new"],
                                  ["--pull", "h1:runs", "--host", "h1"], ["--pull", "h1:runs", "runs"],
                                  ["--pulls"], ["--pull", "h1:runs", "--private"]])
def test_pull_usage_errors(cli: Any, args: list[str]) -> None:
    assert cli("up", *args, exit_code=2).stderr.startswith("tbctl: ")


class RecordingHost(Host):
    """This machine's probe, in-process, keeping each pull_poll request as it would travel."""

    name = "localhost"
    log_dir = user = ""  # not asked here

    def __init__(self) -> None:
        self.probe = probe.Probe()
        self.requests: list[dict[str, Any]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.requests.append(json.loads(json.dumps(args)))
        return json.loads(json.dumps(self.probe.handle(op, args)))


def test_an_idle_poll_does_not_resend_what_the_mirror_holds(host_dir: Path, tmp_path: Path) -> None:
    from tbctl.core.pulling import SourcePoller
    from tbctl.records import PullSource
    from tbctl.state import StateStore

    for i in range(50):
        (host_dir / f"run{i}").mkdir()
        (host_dir / f"run{i}" / EVENTS).write_bytes(b"x" * 10)
    poller = SourcePoller(StateStore(tmp_path / "state"), "p", PullSource("h", str(host_dir), "h"), tmp_path / "m",
                          interval=1.0, budget=1 << 20)
    host = RecordingHost()
    poller.poll(host)  # the first: the map goes (empty)
    with open(host_dir / "run3" / EVENTS, "ab") as f:
        f.write(b"y" * 5)
    assert poller.poll(host).fetched == 505
    poller.poll(host)
    assert [r["known"] is None for r in host.requests] == [False, True, True]
    assert len(json.dumps(host.requests[-1])) < 200
    probe._PULL_KNOWN.clear()  # a new connection: a new probe, which holds no map
    with open(host_dir / "run7" / EVENTS, "ab") as f:
        f.write(b"z" * 3)
    assert poller.poll(host).fetched == 508
    assert [r["known"] is None for r in host.requests[3:]] == [True, False]  # asked again, then sent whole
    assert (tmp_path / "m" / "h" / "run7" / EVENTS).read_bytes() == b"x" * 10 + b"z" * 3


def test_a_plugin_file_bigger_than_a_poll_is_reported_not_pulled_forever(host_dir: Path, mirror: SourceMirror) -> None:
    (host_dir / "a" / "projector_config.pbtxt").write_bytes(b"p" * 500)
    (host_dir / "a" / EVENTS).write_bytes(b"e" * 10)
    answer, fetched = poll(host_dir, mirror, budget=100)
    assert fetched == 10 and answer["pending"] == 0
    assert answer["errors"] == ["a/projector_config.pbtxt: 500 bytes, more than one poll may fetch; not pulled"]


def test_a_compressed_answer_cannot_inflate_beyond_its_length(mirror: SourceMirror) -> None:
    import base64
    import zlib

    bomb = base64.b64encode(zlib.compress(b"\0" * 10_000_000)).decode()
    row = {"path": f"a/{EVENTS}", "dev": 1, "ino": 2, "size": 10, "mtime": 0.0, "offset": 0, "length": 10,
           "data": bomb, "encoding": "zlib"}
    import tracemalloc

    tracemalloc.start()
    try:
        applied = mirror.apply({"files": [row], "gone": [], "pending": 0}, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert applied.fetched == 0 and "length does not match" in applied.errors[0]
    assert peak < 1_000_000  # not the 10 MB it would inflate to


@pytest.mark.parametrize("line", ["up --pull h1:runs", "up --pulls"])
def test_the_notebook_magic_refuses_pull(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`%tbctl up` serves one logdir in the cell; a pull polls for as long as it runs, which a cell does not:
    refused, rather than --pull dropped and the default logdir served."""
    pytest.importorskip("IPython")
    from tbctl.notebook import tbctl_magic

    assert tbctl_magic(line) is None
    assert capsys.readouterr().err.startswith("tbctl: --pull and --pulls do not apply in a notebook")
