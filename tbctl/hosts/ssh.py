"""A machine over SSH: one paramiko connection per command, shared by the probe, execs and forwards.

The probe (tbctl/probe.py, stdlib-only) is sent to the remote python over the exec channel's stdin and
then answers JSON lines on the same channel for the life of the command, so each question costs one
round trip and no new process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tbctl.hosts.paramiko_import import paramiko

from tbctl.errors import ProbeError, SSHError
from tbctl.hosts import remote_probe
from tbctl.hosts.base import Host
from tbctl.hosts.ssh_config import SSHTarget, resolve
from tbctl.hosts.ssh_connect import Connection, NoPrompter, Prompter, connect
from tbctl.tunnel import Forwarder

if TYPE_CHECKING:
    from tbctl.hosts.link import LinkState
    from tbctl.hosts.ssh_link import Link


class SSHHost(Host):
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
        self.on_link_change: Callable[[LinkState], None] = lambda state: None
        self._lock = threading.Lock()  # one probe request at a time
        self._connect_lock = threading.RLock()  # one connect or reconnect at a time

    @property
    def is_remote(self) -> bool:
        return True

    @property
    def reachable_here(self) -> bool:
        return False

    @property
    def python(self) -> str:
        """The interpreter that runs the probe: the env's when --env names one, else python3 on PATH."""
        return f"{self.env_prefix.rstrip('/')}/bin/python" if self.env_prefix else "python3"

    # --- connection ---

    def connect(self) -> SSHHost:
        with self._connect_lock:
            if self._conn is None:
                self._conn = connect(self.target, self._prompter)
                try:
                    self._start_probe()
                except BaseException:
                    self.close()
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
        chan = self._conn.transport.open_session(timeout=self.target.connect_timeout)
        chan.exec_command(remote_probe.remote_command(self.python))
        chan.sendall(remote_probe.PREAMBLE)
        reader = chan.makefile("rb")
        self._hello = remote_probe.read_hello(
            reader.readline, host=self.name, python=self.python, exit_status=chan.recv_exit_status,
            stderr=lambda: chan.makefile_stderr("rb").read().decode("utf-8", "replace"))
        self._chan, self._reader = chan, reader

    def call(self, op: str, **args: Any) -> Any:
        self.connect()
        assert self._chan is not None
        with self._lock:
            try:
                self._chan.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
                line = self._reader.readline()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise SSHError(f"lost the connection to {self.name}: {exc}") from exc
        if not line:
            raise SSHError(f"lost the connection to {self.name}", hint="the server closed it; try again")
        reply = json.loads(line)
        if "error" in reply:
            err = reply["error"]
            raise ProbeError(f"{op} failed on {self.name}: {err['type']}: {err['message']}")
        return reply["ok"]

    def ping(self, timeout: float) -> None:
        """One round trip through the probe within `timeout`, else SSHError (the link is dead or stalled)."""
        self.connect()
        assert self._chan is not None
        with self._lock:
            self._chan.settimeout(timeout)
            try:
                self._chan.sendall(b'{"op": "ping", "args": {}}\n')
                line = self._reader.readline()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise SSHError(f"no answer from {self.name} within {timeout:g} s: {exc or type(exc).__name__}") from exc
            finally:
                if self._chan is not None:
                    self._chan.settimeout(None)
        if not line:
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

    def find_tensorboard(self, explicit: str | None = None, env_prefix: str | None = None) -> str:
        return super().find_tensorboard(explicit, env_prefix or self.env_prefix)

    @property
    def log_dir(self) -> str:
        self.connect()
        return f"{self._hello['cache_dir']}/logs"

    @property
    def user(self) -> str:
        self.connect()
        return str(self._hello["user"])

    @property
    def interactive_auth(self) -> bool:
        return self.connection.interactive_auth

    def forward(self, remote_port: int, *, local_port: int) -> Forwarder:
        """A forward whose channels ride the current connection, reconnecting when it drops."""
        self.keep_connected()
        assert self._link is not None
        return Forwarder(self._link.open_channel, remote_port, local_port=local_port)

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
        if self._chan is not None:
            try:
                self._chan.shutdown_write()  # EOF on the probe's stdin: it exits by itself
                self._chan.close()
            except Exception:
                pass
            self._chan = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
