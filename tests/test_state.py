"""The state store: repairs of a damaged file, names derived from host names, and file permissions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.procs import ProcessReaper
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
    store.add(GOOD)
    store.path.write_text(store.path.read_text() + "{damaged\n")
    holder = reaper.popen([sys.executable, "-c", _HOLDER, str(state), json.dumps([GOOD, NEW])],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    before = store.path.read_text()
    loaded: list[list[dict]] = []
    reader = threading.Thread(target=lambda: loaded.append(StateStore(state).load()))
    reader.start()
    reader.join(0.7)
    assert store.path.read_text() == before, "the repair rewrote the file while another tbctl held the lock"
    assert reader.is_alive(), "load() repaired without waiting for the lock"
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.wait(10) == 0
    reader.join(10)
    assert [r["pid"] for r in loaded[0]] == [111, 222]
    assert [r["pid"] for r in StateStore(state).load()] == [111, 222]


def test_two_repairs_in_one_second_keep_both_damaged_copies(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    store.add(GOOD)
    now = int(time.time())
    planted = {}
    for second in (now, now + 1):  # whatever second the repairs happen in, a name is already taken
        p = store.path.with_name(f"{store.path.name}.corrupt-{second}")
        p.write_text(f"earlier repair {second}\n")
        planted[p] = p.read_text()
    for n in (1, 2):
        store.path.write_text(store.path.read_text() + f"{{damaged {n}\n")
        assert [r["pid"] for r in store.load()] == [111]
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
        store.write_forwarder_status(n, {"host": n, "pid": 1})
    assert sorted(s["host"] for s in store.forwarder_statuses()) == sorted(names)
    assert "gpu1" in store.forwarder_status_path("gpu1").name  # still readable
    store.remove_forwarder_status("a_b")
    assert sorted(s["host"] for s in store.forwarder_statuses()) == sorted(set(names) - {"a_b"})
