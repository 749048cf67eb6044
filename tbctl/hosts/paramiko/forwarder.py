"""A local forward over an SSH connection (`ssh -L L:127.0.0.1:P`), done with paramiko channels.

Listens on 127.0.0.1 only; each accepted connection gets its own `direct-tcpip` channel. One event-loop
thread moves the bytes of every connection (as OpenSSH's single loop does): a thread per connection made
the pumps and paramiko's transport thread pass the GIL around on every packet (bench/tunnel: 1.3x the
requests per second at 8 concurrent clients). Channels are opened by a few standing opener threads (an
extra one while all are busy), because an open waits a round trip: a slow open (a far host, a link that is
reconnecting) never stalls the connections already flowing, and no thread is created per connection.
Writes are non-blocking with a bounded buffer per direction: a slow reader stops us reading from its
peer (back-pressure through the SSH window), it never stalls the others.

TCP_NODELAY is set on every socket we own; the SSH connection must already have run an exec (the probe
does), because sshd turns Nagle off only once a session runs (with Nagle on, a reply written in two sends waits
~40 ms for a delayed ACK).
Not sshtunnel: it binds 0.0.0.0 by default, never reads known_hosts and blocks on close.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tbctl.errors import PortBusy
from tbctl.models import browser_url

CHUNK = 64 * 1024
CHAN_CHUNK = 256 * 1024  # paramiko buffers up to a 2 MiB window: fewer, larger reads of it cost less Python
HIGH_WATER = 1024 * 1024  # bytes buffered for one side before we stop reading from the other
OPENERS = 4  # standing opener threads: a browser opens about six connections at once
WINDOW_POLL = 0.005  # paramiko gives no readiness event for a full send window: retry this often meanwhile
LOOPBACK = "127.0.0.1"
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(eq=False)
class _Connection:
    """One forwarded connection: the local client socket, its channel, and what is on its way to each."""

    client: socket.socket
    chan: Any
    client_fd: int
    chan_fd: int  # paramiko's readiness pipe for the channel
    to_client: bytearray = field(default_factory=bytearray)
    to_chan: bytearray = field(default_factory=bytearray)
    client_eof: bool = False  # the client half-closed: the remote gets EOF once to_chan is flushed
    chan_eof: bool = False  # the remote is done: the connection ends once to_client is flushed
    eof_sent: bool = False
    interest: dict[int, int] = field(default_factory=dict)  # fd -> events registered with the selector


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
        # wakes the loop (made in start): a socketpair, not a pipe, since Windows' select() takes only sockets
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._loop_thread: threading.Thread | None = None
        self._opened: list[_Connection] = []  # handed from opener threads to the loop
        self._to_open: queue.SimpleQueue[tuple[socket.socket, tuple[str, int]] | None] = queue.SimpleQueue()
        self._idle_openers = 0
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.errors: list[BaseException] = []
        self.refused = 0  # connections the remote end refused (e.g. TensorBoard gone)
        self.served = 0

    @property
    def url(self) -> str:
        return browser_url(self.local_port, host=LOOPBACK)

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
        listener.setblocking(False)
        self.local_port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._listener = listener
        self._loop_thread = self._spawn(self._loop, "tbctl-forward")
        for _ in range(OPENERS):
            self._spawn(self._opener, "tbctl-forward-open")
        self._idle_openers = OPENERS
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
            return len(self._connections)

    @property
    def listening(self) -> bool:
        """Clients are accepted from start() to close(); during a reconnect they wait for the new link."""
        return self._listener is not None and not self._closed.is_set()

    def close(self) -> None:
        """Stop accepting, close every open connection, and join the loop. A channel still being opened is
        closed by its opener thread when the open returns."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is None:
            return
        self._wake()
        for _ in range(OPENERS):
            self._to_open.put(None)
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(timeout=5)
        with self._lock:
            leftovers, self._opened = list(self._connections) + self._opened, []
            self._connections.clear()
        for conn in leftovers:  # only if the loop could not finish (it closes them itself)
            _close_quietly(conn.client)
            _close_quietly(conn.chan)
        _close_quietly(self._listener)
        _close_quietly(self._wake_r)
        _close_quietly(self._wake_w)

    # --- threads ---

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # kept for __exit__; a forwarder thread must never die silently
                if not self._closed.is_set():
                    self.errors.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def _wake(self) -> None:
        assert self._wake_w is not None
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:  # its buffer is full: the loop is already due to wake
            pass

    def _opener(self) -> None:
        while (item := self._to_open.get()) is not None:
            self._open(*item)
            with self._lock:
                self._idle_openers += 1

    def _open(self, client: socket.socket, peer: tuple[str, int]) -> None:
        """In an opener thread: open the channel, then hand the connection to the loop."""
        try:
            chan = self._open_channel(self.remote, peer)
        except Exception:  # refused, or the connection is down: this client fails fast, others go on
            with self._lock:
                self.refused += 1
            _close_quietly(client)
            return
        chan.settimeout(0.0)
        with self._lock:
            if not self._closed.is_set():
                self._opened.append(_Connection(client, chan, client.fileno(), chan.fileno()))
                self._wake()
                return
        _close_quietly(client)
        _close_quietly(chan)

    # --- the loop ---

    def _loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, READ)
        sel.register(self._wake_r, READ)
        try:
            while not self._closed.is_set():
                waiting_for_window = any(c.to_chan for c in self._connections)
                for key, events in sel.select(WINDOW_POLL if waiting_for_window else None):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._adopt(sel)
                    else:
                        self._step(sel, key.data, key.fileobj, events)
                if waiting_for_window:
                    for conn in [c for c in self._connections if c.to_chan]:
                        self._pump(sel, conn, self._flush_to_chan)
        finally:
            with self._lock:
                connections = list(self._connections)
                self._connections.clear()
            for conn in connections:
                self._drop(sel, conn)
            sel.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: the client waits in the backlog until an fd frees up
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setblocking(False)
            with self._lock:
                idle = self._idle_openers > 0
                self._idle_openers -= idle
            if idle:
                self._to_open.put((client, peer))
            else:  # every opener waits on a slow open: this one must not queue behind them
                self._spawn(self._open, "tbctl-forward-open-extra", client, peer)

    def _adopt(self, sel: selectors.BaseSelector) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            opened, self._opened = self._opened, []
            self._connections.update(opened)
            self.served += len(opened)
        for conn in opened:
            self._update_interest(sel, conn)

    def _step(self, sel: selectors.BaseSelector, conn: _Connection, end: Any, events: int) -> None:
        if conn not in self._connections:  # dropped earlier in this batch of events
            return
        if end == conn.client_fd:
            if events & WRITE:
                self._pump(sel, conn, self._flush_to_client)
            if events & READ and conn in self._connections:
                self._pump(sel, conn, self._read_client)
        else:
            self._pump(sel, conn, self._read_chan)

    def _pump(self, sel: selectors.BaseSelector, conn: _Connection, move: Callable[[_Connection], None]) -> None:
        """Run one transfer step; drop the connection on any socket or channel error (a reset client, a
        closed channel: paramiko raises several types), or when both sides are done."""
        try:
            move(conn)
            done = conn.chan_eof and not conn.to_client
        except Exception:
            done = True
        if done:
            with self._lock:
                self._connections.discard(conn)
            self._drop(sel, conn)
        else:
            self._update_interest(sel, conn)

    def _read_client(self, conn: _Connection) -> None:
        try:
            data = conn.client.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            conn.client_eof = True
        conn.to_chan += data
        self._flush_to_chan(conn)

    def _read_chan(self, conn: _Connection) -> None:
        try:
            data = conn.chan.recv(CHAN_CHUNK)
        except socket.timeout:
            return
        if not data:
            conn.chan_eof = True
        elif not conn.to_client:  # the usual case: straight to the socket, buffering only what it refuses
            try:
                data = data[conn.client.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
        conn.to_client += data
        self._flush_to_client(conn)

    def _flush_to_client(self, conn: _Connection) -> None:
        while conn.to_client:
            try:
                sent = conn.client.send(conn.to_client)
            except (BlockingIOError, InterruptedError):
                return
            del conn.to_client[:sent]

    def _flush_to_chan(self, conn: _Connection) -> None:
        while conn.to_chan:
            try:
                sent = conn.chan.send(conn.to_chan[:CHUNK])
            except socket.timeout:  # the remote's window is full: retried after WINDOW_POLL
                return
            if sent == 0:
                raise EOFError("channel closed")
            del conn.to_chan[:sent]
        if conn.client_eof and not conn.eof_sent:
            conn.chan.shutdown_write()  # pass the half-close on: the remote may still answer
            conn.eof_sent = True

    def _update_interest(self, sel: selectors.BaseSelector, conn: _Connection) -> None:
        client_events = (0 if conn.client_eof or len(conn.to_chan) >= HIGH_WATER else READ) | (WRITE if conn.to_client else 0)
        chan_events = 0 if conn.chan_eof or len(conn.to_client) >= HIGH_WATER else READ
        for fd, events in ((conn.client_fd, client_events), (conn.chan_fd, chan_events)):
            registered = conn.interest.get(fd, 0)
            if events == registered:
                continue
            if not registered:
                sel.register(fd, events, conn)
            elif not events:
                sel.unregister(fd)
            else:
                sel.modify(fd, events, conn)
            conn.interest[fd] = events

    def _drop(self, sel: selectors.BaseSelector, conn: _Connection) -> None:
        for fd in conn.interest:
            try:
                sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        conn.interest.clear()
        _close_quietly(conn.client)
        _close_quietly(conn.chan)


def _close_quietly(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        pass
