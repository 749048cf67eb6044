"""Port squatting: another user reads TensorBoard's --port and --logdir from /proc (they are world-readable),
binds that port before TensorBoard does and answers `/data/logdir` with the right logdir. tbctl must not
call that ready: TensorBoard is ready only when the listener belongs to the process tbctl launched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, http_get, wait_until
from tests.support.squatter import start_squatter


def _squatter_listens(proc: subprocess.Popen[str], port: int) -> bool:
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in p.net_connections("tcp")):
            return True
    return False


def test_a_squatter_that_binds_the_port_first_is_not_taken_for_tensorboard(
    cli: Cli, reaper: ProcessReaper, logdir: Path, port: int
) -> None:
    squatter = start_squatter(reaper, port)
    result = cli("up", str(logdir), "--new", "--port", str(port), "--json")
    up = result.json()
    reaper.adopt(up["instance"]["pid"], up["instance"]["create_time"])
    assert _squatter_listens(squatter, port), "the squatter did bind the port first"
    assert up["instance"]["port"] != port, result.stderr
    assert f"port {port} was taken by" in result.stderr and "nobody" in result.stderr, result.stderr
    status, body = http_get(up["url"] + "data/logdir")
    assert status == 200 and json.loads(body) == {"logdir": str(logdir.resolve())}
    mine = psutil.Process(up["instance"]["pid"]).net_connections("tcp")
    assert any(c.status == psutil.CONN_LISTEN and c.laddr.port == up["instance"]["port"] for c in mine)
    assert squatter.poll() is None


def test_a_squatter_on_the_remote_is_not_taken_for_tensorboard(
    netns_remote: Any, reaper: ProcessReaper, state_dir: Path, logdir: Path
) -> None:
    remote = netns_remote
    squatter = start_squatter(reaper, 6333, enter=("ip", "netns", "exec", remote.netns.name))
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6333", "--new")
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    assert "port 6333 was taken by" in fg.stderr, fg.stderr
    status, body = http_get(fg.url + "data/logdir")
    assert status == 200 and json.loads(body) == {"logdir": str(logdir)}, body
    assert squatter.poll() is None
    assert fg.interrupt() == 0, fg.stderr
    assert wait_until(lambda: not alive(pid), 10)
