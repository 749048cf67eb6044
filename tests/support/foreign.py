"""A port held by a process of another user, for tests that run as a normal user: whoever runs the suite
starts it and names its port in TBCTL_TEST_FOREIGN_PORT (.ci/run starts one as a user of its own). As root
there is no such thing: root may stop any user's process, and tbctl does."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest

FOREIGN_PORT_VAR = "TBCTL_TEST_FOREIGN_PORT"


@dataclass(frozen=True)
class ForeignListener:
    port: int

    def answers(self) -> bool:
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


def foreign_listener() -> ForeignListener:
    """The other user's listener on 127.0.0.1; the test is skipped where there is none to be had."""
    if os.geteuid() == 0:
        pytest.skip("as root another user's process is root's to stop: .ci/run's unprivileged layer runs this")
    handed = os.environ.get(FOREIGN_PORT_VAR)
    if not handed:
        pytest.skip(f"no port of another user's process was handed over in {FOREIGN_PORT_VAR}")
    listener = ForeignListener(int(handed))
    if not listener.answers():
        pytest.fail(f"{FOREIGN_PORT_VAR}={handed}, but nothing answers on 127.0.0.1:{handed}")
    return listener
