"""Making a port on a host reachable from this machine, and holding it open in the foreground."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tbctl.config import PORT_SEARCH_SPAN, REMOTE_FORWARD_OFFSET
from tbctl.errors import NotFound, PortBusy, SSHError, TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.hosts.link import Forward
from tbctl.models import browser_url

VERIFY_TIMEOUT = 10.0
# A private instance has no port to add 10000 to: its forward's local end is the first free one from 16006,
# as for a TensorBoard on the default port.
PRIVATE_LOCAL_BASE = 6006


@dataclass
class Exposure:
    """Where this machine reaches a host's port: directly, or through a forward this command holds."""

    host: str
    remote_port: int
    local_port: int
    forwarder: Forward | None
    note: str = ""  # something the user should know about what is forwarded (e.g. it is not HTTP)
    remote_socket: str | None = None  # a private instance's unix socket (remote_port is then 0)

    def url(self, path_prefix: str = "") -> str:
        return browser_url(self.local_port, path_prefix)

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close()


def choose_local_port(local: Host, remote_port: int, requested: int | None) -> int:
    """`requested` if free (else exit 3 naming the holder); otherwise remote+10000 (6006 → 16006, as users
    already type it) or the next free port after it."""
    if requested is not None:
        if local.first_free_port([requested]) == requested:
            return requested
        holders = local.port_holders(requested)
        raise PortBusy(requested, holders, f"local port {requested} is in use",
                       hint="choose another --local-port, or leave it out to pick a free one")
    start = remote_port + REMOTE_FORWARD_OFFSET
    if start > 65535:
        start = 1024 + remote_port % 1000
    candidates = list(range(start, min(start + PORT_SEARCH_SPAN, 65536)))
    port = local.first_free_port(candidates)
    if port is None:
        raise PortBusy(start, [], f"no free local port in {candidates[0]}-{candidates[-1]}")
    return port


def require_listener(host: Host, port: int) -> None:
    """Something LISTENs on `port` of `host` (a forward to nothing would only fail later, in the browser)."""
    if not host.port_holders(port):
        raise NotFound(f"nothing listens on {host.name}:{port}",
                       hint=f"`tbctl ls --host {host.name}` shows its TensorBoards; "
                            f"`tbctl up --host {host.name}` starts one")


def expose(
    host: Host, local: Host, remote_port: int, *, local_port: int | None = None, check_path: str | None = None,
    remote_host: str = "127.0.0.1", remote_socket: str | None = None,
) -> Exposure:
    """Forward `remote_port` of `host` (or its unix socket `remote_socket`) to this machine when it is
    elsewhere; verify it answers through the forward before returning: `GET check_path` gives 200, or, with
    no check_path (anything that listens), something listens there and the local end accepts."""
    if host.reachable_here and remote_socket is None:
        return Exposure(host=host.name, remote_port=remote_port, local_port=remote_port, forwarder=None)
    if check_path is None:
        require_listener(host, remote_port)
    wanted = choose_local_port(local, remote_port or PRIVATE_LOCAL_BASE, local_port)
    forwarder = host.forward(remote_port, local_port=wanted, remote_host=remote_host, remote_socket=remote_socket)
    if forwarder is None:
        raise UsageError("a unix socket cannot be forwarded on this machine itself",
                         hint="a browser cannot open a unix socket; --private is for --host")
    forwarder.start()
    exposure = Exposure(host=host.name, remote_port=remote_port, local_port=forwarder.local_port, forwarder=forwarder,
                        remote_socket=remote_socket)
    try:
        exposure.note = _verify(local, exposure, check_path)
    except BaseException:
        forwarder.close()
        raise
    return exposure


def verify_http(local: Host, port: int, path: str, *, what: str, timeout: float = VERIFY_TIMEOUT) -> None:
    """`GET path` on 127.0.0.1:port answers 200 within `timeout` (a forward that just opened may need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = local.http_get(port, path, timeout=max(0.5, deadline - time.monotonic()))
        if answer.get("status") == 200:
            return
        if time.monotonic() >= deadline:
            raise TbctlError(f"the forward to {what} does not answer ({answer.get('error') or 'HTTP ' + str(answer.get('status'))})")
        time.sleep(0.1)


def _verify(local: Host, exposure: Exposure, check_path: str | None) -> str:
    """What to tell the user about the far end ("" when it is the HTTP server it should be)."""
    what = f"{exposure.host}:{exposure.remote_socket or exposure.remote_port}"
    if check_path is not None:
        verify_http(local, exposure.local_port, check_path, what=what)
        return ""
    answer = local.http_get(exposure.local_port, "/", timeout=VERIFY_TIMEOUT)
    if answer.get("status") is not None:
        return ""
    if answer.get("not_http"):  # SSH, SMTP, a database: they speak first, or not HTTP at all
        return f"{what} does not speak HTTP ({answer.get('error')}); forwarded as plain TCP"
    return f"{what} did not answer an HTTP request ({answer.get('error')}); forwarded as plain TCP"


def hold(exposure: Exposure, *, is_alive: Callable[[], bool], poll: float = 1.0,
         ended: Callable[[], str] | None = None) -> str:
    """Keep the forward open until interrupted (KeyboardInterrupt reaches the caller) or the connection dies,
    or until `ended` says why there is nothing left to forward (that reason is returned)."""
    pause = threading.Event()
    while not pause.wait(poll):
        if exposure.forwarder is not None and exposure.forwarder.errors:
            raise exposure.forwarder.errors[0]
        if not is_alive():
            raise SSHError(f"the connection to {exposure.host} was lost", hint="run the command again")
        why = ended() if ended is not None else ""
        if why:
            return why
    return ""  # not reached: nothing sets `pause`, it only paces the loop


@contextlib.contextmanager
def interrupt_on_hangup() -> Iterator[None]:
    """While holding a forward (or following a log), SIGTERM and SIGHUP (terminal closed) clean up like
    Ctrl-C does; so does Ctrl-Break on Windows (SIGBREAK), which has no SIGHUP."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    present = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, raise_interrupt) for sig in present}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
