"""A machine over SSH: one paramiko connection per command, shared by the probe, execs and forwards.

The probe (tbctl/probe.py, stdlib-only) is sent to the remote python over the exec channel's stdin and
then answers JSON lines on the same channel for the life of the command, so each question costs one
round trip and no new process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tbctl.hosts.paramiko.library import paramiko

from tbctl.errors import SSHError
from tbctl.hosts import remote as remote_probe
from tbctl.hosts.base import PING_TIMEOUT, Answer, Request
from tbctl.hosts.paramiko.config import SSHTarget, resolve
from tbctl.hosts.paramiko.connect import Connection, NoPrompter, Prompter, connect
from tbctl.hosts.paramiko.forwarder import Forwarder

if TYPE_CHECKING:
    from tbctl.hosts.link import LinkState
    from tbctl.hosts.paramiko.link import Link

DEFAULT_CALL_TIMEOUT = 30.0  # seconds for a probe answer, unless the operation waits longer by design
CALL_MARGIN = 15.0  # beyond an operation's own timeout (wait_ready, wait_gone): a slow link, a busy host


class SSHHost(remote_probe.RemoteHost):
    def __init__(
        self,
        spec: str,
        *,
        prompter: Prompter | None = None,
        connect_timeout: float | None = None,
        env_prefix: str | None = None,
        target: SSHTarget | None = None,
    ) -> None:
        self.target = target or resolve(spec, connect_timeout=connect_timeout)
        self.name = spec
        self.env_prefix = env_prefix
        self._prompter = prompter or NoPrompter()
        self._conn: Connection | None = None
        self._chan: paramiko.Channel | None = None
        self._reader: Any = None
        self._hello: dict[str, Any] = {}
        self._link: Link | None = None
        self._asked_for = ""  # what a person had to answer for a connection so far (a passphrase, a password…)
        self.on_link_change: Callable[[LinkState], None] = lambda state: None
        self._lock = threading.Lock()  # one probe request at a time
        self._connect_lock = threading.RLock()  # one connect or reconnect at a time

    # --- connection ---

    def connect(self) -> SSHHost:
        with self._connect_lock:
            if self._conn is None:
                self._conn = connect(self.target, self._prompter)
                if self._conn.interactive_auth:
                    self._asked_for = self._conn.asked_for or "a password or 2FA answer"
            if self._chan is None:  # a new connection, or a probe channel dropped after a missed deadline
                try:
                    self._start_probe()
                except BaseException:
                    self._close()  # the connection only: a link reconnecting through here lives on
                    raise
        return self

    @property
    def connection(self) -> Connection:
        self.connect()
        assert self._conn is not None
        return self._conn

    @property
    def transport(self) -> paramiko.Transport:
        return self.connection.transport

    def _start_probe(self) -> None:
        assert self._conn is not None
        try:
            chan = self._conn.transport.open_session(timeout=self.target.connect_timeout)
            chan.settimeout(max(self.target.connect_timeout, DEFAULT_CALL_TIMEOUT))  # the remote python's start
            chan.exec_command(remote_probe.remote_command(self.python))
            try:
                chan.sendall(remote_probe.preamble())
            except OSError:
                pass  # the command died at once (no python: exit 127) and closed the channel; read_hello says why
            reader = chan.makefile("rb")
            hello = remote_probe.read_hello(
                reader.readline, host=self.name, python=self.python, exit_status=chan.recv_exit_status,
                stderr=lambda: chan.makefile_stderr("rb").read().decode("utf-8", "replace"))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SSHError(f"could not start the probe on {self.name}: {exc or type(exc).__name__}") from exc
        self._hello = hello
        chan.settimeout(None)
        with self._lock:  # never swapped under a call in flight
            self._chan, self._reader = chan, reader

    def call(self, op: str, **args: Any) -> Any:
        """One probe operation. Its answer must come within a deadline: the operation's own `timeout`
        (wait_ready, wait_gone, http_get) plus a margin, else DEFAULT_CALL_TIMEOUT."""
        return self.call_many([(op, args)])[0].get()

    def call_many(self, requests: Sequence[Request], *,
                  on_answer: Callable[[int, Answer], None] = lambda index, answer: None) -> list[Answer]:
        """Every request written at once; the probe answers them in order (one round trip for the batch)."""
        waits = [args.get("timeout") for _, args in requests]
        deadline = (sum(float(w) for w in waits if isinstance(w, (int, float))) + CALL_MARGIN
                    if any(isinstance(w, (int, float)) for w in waits) else DEFAULT_CALL_TIMEOUT)
        self.connect()
        answers = []

        def answered(index: int, line: bytes) -> None:  # as each comes: a launch is known before its wait ends
            answer = remote_probe.outcome(line, op=requests[index][0], host=self.name)
            answers.append(answer)
            on_answer(index, answer)

        self._exchange(requests, deadline, on_line=answered)
        return answers

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """One round trip within `timeout`, else SSHError (the link is dead or stalled): through the probe,
        or, while a call holds the probe (it may legitimately wait for a while), through the transport."""
        self.connect()
        try:
            self._exchange([("ping", {})], timeout, wait_for_lock=False)
        except _ProbeBusy:
            self._transport_round_trip(timeout)

    def _exchange(self, requests: Sequence[Request], timeout: float, *, wait_for_lock: bool = True,
                  on_line: Callable[[int, bytes], None] = lambda index, line: None) -> list[bytes]:
        """Send the requests on the probe channel and read their answer lines within `timeout`. A missed
        deadline (or a Ctrl-C while reading) leaves answers on their way, so the channel is dropped (the
        next call opens another)."""
        if not self._lock.acquire(blocking=wait_for_lock):
            raise _ProbeBusy()
        try:
            chan, reader = self._chan, self._reader
            if chan is None:  # a reconnect dropped it meanwhile
                raise SSHError(f"lost the connection to {self.name}", hint="it is reconnecting; try again")
            lines = []
            try:
                chan.settimeout(timeout)
                chan.sendall(remote_probe.request_lines(requests))
                for index, (op, _) in enumerate(requests):
                    line = reader.readline()
                    if not line:
                        self._drop_probe(chan)
                        raise SSHError(f"lost the connection to {self.name}", hint="the server closed it; try again")
                    lines.append(bytes(line))
                    on_line(index, bytes(line))
            except socket.timeout as exc:
                self._drop_probe(chan)
                raise SSHError(f"no answer from {self.name} to {op} within {timeout:g} s") from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._drop_probe(chan)
                raise SSHError(f"lost the connection to {self.name}: {exc or type(exc).__name__}") from exc
            except BaseException:  # Ctrl-C mid-call: an answer still on its way would be read as the next call's
                if len(lines) < len(requests):
                    self._drop_probe(chan)
                raise
            chan.settimeout(None)
            return lines
        finally:
            self._lock.release()

    def _drop_probe(self, chan: paramiko.Channel) -> None:
        """With _lock held: close a probe channel that can no longer be trusted to answer in order."""
        if self._chan is chan:
            self._chan = self._reader = None
        try:
            chan.close()
        except Exception:
            pass

    def _transport_round_trip(self, timeout: float) -> None:
        """A global request the server must answer (OpenSSH's keepalive@openssh.com), within `timeout`."""
        transport = self.current_transport
        answered = threading.Event()

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)  # returns once answered or closed
            except Exception:
                pass
            finally:
                answered.set()

        threading.Thread(target=ask, name="tbctl-keepalive", daemon=True).start()
        if not answered.wait(timeout):
            raise SSHError(f"no answer from {self.name} within {timeout:g} s")
        if not transport.is_active():
            raise SSHError(f"lost the connection to {self.name}")

    def reconnect(self) -> None:
        """Drop the connection and open a new one (and a new probe) without asking anyone anything."""
        with self._connect_lock:
            self._close()  # the connection only: the link that calls this lives on
            self._prompter = NoPrompter()
            self.connect()

    @property
    def current_transport(self) -> paramiko.Transport:
        """The transport if connected now; never connects (a forward thread must not race a reconnect)."""
        conn = self._conn
        if conn is None:
            raise SSHError(f"not connected to {self.name}")
        return conn.transport

    @property
    def interactive_auth(self) -> bool:
        return self.connection.interactive_auth

    @property
    def asked_for(self) -> str:
        """What a person had to answer for a connection so far ("the passphrase of key K", "a password"),
        "" if nothing. Unlike `interactive_auth` it never connects: the link asks it before reconnecting,
        when connecting may be what fails."""
        return self._asked_for

    def forward(self, remote_port: int, *, local_port: int, remote_host: str = "127.0.0.1",
                remote_socket: str | None = None) -> Forwarder:
        """A forward whose channels ride the current connection, reconnecting when it drops."""
        self.keep_connected()
        assert self._link is not None
        if remote_socket is not None:
            link = self._link
            return Forwarder(lambda dest, origin: link.open_channel(dest, origin, socket_path=remote_socket),
                             0, local_port=local_port, remote_host=remote_socket)
        return Forwarder(self._link.open_channel, remote_port, local_port=local_port, remote_host=remote_host)

    def keep_connected(self) -> None:
        """Ping the link and reconnect with backoff when it drops (connecting first in the background when
        it is not connected yet, as the background forwarder starts)."""
        if self._link is None:
            from tbctl.hosts.paramiko.link import Link

            self._link = Link(self, on_change=lambda state: self.on_link_change(state),
                              connected=self._conn is not None).start()

    @property
    def link_state(self) -> LinkState:
        from tbctl.hosts.link import LinkState

        if self._link is not None:
            return self._link.state
        return LinkState("up" if self._conn is not None else "reconnecting", 0.0)

    def watch_connection(self, callback: Callable[[LinkState], None]) -> None:
        self.on_link_change = callback

    def connection_ok(self) -> bool:
        if self._link is not None:
            return self._link.state.state != "down"
        return self._conn is not None and self._conn.transport.is_active()

    def close(self) -> None:
        if self._link is not None:
            link, self._link = self._link, None
            link.close()
        with self._connect_lock:
            self._close()

    def _close(self) -> None:
        chan, conn = self._chan, self._conn
        # Closing first ends a read in flight, which holds _lock; only then the references are cleared.
        if chan is not None:
            try:
                chan.shutdown_write()  # EOF on the probe's stdin: it exits by itself
                chan.close()
            except Exception:
                pass
        if conn is not None:
            conn.close()
        with self._lock:
            if self._chan is chan:
                self._chan = self._reader = None
        self._conn = None


class _ProbeBusy(Exception):
    """A call holds the probe channel (raised to `ping` only)."""
