"""A machine over SSH: one paramiko connection per command, shared by the probe, execs and forwards.

The probe (tbctl/probe.py, stdlib-only) is sent to the remote python over the exec channel's stdin and
then answers JSON lines on the same channel for the life of the command, so each question costs one
round trip and no new process.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tbctl.hosts.paramiko_import import paramiko

from tbctl.errors import SSHError
from tbctl.hosts import remote_probe
from tbctl.hosts.ssh_config import SSHTarget, resolve
from tbctl.hosts.ssh_connect import Connection, NoPrompter, Prompter, connect
from tbctl.tunnel import Forwarder

if TYPE_CHECKING:
    from tbctl.hosts.link import LinkState
    from tbctl.hosts.ssh_link import Link

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
            chan.sendall(remote_probe.PREAMBLE)
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
        wait = args.get("timeout")
        deadline = float(wait) + CALL_MARGIN if isinstance(wait, (int, float)) else DEFAULT_CALL_TIMEOUT
        self.connect()
        return remote_probe.answer(self._exchange(op, args, deadline), op=op, host=self.name)

    def ping(self, timeout: float) -> None:
        """One round trip within `timeout`, else SSHError (the link is dead or stalled): through the probe,
        or, while a call holds the probe (it may legitimately wait for a while), through the transport."""
        self.connect()
        try:
            self._exchange("ping", {}, timeout, wait_for_lock=False)
        except _ProbeBusy:
            self._transport_round_trip(timeout)

    def _exchange(self, op: str, args: dict[str, Any], timeout: float, *, wait_for_lock: bool = True) -> bytes:
        """Send one request on the probe channel and read its answer line within `timeout`. A missed
        deadline leaves a late answer on its way, so the channel is dropped (the next call opens another)."""
        if not self._lock.acquire(blocking=wait_for_lock):
            raise _ProbeBusy()
        try:
            chan, reader = self._chan, self._reader
            if chan is None:  # a reconnect dropped it meanwhile
                raise SSHError(f"lost the connection to {self.name}", hint="it is reconnecting; try again")
            try:
                chan.settimeout(timeout)
                chan.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
                line = reader.readline()
            except socket.timeout as exc:
                self._drop_probe(chan)
                raise SSHError(f"no answer from {self.name} to {op} within {timeout:g} s") from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._drop_probe(chan)
                raise SSHError(f"lost the connection to {self.name}: {exc or type(exc).__name__}") from exc
            except BaseException:  # Ctrl-C mid-call: the answer still on its way would be read as the next call's
                self._drop_probe(chan)
                raise
            if not line:
                self._drop_probe(chan)
                raise SSHError(f"lost the connection to {self.name}", hint="the server closed it; try again")
            chan.settimeout(None)
            return bytes(line)
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
            from tbctl.hosts.ssh_link import Link

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
