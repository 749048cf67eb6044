"""TAB after `down`, `logs` or `open` offers the ports of this user's live TensorBoards: not one that exited,
nor another (real) user's. What a TAB press runs: tbctl with bash's completion variables."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import FAKE_TENSORBOARD, ProcessReaper, alive, answers, free_port, wait_until



def _tab(verb: str) -> list[str]:
    env = dict(os.environ, _TBCTL_COMPLETE="complete_bash", COMP_WORDS=f"tbctl {verb} ", COMP_CWORD="2")
    done = subprocess.run([sys.executable, "-m", "tbctl"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()



def test_tab_offers_only_this_users_live_tensorboards(cli: Cli, reaper: ProcessReaper, logdir: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root (to run a TensorBoard as another user), setpriv and /usr/bin/python3")
    live, gone, theirs = free_port(), free_port(), free_port()
    cli.up(str(logdir), "--port", str(live))
    exited = cli.up(str(logdir), "--port", str(gone), "--new")["instance"]["pid"]
    os.kill(exited, signal.SIGTERM)  # exits cleanly: tbctl lists it as `exited` until `down` removes the record
    assert wait_until(lambda: not alive(exited), 10)
    scripts = Path(tempfile.mkdtemp(prefix="tbctl-fake-tb-"))
    scripts.chmod(0o755)
    fake = scripts / "tensorboard"
    fake.write_text(FAKE_TENSORBOARD)
    fake.chmod(0o755)
    reaper.popen(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "/usr/bin/python3",
                  str(fake), "--logdir", "/tmp/theirs", "--port", str(theirs)], cwd="/",
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{theirs}/"), 10)
        statuses = {i["port"]: i["status"] for i in cli("ls", "--json").json()["instances"]}
        assert statuses[gone] == "exited" and statuses[theirs] == "serving" and statuses[live] == "serving"
        for verb in ("down", "logs", "open"):
            offered = [int(p) for p in _tab(verb)]
            assert live in offered and gone not in offered and theirs not in offered, (verb, offered)
    finally:
        shutil.rmtree(scripts, ignore_errors=True)
