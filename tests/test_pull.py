"""`up --pull`: runs from two real hosts (network namespaces with their own sshd, no tensorboard on their
PATH) in one local TensorBoard, while a writer process on each host appends a scalar a second.

The hosts are the test remote (h1) and its jump host (h2); their sessions share one HOME, so each host's
logdir is a directory of its own given by absolute path. Both run over the default SSH backend (OpenSSH):
pulling is the probe's ordinary request, the same over either backend, and every other remote test covers
both. The lag is watched for a minute, as a user would watch a dashboard: at 1 s per poll that is 60 polls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Cli
from tests.support import schemas
from tests.support.schemas import conforms
from tests.support.foreground import Foreground
from tests.support.forwarders import adopt_forwarders
from tests.support.procs import ProcessReaper, alive, http_get, wait_until
from tests.support.sshd import link_down, link_up, restart_sshd

pytestmark = pytest.mark.timeout(240)

INTERVAL = 1.0  # TBCTL_PULL_INTERVAL for these tests
WRITER = str(Path(__file__).parent / "support" / "event_writer.py")


def _ssh_config(remote: Any, path: Path) -> Path:
    """h1 = the remote, h2 = the jump host, as ssh_config aliases."""
    text = remote.server.ssh_config.read_text().replace(f"Host {remote.server.alias}", "Host h1")
    text += "\n" + remote.jump.ssh_config.read_text().replace(f"Host {remote.jump.alias}", "Host h2")
    path.write_text(text)
    path.chmod(0o600)
    return path


def _ns_listeners(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn"], capture_output=True, text=True, timeout=30)
    return sorted(line.split()[3] for line in out.stdout.splitlines())


def _over_ssh(config: Path, host: str, command: str) -> str:
    return subprocess.run(["ssh", "-F", str(config), "--", host, command], capture_output=True, text=True,
                          timeout=30).stdout


class Host:
    """One pulled host: its namespace, its logdir and the writer appending to a run there."""

    def __init__(self, name: str, ns: str, logdir: Path) -> None:
        self.name, self.ns, self.logdir = name, ns, logdir
        self.steps_file = logdir.parent / f"{name}-steps"
        self.writer: subprocess.Popen[bytes] | None = None

    def start_writer(self, reaper: ProcessReaper) -> None:
        (self.logdir / "train").mkdir(parents=True, exist_ok=True)
        self.writer = reaper.popen(["ip", "netns", "exec", self.ns, sys.executable, WRITER,
                                    str(self.logdir / "train"), str(self.steps_file)])

    def stop_writer(self) -> None:
        assert self.writer is not None
        self.writer.send_signal(signal.SIGTERM)
        self.writer.wait(10)

    def steps(self) -> list[tuple[int, float]]:
        if not self.steps_file.exists():
            return []
        return [(int(a), float(b)) for a, b in (line.split() for line in self.steps_file.read_text().splitlines())]

    def event_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.logdir.rglob("*tfevents*"))


@pytest.fixture
def pull_hosts(remote_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """h1 and h2 in tbctl's ssh_config, and polls every INTERVAL; the ssh_config's path."""
    if remote_server.netns is None or remote_server.jump_netns is None:
        pytest.skip("needs the remote and the jump host in network namespaces (root)")
    config = _ssh_config(remote_server, tmp_path / "ssh_config")
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("TBCTL_SSH", "openssh")
    monkeypatch.setenv("TBCTL_PULL_INTERVAL", str(INTERVAL))
    for alias in ("h1", "h2"):  # the hosts have python3 and no tensorboard
        assert "python3-here" in _over_ssh(config, alias, "command -v python3 >/dev/null && echo python3-here")
        assert _over_ssh(config, alias, "command -v tensorboard || echo absent").strip() == "absent"
    return config


@pytest.fixture
def pulled(remote_server: Any, pull_hosts: Path, tmp_path: Path, reaper: ProcessReaper,
           cli: Cli, state_dir: Path) -> Iterator[dict[str, Any]]:
    config = pull_hosts
    hosts = [Host("h1", remote_server.netns.name, tmp_path / "on-h1" / "runs"),
             Host("h2", remote_server.jump_netns.name, tmp_path / "on-h2" / "runs")]
    # a run replaced rsync-style later on: its first version is there before the pull starts
    replaced = hosts[1].logdir / "rsynced"
    replaced.mkdir(parents=True)
    _write_events(replaced / "events.out.tfevents.1.h2.1.0", range(5))
    listening = {h.ns: _ns_listeners(h.ns) for h in hosts}
    for h in hosts:
        h.start_writer(reaper)
    assert wait_until(lambda: all(len(h.steps()) >= 2 for h in hosts), 30)
    up = cli.up("--pull", f"h1:{hosts[0].logdir}", "--pull", f"h2:{hosts[1].logdir}", "--detach",
                "--port", "6870", "--", "--reload_interval", "1")
    adopt_forwarders(reaper, state_dir)
    try:
        yield {"hosts": hosts, "up": up, "url": up["url"], "listening": listening, "config": config,
               "replaced": replaced, "remote": remote_server}
    finally:
        for h in hosts:
            if h.writer is not None and h.writer.poll() is None:
                h.stop_writer()
        cli("down", "--all")


def _write_events(path: Path, steps: range, tag: str = "r") -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(path, "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        for step in steps:
            value = summary_pb2.Summary.Value(tag=tag, simple_value=float(step))
            writer.write(event_pb2.Event(wall_time=time.time(), step=step,
                                         summary=summary_pb2.Summary(value=[value])).SerializeToString())
        writer.flush()


def _get_json(url: str) -> Any:
    """What TensorBoard answers, or None while it does not (a refused or timed-out request is retried)."""
    try:
        status, body = http_get(url, timeout=5)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def _scalars(url: str, run: str, tag: str = "loss") -> list[list[float]]:
    return _get_json(f"{url}data/plugin/scalars/scalars?run={quote(run)}&tag={tag}") or []


def _runs(url: str) -> list[str]:
    return sorted(_get_json(url + "data/runs") or [])


def _steps_in(run: Path) -> set[int]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return {e.step for path in run.glob("*tfevents*") for e in EventFileLoader(str(path)).Load() if e.HasField("summary")}


def _waiting(flushed: list[tuple[int, float]], have: set[int], now: float) -> float:
    """How long the oldest flushed step missing from `have` has been waiting (0 when none is missing)."""
    return max((now - wall for step, wall in flushed if step not in have), default=0.0)


def _log(state_dir: Path, host: str) -> str:
    """The background process's log for `host`."""
    path = state_dir / "forwarders" / f"{host}.log"
    return path.read_text() if path.exists() else ""


def _pull_row(cli: Cli) -> dict[str, Any]:
    (pull,) = cli("ls", "--json").json()["pulls"]
    return pull


def test_two_hosts_one_dashboard_lag_bytes_and_no_listener(pulled: dict[str, Any], cli: Cli) -> None:
    url, hosts = pulled["url"], pulled["hosts"]
    assert wait_until(lambda: {"h1/train", "h2/train", "h2/rsynced"} <= set(_runs(url)), 30), _runs(url)
    # The lag: at each moment, how long the oldest step the writer has flushed but the mirror lacks has been
    # waiting (0 when it lacks none). At most 2 polls, and a little for this machine being busy. What
    # TensorBoard shows may lag more by its own reload (1 s here) and the time it takes to answer.
    mirror = Path(pulled["up"]["instance"]["logdir"])
    worst: dict[str, float] = {}
    shown: dict[str, float] = {}
    end = time.monotonic() + 60
    while time.monotonic() < end:
        for h in hosts:
            flushed = h.steps()  # read first: the mirror may only hold more than this, never less
            now = time.time()
            in_mirror = _steps_in(mirror / h.name / "train")
            in_tensorboard = {int(p[1]) for p in _scalars(url, f"{h.name}/train")}
            worst[h.name] = max(worst.get(h.name, 0.0), _waiting(flushed, in_mirror, now))
            shown[h.name] = max(shown.get(h.name, 0.0), _waiting(flushed, in_tensorboard, now))
        time.sleep(0.5)
    assert all(lag <= 2 * INTERVAL + 0.5 for lag in worst.values()), (worst, shown)
    assert all(lag <= 2 * INTERVAL + 3.0 for lag in shown.values()), (worst, shown)
    # nothing listens on the hosts because of the pull
    for h in hosts:
        assert _ns_listeners(h.ns) == pulled["listening"][h.ns]
    # bytes fetched ≈ bytes appended, once the writers stop and the mirror catches up
    for h in hosts:
        h.stop_writer()
    on_hosts = {h.name: h.event_bytes() for h in hosts}
    assert wait_until(lambda: {s["host"]: s["bytes"] for s in _pull_row(cli)["sources"]} == on_hosts, 15), \
        (_pull_row(cli), on_hosts)
    row = _pull_row(cli)
    assert [s["label"] for s in row["sources"]] == ["h1", "h2"] and row["tensorboard"] == "serving"
    assert all(s["state"] == "up" and s["lag"] is not None for s in row["sources"]), row
    fetched = sum(s["bytes"] for s in row["sources"])
    assert fetched <= 1.1 * sum(on_hosts.values()), (fetched, on_hosts)


def test_link_cut_mid_write_loses_and_repeats_no_step(pulled: dict[str, Any], cli: Cli, state_dir: Path) -> None:
    url, (h1, _) = pulled["url"], pulled["hosts"]
    assert wait_until(lambda: len(_scalars(url, "h1/train")) >= 3, 30)
    link_down(pulled["remote"].netns)
    try:
        time.sleep(10)
    finally:
        link_up(pulled["remote"].netns)
    time.sleep(3)
    # and a dropped connection (sshd restarted): the background process reconnects and resumes
    restart_sshd(pulled["remote"].server)
    assert wait_until(lambda: "link up" in _log(state_dir, "h1").split("link reconnecting", 1)[-1]
                      and "link reconnecting" in _log(state_dir, "h1"), 30), _log(state_dir, "h1")
    time.sleep(3)
    h1.stop_writer()
    written = [s for s, _ in h1.steps()]
    assert len(written) >= 15

    def shown() -> list[int]:
        return [int(p[1]) for p in _scalars(url, "h1/train")]

    assert wait_until(lambda: shown() == written, 60, interval=0.5), (shown(), written)
    assert shown() == list(range(len(written)))  # every step, in order, once


def test_file_replaced_rsync_style_shows_new_data(pulled: dict[str, Any], cli: Cli) -> None:
    url, replaced = pulled["url"], pulled["replaced"]
    assert wait_until(lambda: len(_scalars(url, "h2/rsynced", "r")) == 5, 30), _scalars(url, "h2/rsynced", "r")
    target = replaced / "events.out.tfevents.1.h2.1.0"
    tmp = replaced / ".events.tmp"  # rsync writes beside, then renames over the old file
    _write_events(tmp, range(12))
    os.replace(tmp, target)
    assert wait_until(lambda: [p[1] for p in _scalars(url, "h2/rsynced", "r")] == list(range(12)), 30), \
        _scalars(url, "h2/rsynced", "r")


def test_down_ends_the_pull_and_its_tensorboard(pulled: dict[str, Any], cli: Cli, state_dir: Path) -> None:
    up = pulled["up"]
    pid, port = up["instance"]["pid"], up["instance"]["port"]
    forwarders = [json.loads(p.read_text())["pid"] for p in (state_dir / "forwarders").glob("*.json")]
    assert len(forwarders) == 2
    hosts = pulled["hosts"]
    again = cli("up", "--json", "--pull", f"h1:{hosts[0].logdir}", "--pull", f"h2:{hosts[1].logdir}", "--detach",
                "--port", "6870")
    assert "reusing the background pull of h1:" in again.stderr
    assert again.json()["reused"] and again.json()["instance"]["pid"] == pid
    listing = cli("ls", "--json").json()
    conforms(listing, schemas.LS)
    assert len(listing["pulls"]) == 1
    out = cli("down", str(port), "--json").json()
    conforms(out, schemas.DOWN)
    assert len(out["pulls"]) == 1 and out["purged"] == []
    assert wait_until(lambda: not alive(pid) and not any(alive(f) for f in forwarders), 15)
    assert cli("ls", "--json").json()["pulls"] == []
    mirror = Path(up["instance"]["logdir"])
    assert (mirror / "h1" / "train").is_dir()  # the mirror stays ...
    assert cli("down", "--purge", "--json").json()["purged"] == [str(mirror.parent)]
    assert not mirror.exists()  # ... until --purge


def test_foreground_pull_polls_until_ctrl_c_then_stops_its_tensorboard(pull_hosts: Path, reaper: ProcessReaper,
                                                                       state_dir: Path, tmp_path: Path,
                                                                       cli: Cli) -> None:
    logdir = tmp_path / "fg" / "runs"
    (logdir / "run").mkdir(parents=True)
    _write_events(logdir / "run" / "events.out.tfevents.1.h1.1.0", range(3))
    later = tmp_path / "fg" / "later"  # not there yet on h2
    fg = Foreground(reaper, state_dir, "up", "--pull", f"h1:{logdir}", "--pull", f"h2:{later}", "--port", "6880",
                    "--", "--reload_interval", "1", env={"TBCTL_PULL_BUDGET": "60"})
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    assert f"pulling h1:{logdir}: 60 B fetched, " in fg.stderr  # the first sync, 60 bytes a poll
    assert f"{later} does not exist on h2 (yet)" in fg.stderr
    (later / "run").mkdir(parents=True)
    _write_events(later / "run" / "events.out.tfevents.1.h2.1.0", range(2))
    assert wait_until(lambda: len(_scalars(fg.url, "h2/run", "r")) == 2, 30), _runs(fg.url)
    assert fg.wait_stderr("press Ctrl-C to stop (TensorBoard stops too)")
    assert wait_until(lambda: len(_scalars(fg.url, "h1/run", "r")) == 3, 30), _runs(fg.url)
    path = logdir / "run" / "events.out.tfevents.1.h1.1.0"
    size = path.stat().st_size
    _write_events(tmp_path / "more", range(3, 6))
    with open(path, "ab") as f:  # appended in place, as a writer does
        f.write((tmp_path / "more").read_bytes())
    assert wait_until(lambda: len(_scalars(fg.url, "h1/run", "r")) == 6, 30), _scalars(fg.url, "h1/run", "r")
    assert cli("down", "--purge", "--json").json()["purged"] == []  # a mirror being pulled is in use
    assert fg.interrupt() == 0, fg.stderr
    assert wait_until(lambda: not alive(pid), 10)
    assert "pull ended; the mirror stays in" in fg.stderr
    mirrored = next((tmp_path / "home" / ".cache" / "tbctl" / "pulls").glob("*/mirror/h1/run/*tfevents*"))
    assert mirrored.stat().st_size == size + (tmp_path / "more").stat().st_size
    assert not list((state_dir / "pulls").glob("*.json"))  # no progress left behind
