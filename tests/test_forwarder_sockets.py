"""The paramiko forwarder selects on sockets only, since Windows' select() takes nothing else.

Nothing here runs Windows: its select() is stood in for by a selector that refuses what is not a socket,
as Windows' does (WSAENOTSOCK). The forwarder's channels are plain TCP connections to a local server here
(on Windows paramiko's Channel.fileno() is a socket too; on Linux it is a pipe, so a real channel could not
go through this selector). The forwarder's own wake-up, a socketpair, is the real thing.
"""

from __future__ import annotations

import os
import selectors
import socket
import stat
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tbctl.hosts.paramiko import forwarder as tunnel
from tbctl.hosts.paramiko.forwarder import Forwarder


class SocketsOnlySelector(selectors.SelectSelector):
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(10038, "An operation was attempted on something that is not a socket")
        return super().register(fileobj, events, data)


class DirectChannel:
    """What the forwarder uses of a paramiko Channel, over a plain TCP connection. With a timeout of 0 a
    paramiko channel raises socket.timeout where a non-blocking socket raises BlockingIOError."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, timeout: float) -> None:
        self._sock.settimeout(timeout)

    def recv(self, n: int) -> bytes:
        try:
            return self._sock.recv(n)
        except BlockingIOError:
            raise socket.timeout from None

    def send(self, data: bytes) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            raise socket.timeout from None

    def shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server that answers each connection with what it read, upper-cased, once the client half-closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)  # so that the thread sees `stop` soon: closing does not end a blocked accept()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with conn:
                got = b""
                while data := conn.recv(65536):
                    got += data
                conn.sendall(got.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()
    thread.join(timeout=5)


@pytest.mark.timeout(60)
def test_the_forwarder_moves_bytes_with_a_selector_that_takes_only_sockets(
        echo_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.name != "nt":  # on Windows the default selector is select() itself
        monkeypatch.setattr(tunnel.selectors, "DefaultSelector", SocketsOnlySelector)

    def open_channel(dest: tuple[str, int], origin: tuple[str, int]) -> DirectChannel:
        return DirectChannel(socket.create_connection(("127.0.0.1", dest[1]), timeout=10))

    fwd = Forwarder(open_channel, echo_port, local_port=0).start()
    try:
        for n in range(3):  # each new connection wakes the loop through the socketpair
            with socket.create_connection(("127.0.0.1", fwd.local_port), timeout=5) as client:
                client.sendall(b"hello %d" % n)
                client.shutdown(socket.SHUT_WR)
                answer = b""
                while data := client.recv(65536):
                    answer += data
            assert answer == b"HELLO %d" % n
    finally:
        fwd.close()
    assert fwd.errors == [] and fwd.served == 3
