"""Port squatting: another user reads TensorBoard's --port and --logdir from /proc (they are world-readable),
binds that port before TensorBoard does and answers `/data/logdir` with the right logdir. tbctl must not
call that ready: TensorBoard is ready only when the listener belongs to the process tbctl launched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, http_get, wait_until

# Watches /proc for a TensorBoard started with --port PORT, then binds 127.0.0.1:PORT first (TensorBoard
# takes ~1 s to bind) and answers every request with 200 and that TensorBoard's logdir.
SQUATTER = r"""
import json, os, socket, sys, time
port = sys.argv[1]
def target():
    for d in os.listdir("/proc"):
        try:
            args = open("/proc/%s/cmdline" % d, "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        pairs = list(zip(args, args[1:]))
        logdir = next((b for a, b in pairs if a == "--logdir"), None)
        if logdir and any("tensorboard" in a for a in args) and (("--port", port) in pairs or "--port=" + port in args):
            return logdir
print("watching", flush=True)
logdir = None
while logdir is None:
    logdir = target()
    time.sleep(0.001)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(port)))
srv.listen(16)
body = json.dumps({"logdir": logdir, "squatter": True}).encode()
reply = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
while True:
    conn = srv.accept()[0]
    try:
        conn.recv(65536)
        conn.sendall(reply)
    finally:
        conn.close()
"""


def _start_squatter(reaper: ProcessReaper, port: int, netns: str | None = None) -> subprocess.Popen[str]:
    """The squatter as `nobody`, as a hostile neighbour would run it (in the remote's namespace if given)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to run the squatter as another user) and setpriv")
    python = "/usr/bin/python3"  # the system one: a per-user interpreter (pyenv, a venv under /root) is not nobody's to run
    if not os.access(python, os.X_OK):
        pytest.skip("needs /usr/bin/python3 for the squatter")
    argv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", python, "-c", SQUATTER, str(port)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = reaper.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                        cwd="/")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "watching", proc.stderr
    return proc


def _squatter_listens(proc: subprocess.Popen[str], port: int) -> bool:
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in p.net_connections("tcp")):
            return True
    return False


def test_a_squatter_that_binds_the_port_first_is_not_taken_for_tensorboard(
    cli: Cli, reaper: ProcessReaper, logdir: Path, port: int
) -> None:
    squatter = _start_squatter(reaper, port)
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
    squatter = _start_squatter(reaper, 6333, netns=remote.netns.name)
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
