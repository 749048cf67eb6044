"""A local forward over an SSH connection (`ssh -L L:127.0.0.1:P`), done with paramiko channels.

Listens on 127.0.0.1 only; each accepted connection gets its own `direct-tcpip` channel and a pump
thread. TCP_NODELAY is set on every socket we own; the SSH connection must already have run an exec
(the probe does), because sshd turns Nagle off only once a session runs (FACTS.md: the 40 ms stall).
Not sshtunnel: it binds 0.0.0.0 by default, never reads known_hosts and blocks on close.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tbctl.errors import PortBusy

CHUNK = 64 * 1024
LOOPBACK = "127.0.0.1"


class Forwarder:
    """`with Forwarder(open_channel, remote_port, local_port=L) as fwd:` forwards until the block ends.

    `open_channel(dest, origin)` opens a `direct-tcpip` channel (the transport's, passed in so that a
    reconnecting owner can swap the transport underneath). Errors raised in the forwarder's threads are
    re-raised when the block exits; a refused channel (nothing listening remotely) only closes that client.
    """

    def __init__(
        self,
        open_channel: Callable[[tuple[str, int], tuple[str, int]], Any],
        remote_port: int,
        *,
        local_port: int,
        remote_host: str = LOOPBACK,
    ) -> None:
        self._open_channel = open_channel
        self.remote = (remote_host, remote_port)
        self.local_port = local_port
        self._listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1  # a self-pipe that wakes the accept loop on close (made in start)
        self._threads: set[threading.Thread] = set()
        self._pairs: set[tuple[socket.socket, Any]] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.errors: list[BaseException] = []
        self.refused = 0  # connections the remote end refused (e.g. TensorBoard gone)
        self.served = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.local_port}/"

    def start(self) -> Forwarder:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((LOOPBACK, self.local_port))
        except OSError as exc:
            listener.close()
            raise PortBusy(self.local_port, (), f"cannot listen on {LOOPBACK}:{self.local_port}: {exc.strerror}",
                           hint="choose another with --local-port") from exc
        listener.listen(128)
        self.local_port = listener.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._listener = listener
        self._spawn(self._accept_loop, "tbctl-forward-accept")
        return self

    def __enter__(self) -> Forwarder:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if exc is None and self.errors:
            raise self.errors[0]

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        """Stop accepting, close every open connection, and join the threads."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is None:
            return
        os.write(self._wake_w, b"x")
        with self._lock:
            pairs = list(self._pairs)
        for sock, chan in pairs:
            _close_quietly(sock)
            _close_quietly(chan)
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        _close_quietly(self._listener)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- threads ---

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # kept for __exit__; a forwarder thread must never die silently
                if not self._closed.is_set():
                    self.errors.append(exc)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r or self._closed.is_set():
                        return
                    try:
                        client, peer = self._listener.accept()
                    except OSError:
                        continue
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._spawn(self._serve, "tbctl-forward-conn", client, peer)

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            chan = self._open_channel(self.remote, peer)
        except Exception:  # refused or the connection is down: this client fails fast, others go on
            self.refused += 1
            _close_quietly(client)
            return
        pair = (client, chan)
        with self._lock:
            if self._closed.is_set():
                _close_quietly(client)
                _close_quietly(chan)
                return
            self._pairs.add(pair)
            self.served += 1
        try:
            _pump(client, chan)
        finally:
            with self._lock:
                self._pairs.discard(pair)
            _close_quietly(client)
            _close_quietly(chan)


def _pump(sock: socket.socket, chan: Any) -> None:
    """Copy both ways until either side closes."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        sel.register(chan, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                try:
                    if key.fileobj is sock:
                        data = sock.recv(CHUNK)
                        if not data:
                            return
                        chan.sendall(data)
                    else:
                        data = chan.recv(CHUNK)
                        if not data:
                            return
                        sock.sendall(data)
                except Exception:  # a reset socket or a closed channel (paramiko raises several types)
                    return


def _close_quietly(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        pass
