"""The forwarder's own promises, over the real sshd to a real server on the remote's loopback: bytes arrive
intact, a reader that stops reading holds back only its own connection (bounded buffering, back-pressure
through the SSH window), a half-close is passed on, and closing with connections open is prompt and leaves
no thread behind."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.procs import ProcessReaper, free_port, wait_until
from tbctl.hosts.paramiko.forwarder import CHAN_CHUNK, HIGH_WATER, Forwarder

# The remote service: "BIG n" -> n MiB of a known pattern, then close; "ECHO" -> read to EOF, then answer
# with the length and sha256 of what was read (only possible if our half-close reached it), then close.
ORIGIN = r"""
import hashlib, socket, sys, threading
BLOCK = bytes(range(256)) * 4096  # 1 MiB
def serve(conn):
    with conn:
        line = b""
        while not line.endswith(b"\n"):
            data = conn.recv(1)
            if not data:
                return
            line += data
        if line.startswith(b"BIG "):
            for _ in range(int(line.split()[1])):
                conn.sendall(BLOCK)
        elif line == b"ECHO\n":
            got = b""
            while data := conn.recv(65536):
                got += data
            conn.sendall(b"%d %s\n" % (len(got), hashlib.sha256(got).hexdigest().encode()))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(64)
print("ready", flush=True)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
BLOCK = bytes(range(256)) * 4096


@pytest.fixture
def forward(ssh_env: Any, reaper: ProcessReaper) -> Iterator[Forwarder]:
    """A Forwarder from a local port to the origin server on the remote machine."""
    from tbctl.hosts.paramiko.host import SSHHost

    port = free_port()
    prefix = ["ip", "netns", "exec", ssh_env.netns.name] if ssh_env.netns else []
    origin = reaper.popen([*prefix, sys.executable, "-c", ORIGIN, str(port)], stdout=subprocess.PIPE)
    assert origin.stdout is not None and origin.stdout.readline() == b"ready\n"
    host = SSHHost(ssh_env.alias).connect()
    try:
        fwd = host.forward(port, local_port=0)
        with fwd:
            yield fwd
    finally:
        host.close()


def _connect(fwd: Forwarder, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", fwd.local_port), timeout=30)
    sock.sendall(request)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def test_a_stalled_reader_holds_back_only_its_own_connection(forward: Forwarder) -> None:
    stalled = _connect(forward, b"BIG 48\n")  # 48 MiB that nobody reads for now
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    # The forwarder keeps at most HIGH_WATER (+ one read) for it, then stops reading its channel.
    assert wait_until(lambda: any(len(c.to_client) >= HIGH_WATER for c in list(forward._connections)), 20)
    time.sleep(0.5)
    assert max(len(c.to_client) for c in list(forward._connections)) <= HIGH_WATER + CHAN_CHUNK

    started = time.monotonic()
    with _connect(forward, b"BIG 16\n") as other:
        body = _read_all(other)
    assert body == BLOCK * 16, "the second connection's bytes arrive intact"
    assert time.monotonic() - started < 20, "the stalled connection did not hold up the other one"

    with stalled:
        body = _read_all(stalled)
    assert len(body) == 48 << 20 and hashlib.sha256(body).digest() == hashlib.sha256(BLOCK * 48).digest()


def test_a_half_close_reaches_the_remote_and_its_answer_comes_back(forward: Forwarder) -> None:
    payload = bytes(range(256)) * 3000 + "ünïcode\n".encode()
    with _connect(forward, b"ECHO\n") as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # "that is all": the remote reads to EOF, then answers
        answer = _read_all(sock)
    assert answer == b"%d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode())


def test_closing_with_connections_open_is_prompt_and_leaves_no_thread(forward: Forwarder) -> None:
    open_socks = [_connect(forward, b"BIG 64\n") for _ in range(5)]  # flowing, unread
    open_socks.append(_connect(forward, b"ECHO\n"))  # waiting for our EOF
    assert wait_until(lambda: forward.active_connections == 6, 20)
    started = time.monotonic()
    forward.close()
    assert time.monotonic() - started < 5
    for sock in open_socks:
        with sock:
            sock.settimeout(10)
            try:
                while sock.recv(1 << 20):
                    pass  # what was in flight, then EOF
            except ConnectionResetError:
                pass
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("tbctl-forward")]
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("tbctl-forward")], 5), leftovers
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward.local_port), timeout=2).close()
