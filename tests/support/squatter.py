"""A hostile neighbour who squats TensorBoard's port: it reads TensorBoard's --port and --logdir from /proc
(they are world-readable), binds that port before TensorBoard does, and answers every request with 200 and
that logdir."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from tests.support.procs import ProcessReaper

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


def start_squatter(reaper: ProcessReaper, port: int, *, enter: Sequence[str] = ()) -> subprocess.Popen[str]:
    """The squatter as `nobody`, as a hostile neighbour would run it (`enter`: the command that puts it on
    another machine of the suite, a network namespace's)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to run the squatter as another user) and setpriv")
    python = "/usr/bin/python3"  # the system one: a per-user interpreter (pyenv, a venv under /root) is not nobody's to run
    if not os.access(python, os.X_OK):
        pytest.skip("needs /usr/bin/python3 for the squatter")
    argv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", python, "-c", SQUATTER, str(port)]
    argv = [*enter, *argv]
    proc = reaper.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                        cwd="/")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "watching", proc.stderr
    return proc
