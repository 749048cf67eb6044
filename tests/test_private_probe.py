"""The probe's side of `up --private`, in this process: readiness refuses a socket that answers from another
process, a TensorBoard that also listens on TCP, and a socket directory that is not the user's own; the
socket directory and the Python of a tensorboard script are found as they should be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbctl import probe
from tests.support.procs import TENSORBOARD, ProcessReaper, wait_until

# A stand-in for the launcher: an HTTP server on a unix socket, answering /data/logdir, and with `tcp` also
# listening on a TCP port of loopback (what a data server or a plugin would do).
SERVER = textwrap.dedent('''
    import http.server, os, socket, socketserver, sys
    path, tcp = sys.argv[1], sys.argv[2] == "tcp"
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"logdir": "/x"}'
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    class Server(socketserver.UnixStreamServer):
        def get_request(self):
            conn, _ = self.socket.accept()
            return conn, ("local", 0)
    if tcp:
        extra = socket.socket(); extra.bind(("127.0.0.1", 0)); extra.listen(1)
    Server(path, Handler).serve_forever()
''')


@pytest.fixture
def socket_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache dir with a short path (pytest's tmp_path is too long for a unix socket's address)."""
    short = Path(tempfile.mkdtemp(prefix="tbp-"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(short))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    try:
        yield short / "tbctl" / "sockets"
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _serve(reaper: ProcessReaper, path: str, mode: str) -> subprocess.Popen[bytes]:
    proc = reaper.popen([sys.executable, "-c", SERVER, path, mode])
    assert wait_until(lambda: os.path.exists(path), 10)
    return proc


def _prepared(socket_home: Path) -> str:
    prepared = probe.prepare_private(str(Path(sys.executable).parent / "tensorboard"))
    assert not prepared.get("error"), prepared
    assert os.path.dirname(os.path.dirname(prepared["socket"])) == str(socket_home)
    return str(prepared["socket"])


# Both ways of seeing sockets: /proc (Linux) and psutil (macOS, or TBCTL_PROBE_PSUTIL=1).
BACKENDS = pytest.mark.parametrize("backend", [probe.ProcBackend, probe.PsutilBackend], ids=["proc", "psutil"])


@BACKENDS
def test_a_private_instance_that_listens_on_tcp_is_not_ready(socket_home: Path, reaper: ProcessReaper,
                                                             backend: type[probe.Backend]) -> None:
    sock = _prepared(socket_home)
    proc = _serve(reaper, sock, "tcp")
    answer = probe.Probe(backend=backend()).wait_ready(proc.pid, None, None, "/data/logdir", 10, socket_path=sock)
    assert (answer["ready"], answer["reason"]) == (False, "tcp") and "listens on TCP port" in answer["error"], answer


@BACKENDS
def test_a_socket_answered_by_another_process_is_not_ready(socket_home: Path, reaper: ProcessReaper,
                                                           backend: type[probe.Backend]) -> None:
    sock = _prepared(socket_home)
    _serve(reaper, sock, "unix")
    bystander = reaper.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    answer = probe.Probe(backend=backend()).wait_ready(bystander.pid, None, None, "/data/logdir", 10, socket_path=sock)
    assert (answer["ready"], answer["reason"]) == (False, "held"), answer


@BACKENDS
def test_ready_when_the_process_holds_the_socket_and_no_tcp(socket_home: Path, reaper: ProcessReaper,
                                                            backend: type[probe.Backend]) -> None:
    sock = _prepared(socket_home)
    proc = _serve(reaper, sock, "unix")
    answer = probe.Probe(backend=backend()).wait_ready(proc.pid, None, None, "/data/logdir", 10, socket_path=sock)
    assert answer["ready"] and answer["body"] == '{"logdir": "/x"}', answer


def test_a_socket_directory_opened_to_others_is_refused(socket_home: Path, reaper: ProcessReaper) -> None:
    sock = _prepared(socket_home)
    proc = _serve(reaper, sock, "unix")
    os.chmod(os.path.dirname(sock), 0o755)
    answer = probe.Probe().wait_ready(proc.pid, None, None, "/data/logdir", 10, socket_path=sock)
    assert (answer["ready"], answer["reason"]) == (False, "unsafe") and "open to other users" in answer["error"]


def test_the_socket_base_is_the_runtime_dir_only_when_it_is_ours(tmp_path: Path, socket_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_RUNTIME_DIR is used where it is a 0700 directory of ours, never through a symlink."""
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert probe.socket_base() == str(runtime / "tbctl")
    runtime.chmod(0o755)  # not a runtime dir logind made: fall back to tbctl's cache dir
    assert probe.socket_base() == str(socket_home)
    link = tmp_path / "link"
    runtime.chmod(0o700)
    link.symlink_to(runtime)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(link))
    assert probe.socket_base() == str(socket_home)


def test_the_python_of_a_tensorboard_script(tmp_path: Path) -> None:
    script = tmp_path / "tensorboard"
    script.write_text("#!/opt/venv/bin/python3\nimport sys\n")
    assert probe.script_python(str(script)) == "/opt/venv/bin/python3"
    # pip's form for an interpreter path too long for #!
    script.write_text("#!/bin/sh\n'''exec' \"/a very/long/venv/bin/python3\" \"$0\" \"$@\"\n' '''\nimport sys\n")
    assert probe.script_python(str(script)) == "/a very/long/venv/bin/python3"
    script.write_text("\x7fELF binary")
    assert probe.script_python(str(script)) is None


def test_a_socket_path_too_long_for_sun_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("XDG_CACHE_HOME", str(deep))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    answer = probe.prepare_private(str(Path(sys.executable).parent / "tensorboard"))
    assert "longer than a unix socket address may be (107 bytes)" in answer["error"], answer
    assert os.listdir(deep / "tbctl" / "sockets") == []  # the directory it made is gone again


def test_a_private_launch_and_its_wait_go_in_one_batch(socket_home: Path, reaper: ProcessReaper, logdir: Path,
                                                       tmp_path: Path) -> None:
    """`up --private` asks as `up` does: the log dir's check, the launch and the wait for that launch in one
    batch (one round trip to a remote host); the wait is on the launch's socket, not on a TCP port. A launch
    refused before it starts anything leaves nothing for the wait, not the previous launch."""
    from tbctl.hosts.local import LocalHost
    from tbctl.hosts.base import Answer

    host = LocalHost(tmp_path / "state")
    started: list[Answer] = []
    launch = ("launch_private", {"executable": TENSORBOARD, "args": ["--logdir", str(logdir), "--load_fast=false"],
                                 "log_path": str(tmp_path / "tb.log")})
    wait = ("wait_launched", {"port": None, "path": "/data/logdir", "timeout": 60})
    _, launched, waited = host.call_many([("ping", {}), launch, wait],
                                         on_answer=lambda index, answer: started.append(answer) if index == 1 else None)
    reaper.adopt(launched.get()["pid"])
    assert started and launched.get()["socket"].startswith(str(socket_home)), launched.get()
    answer = waited.get()
    assert answer["ready"] and str(logdir) in answer["body"] and answer["info"]["pid"] == launched.get()["pid"], answer
    refused = ("launch_private", {"executable": str(tmp_path / "no-such-tensorboard"), "args": [],
                                  "log_path": str(tmp_path / "tb2.log")})
    first, after = host.call_many([refused, wait])
    assert first.get().get("error") and isinstance(after.error, LookupError), (first.get(), after.error)
