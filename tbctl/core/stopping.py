"""TERM, wait, KILL: the one way tbctl stops a process, pid-reuse safe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tbctl.hosts.base import Host

Outcome = Literal["stopped", "killed", "gone", "denied", "protected", "survived"]


def terminate(
    host: Host, procs: Sequence[tuple[int, float | None]], *, force: bool, timeout: float
) -> dict[int, Outcome]:
    """Stop each (pid, create_time): SIGTERM and wait `timeout`, then SIGKILL (at once with `force`).

    The create_time travels with the pid to the host, which refuses to signal a pid that now belongs to
    another process. Returns an outcome per pid.
    """
    outcomes: dict[int, Outcome] = {}
    signalled: list[tuple[int, float | None]] = []
    first = "SIGKILL" if force else "SIGTERM"
    for pid, ct in procs:
        sent = host.send_signal(pid, ct, first)
        if sent == "sent":
            signalled.append((pid, ct))
        else:
            outcomes[pid] = sent  # type: ignore[assignment]
    if not signalled:
        return outcomes
    still = host.wait_gone(signalled, timeout if not force else min(timeout, 5.0))
    for pid, _ in signalled:
        if pid not in still:
            outcomes[pid] = "killed" if force else "stopped"
    if force or not still:
        for pid in still:
            outcomes[pid] = "survived"
        return outcomes
    escalated = [(pid, ct) for pid, ct in signalled if pid in still]
    for pid, ct in escalated:
        host.send_signal(pid, ct, "SIGKILL")
    survivors = host.wait_gone(escalated, 5.0)
    for pid, _ in escalated:
        outcomes[pid] = "survived" if pid in survivors else "killed"
    return outcomes
