""""Is this port free?" means nothing would answer there instead of the server tbctl starts: tested with
real sockets on every loopback shape a holder takes on Linux, and the socket option each platform needs."""

from __future__ import annotations

import socket

import pytest

from tbctl import probe

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def _socket(family: socket.AddressFamily, addr: str, port: int, *, listen: bool = True,
            v6only: bool | None = None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if v6only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    sock.bind((addr, port))
    if listen:
        sock.listen()
    return sock


HOLDERS = {
    "listening on 0.0.0.0": (socket.AF_INET, "0.0.0.0", {}),
    "listening on [::] dual-stack": (socket.AF_INET6, "::", {"v6only": False}),
    "listening on [::] IPv6-only": (socket.AF_INET6, "::", {"v6only": True}),
    "listening on ::1 only": (socket.AF_INET6, "::1", {"v6only": True}),
    "listening on 127.0.0.1": (socket.AF_INET, "127.0.0.1", {}),
    "bound to 127.0.0.1, not listening": (socket.AF_INET, "127.0.0.1", {"listen": False}),
}


@pytest.mark.parametrize("shape", HOLDERS)
def test_a_port_anyone_holds_on_loopback_is_not_free(shape: str, port: int) -> None:
    family, addr, options = HOLDERS[shape]
    with _socket(family, addr, port, **options):
        assert not probe.bindable(port)
    assert probe.bindable(port)


def test_a_listener_on_another_address_leaves_loopback_free(port: int) -> None:
    with _socket(socket.AF_INET, "127.0.0.2", port):  # all of 127/8 is loopback on Linux
        assert probe.bindable(port)


@pytest.mark.parametrize("platform, option", [("linux", "SO_REUSEADDR"), ("darwin", "SO_REUSEADDR"),
                                              ("win32", "SO_EXCLUSIVEADDRUSE")])
def test_each_platform_binds_with_the_option_that_refuses_a_live_listener(platform: str, option: str) -> None:
    """Windows' SO_REUSEADDR would bind over a live listener; SO_EXCLUSIVEADDRUSE is its exclusive bind.
    Elsewhere SO_REUSEADDR, as werkzeug binds, so a port a killed server left in TIME_WAIT counts as free."""
    assert probe.bind_option_name(platform) == option
