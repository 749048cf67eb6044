"""The state store: repairs of a damaged file, names derived from host names, and file permissions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, tensorboard_pids_for
from tests.support.procs import ProcessReaper
from tbctl.probe import Probe
from tbctl.records import ForwarderStatus, InstanceRecord
from tbctl.state import StateStore

GOOD = {"host": "localhost", "pid": 111, "create_time": 1.0}
NEW = {"host": "localhost", "pid": 222, "create_time": 2.0}

# A second tbctl that holds the state lock (as add() does between reading and writing the file), writes
# a record meanwhile, and releases the lock when told to.
_HOLDER = r"""
import json, sys
from pathlib import Path
from tbctl.state import StateStore
store = StateStore(Path(sys.argv[1]))
with store.lock("state"):
    print("locked", flush=True)
    sys.stdin.readline()
    lines = [json.dumps(r) for r in json.loads(sys.argv[2])] + ["{damaged"]
    store.path.write_text("\n".join(lines) + "\n")
"""


def test_repair_waits_for_the_state_lock_so_a_concurrent_add_is_kept(reaper: ProcessReaper, tmp_path: Path) -> None:
    state = tmp_path / "s"
    store = StateStore(state)
    store.add(InstanceRecord.from_json(GOOD))
    store.path.write_text(store.path.read_text() + "{damaged\n")
    holder = reaper.popen([sys.executable, "-c", _HOLDER, str(state), json.dumps([GOOD, NEW])],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    before = store.path.read_text()
    loaded: list[list[InstanceRecord]] = []
    reader = threading.Thread(target=lambda: loaded.append(StateStore(state).load()))
    reader.start()
    reader.join(0.7)
    assert store.path.read_text() == before, "the repair rewrote the file while another tbctl held the lock"
    assert reader.is_alive(), "load() repaired without waiting for the lock"
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.wait(10) == 0
    reader.join(10)
    assert [r.pid for r in loaded[0]] == [111, 222]
    assert [r.pid for r in StateStore(state).load()] == [111, 222]


def test_two_repairs_in_one_second_keep_both_damaged_copies(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    store.add(InstanceRecord.from_json(GOOD))
    now = int(time.time())
    planted = {}
    for second in (now, now + 1):  # whatever second the repairs happen in, a name is already taken
        p = store.path.with_name(f"{store.path.name}.corrupt-{second}")
        p.write_text(f"earlier repair {second}\n")
        planted[p] = p.read_text()
    for n in (1, 2):
        store.path.write_text(store.path.read_text() + f"{{damaged {n}\n")
        assert [r.pid for r in store.load()] == [111]
    for p, text in planted.items():
        assert p.read_text() == text, f"{p} was overwritten"
    asides = sorted(store.path.parent.glob("instances.jsonl.corrupt-*"))
    contents = "".join(p.read_text() for p in asides)
    assert "{damaged 1" in contents and "{damaged 2" in contents
    assert len(store.warnings) == 2 and all("moved the rest to" in w for w in store.warnings)


def test_distinct_host_names_get_distinct_state_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    names = ["a@b", "a_b", "a:b", "a/b", "A@b", "gpu1"]
    assert len({store.forwarder_status_path(n) for n in names}) == len(names)
    assert len({store.forwarder_log_path(n) for n in names}) == len(names)
    for n in names:
        assert store.forwarder_status_path(n).parent == tmp_path / "s" / "forwarders"
        store.write_forwarder_status(n, ForwarderStatus(host=n, pid=1))
    assert sorted(s.host for s in store.forwarder_statuses()) == sorted(names)
    assert "gpu1" in store.forwarder_status_path("gpu1").name  # still readable
    store.remove_forwarder_status("a_b")
    assert sorted(s.host for s in store.forwarder_statuses()) == sorted(set(names) - {"a_b"})


# --- permissions: state, cache and log dirs 0700, their files 0600, no symlink followed ---


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


NOBODY = 65534  # a uid that is not ours (the tests that need one run as root, as CI does)


def test_state_dirs_and_files_are_private_even_where_an_older_tbctl_left_them_open(
    cli: Cli, logdir: Path, port: int, state_dir: Path
) -> None:
    (state_dir / "logs").mkdir(parents=True, mode=0o755)
    state_dir.chmod(0o755)  # what tbctl made before (umask 022)
    (state_dir / "logs").chmod(0o755)
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    store = StateStore(state_dir)
    forwarder_log = store.forwarder_log_path("gpu1")
    for d in (state_dir, state_dir / "logs", state_dir / "locks", state_dir / "forwarders"):
        assert _mode(d) == 0o700, f"{d} is {oct(_mode(d))}"
    files = [Path(inst["log_path"]), store.path, forwarder_log, *(state_dir / "locks").iterdir()]
    assert len(files) > 3
    for f in files:
        assert _mode(f) == 0o600, f"{f} is {oct(_mode(f))}"


def test_the_probe_makes_its_log_dirs_and_logs_private_and_follows_no_symlink(tmp_path: Path) -> None:
    """The remote case: the probe creates ~/.cache/tbctl/logs and the logs there (same code as here)."""
    from tbctl import probe

    cache = tmp_path / "cache" / "tbctl"
    victim = tmp_path / "victim"
    victim.write_text("not yours\n")
    log = cache / "logs" / "tensorboard-1-x.log"
    local = probe.Probe()
    first = local.launch(["/bin/sh", "-c", "echo hello"], str(log))
    _reap(local, first)
    assert _mode(cache) == 0o700 and _mode(cache / "logs") == 0o700
    assert _mode(Path(first["log_path"])) == 0o600
    planted = cache / "logs" / "planted.log"
    planted.symlink_to(victim)
    second = local.launch(["/bin/sh", "-c", "echo second"], str(planted))
    _reap(local, second)
    assert victim.read_text() == "not yours\n" and second["log_path"] != str(planted)


def _reap(launcher: Probe, launched: dict) -> None:
    """Wait for a short command the probe launched (the probe reaps its own children)."""
    assert not launcher.wait_gone([[launched["pid"], launched["create_time"]]], 10)["alive"]


def _foreign_symlink(tmp_path: Path, name: str) -> Path:
    import os

    target = tmp_path / f"{name}-target"
    target.mkdir(mode=0o777)
    os.chown(target, NOBODY, NOBODY)
    link = tmp_path / name
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    return link


def test_a_state_dir_that_is_another_users_symlink_or_dir_is_refused(
    cli: Cli, reaper: ProcessReaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logdir: Path, port: int
) -> None:
    import os

    if os.getuid() != 0:
        pytest.skip("needs root to make files owned by another user")
    link = _foreign_symlink(tmp_path, "planted-state")
    monkeypatch.setenv("TBCTL_STATE_DIR", str(link))
    try:
        err = cli("up", str(logdir), "--port", str(port), exit_code=1).stderr
    finally:  # a TensorBoard started in spite of it must not outlive the test
        for pid in tensorboard_pids_for(logdir):
            reaper.adopt(pid)
    assert f"state dir {link} is a symlink owned by nobody" in err and len(err.splitlines()) <= 2, err
    assert not list(link.iterdir()), "tbctl wrote into it anyway"
    cli("ls", exit_code=1)
    foreign = tmp_path / "foreign-state"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    monkeypatch.setenv("TBCTL_STATE_DIR", str(foreign))
    assert f"state dir {foreign} is owned by nobody" in cli("ls", exit_code=1).stderr
    # a symlink of our own to a directory of our own is fine (a state dir moved to another disk)
    mine = tmp_path / "mine"
    mine.mkdir()
    (tmp_path / "my-link").symlink_to(mine)
    monkeypatch.setenv("TBCTL_STATE_DIR", str(tmp_path / "my-link"))
    cli("ls")


def test_a_log_dir_that_is_another_users_symlink_is_refused(tmp_path: Path) -> None:
    import os

    from tbctl import probe

    if os.getuid() != 0:
        pytest.skip("needs root to make files owned by another user")
    link = _foreign_symlink(tmp_path, "logs")
    answer = probe.Probe().handle("private_dir", {"path": str(link)})
    assert answer["error"] == f"{link} is a symlink owned by nobody; refusing to use it"
    with pytest.raises(OSError):
        probe.Probe().launch(["/bin/true"], str(link / "tensorboard-1.log"))
    assert not list(link.iterdir())
