"""An SSH connection that comes back: keepalive pings notice a dead link within seconds, and a
reconnect loop (bounded exponential backoff with jitter) brings it back, re-running the probe exec that
keeps Nagle off. Forwards open their channels through `open_channel`, so they keep their local ports
and simply use the new connection. Clients arriving during an outage wait briefly, then fail fast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tbctl.hosts.paramiko.library import paramiko

from tbctl.errors import AuthFailed, HostKeyRejected, SSHError
from tbctl.hosts.link import CLIENT_WAIT, DEFAULT_PING_INTERVAL, LinkState, backoff_delay

if TYPE_CHECKING:
    from tbctl.hosts.paramiko.host import SSHHost

class Link:
    def __init__(self, host: SSHHost, *, on_change: Callable[[LinkState], None] | None = None,
                 interval: float | None = None, connected: bool = True) -> None:
        self.host = host
        explicit = host.target.server_alive_interval if host.target.server_alive_interval_set else None
        self.interval = interval or explicit or DEFAULT_PING_INTERVAL
        # As OpenSSH's ServerAliveInterval x ServerAliveCountMax: how long a ping may go unanswered.
        self.ping_timeout = max(2.0, self.interval * host.target.server_alive_count_max)
        self._on_change = on_change or (lambda _: None)
        self._cond = threading.Condition()
        self._state = LinkState("up" if connected else "reconnecting", time.time())
        self._connected_at_start = connected
        self._stop = threading.Event()
        self._broken = threading.Event()  # set by a forward that found the transport dead
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> LinkState:
        with self._cond:
            return self._state

    def _set(self, state: LinkState) -> None:
        with self._cond:
            changed = state.state != self._state.state or state.attempts != self._state.attempts
            self._state = state
            self._cond.notify_all()
        if changed:
            self._on_change(state)

    def start(self) -> Link:
        self._thread = threading.Thread(target=self._watch, name="tbctl-link", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._broken.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    # --- used by forwards (any thread) ---

    def open_channel(self, dest: tuple[str, int], origin: tuple[str, int], *, socket_path: str | None = None) -> Any:
        """A `direct-tcpip` channel to `dest`, or a `direct-streamlocal@openssh.com` one to the unix socket
        `socket_path`, on the current transport (waiting out a reconnect)."""
        deadline = time.monotonic() + CLIENT_WAIT
        while True:
            with self._cond:
                while self._state.state == "reconnecting" and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SSHError(f"{self.host.name} is reconnecting")
                    self._cond.wait(left)
                if self._state.state == "down" or self._stop.is_set():
                    raise SSHError(f"the connection to {self.host.name} is down: {self._state.error}")
            try:
                if socket_path is not None:
                    from tbctl.hosts.paramiko.streamlocal import open_streamlocal

                    return open_streamlocal(self.host.current_transport, socket_path, timeout=CLIENT_WAIT)
                return self.host.current_transport.open_channel("direct-tcpip", dest, origin, timeout=CLIENT_WAIT)
            except paramiko.ChannelException:
                raise  # the remote end refused (nothing listens there): not a link problem
            except (paramiko.SSHException, EOFError, OSError):
                self._broken.set()  # wake the watcher now rather than at its next ping
                with self._cond:
                    if self._state.state == "up":
                        self._cond.wait(0.5)
                if time.monotonic() >= deadline:
                    raise

    # --- the watcher thread ---

    def _watch(self) -> None:
        try:
            self._watch_until_stopped()
        except Exception as exc:  # never end silently: a forward shown as reconnecting forever helps nobody
            self._set(LinkState("down", time.time(), self.state.attempts,
                                f"the connection watcher stopped: {_describe(exc)}"))

    def _watch_until_stopped(self) -> None:
        if not self._connected_at_start and not self._reconnect("not connected yet"):
            return
        while not self._stop.is_set():
            self._broken.wait(self.interval)
            if self._stop.is_set():
                return
            self._broken.clear()
            try:
                if not self.host.current_transport.is_active():
                    raise SSHError("the connection closed")
                self.host.ping(timeout=self.ping_timeout)
            except (SSHError, paramiko.SSHException, EOFError, OSError) as exc:
                if not self._reconnect(str(exc)):
                    return

    def _reconnect(self, why: str) -> bool:
        """Until connected (True), told to stop, or a person would have to answer (False, state "down").

        Any failure to connect is retried with backoff (an unreachable host, a probe that cannot start
        yet, a garbled greeting), its message kept in the state for `ls`; only a refusal that no retry can
        change (authentication, host key) ends it. Never connects outside the retry loop."""
        if self.host.asked_for:
            how = "ssh-add the key, or run the command again" if "passphrase" in self.host.asked_for else \
                "run the command again"
            self._set(LinkState("down", time.time(), 0, f"{why}; reconnecting needs {self.host.asked_for}, "
                                f"which cannot be given unattended: {how}"))
            return False
        since, attempts = time.time(), 0
        self._set(LinkState("reconnecting", since, attempts, why))
        while not self._stop.is_set():
            try:
                self.host.reconnect()
                self._set(LinkState("up", time.time()))
                return True
            except SSHError as exc:
                attempts += 1
                if _no_retry_helps(exc):
                    self._set(LinkState("down", time.time(), attempts, exc.message))
                    return False
                self._set(LinkState("reconnecting", since, attempts, exc.message))
            except Exception as exc:  # NotFound / ProbeError from the probe, a ValueError from its greeting, ...
                attempts += 1
                self._set(LinkState("reconnecting", since, attempts, _describe(exc)))
            self._stop.wait(backoff_delay(attempts))
        return False


def _no_retry_helps(exc: SSHError) -> bool:
    """A refusal that only a person can change: the host key, or authentication (including a server that
    wants a password or 2FA answer on top of the key)."""
    return isinstance(exc, (HostKeyRejected, AuthFailed))


def _describe(exc: BaseException) -> str:
    return getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"
