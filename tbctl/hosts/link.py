"""What any SSH backend tells about its connection, and the reconnect policy both backends share.

A link is `up`, `reconnecting` (since when, how many attempts, the last error) or `down` for good (a person
would have to answer, or the host key or credentials are wrong). `via` says how the host is reached, so `ls`
and the forwarder's log can tell a ride on the user's own ControlMaster from a connection of tbctl's."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, Protocol

LinkStateName = Literal["up", "reconnecting", "down"]
DEFAULT_PING_INTERVAL = 5.0  # seconds; ServerAliveInterval from ssh_config overrides it
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
CLIENT_WAIT = 5.0  # how long a new client waits for a reconnect before it is refused
NEEDS_A_PERSON = ("reconnecting needs a password or 2FA answer, which cannot be given unattended: "
                  "run the command again")


@dataclass(frozen=True)
class LinkState:
    state: LinkStateName
    since: float
    attempts: int = 0
    error: str = ""
    via: str = ""


def backoff_delay(attempts: int) -> float:
    """Seconds before reconnect attempt `attempts + 1`: doubling from 0.5 s to 30 s, with ±20 % jitter so
    forwarders of many hosts do not retry in step."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempts, 10)) * random.uniform(0.8, 1.2)


class Forward(Protocol):
    """A local port on this machine that reaches a port on a host, whichever backend carries it."""

    local_port: int

    def start(self) -> Forward:
        """Begin listening on 127.0.0.1:local_port (PortBusy when it is taken)."""

    def close(self) -> None: ...

    @property
    def listening(self) -> bool:
        """Whether 127.0.0.1:local_port accepts connections now (False while the link is re-made)."""

    @property
    def errors(self) -> list[BaseException]:
        """Failures that end the forward (the foreground command raises the first)."""

    @property
    def active_connections(self) -> int: ...

    @property
    def served(self) -> int: ...
