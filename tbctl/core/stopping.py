"""TERM, wait, KILL: the one way tbctl stops a process, pid-reuse safe; and stopping TensorBoards with it,
cleaning what they leave (`down`, and `up`, `up --pull` and the API stopping what they started)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.state import StateStore

FAILED = ("denied", "survived", "protected")  # outcomes that leave a TensorBoard running
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


def stop_instances(
    host: Host, store: StateStore, chosen: list[TensorBoardInstance], *, force: bool, timeout: float
) -> list[StopOutcome]:
    results: list[StopOutcome] = []
    live: list[TensorBoardInstance] = []
    for inst in chosen:
        if inst.has_ended or inst.pid is None:  # nothing to stop: clean what it left
            removed = inst.info_file is not None and host.remove_info_file(inst.info_file)
            _remove_socket(host, inst)
            results.append(StopOutcome(inst, "cleaned", info_file_removed=removed))
        elif inst.user != host.user and host.user != "root":
            results.append(StopOutcome(inst, "denied"))  # explained by the CLI; we do not try
        else:
            live.append(inst)
    outcomes = terminate(host, [(i.pid, i.create_time) for i in live if i.pid is not None], force=force, timeout=timeout)
    for inst in live:
        assert inst.pid is not None
        outcome = outcomes.get(inst.pid, "gone")
        removed = False
        # TensorBoard removes its info file on SIGTERM, not on SIGKILL nor on Windows' CTRL_BREAK (it has no
        # handler for it): clean up after any end (a file it removed itself is simply not there).
        if outcome in ("stopped", "killed", "gone") and inst.info_file is not None:
            removed = host.remove_info_file(inst.info_file)
        if outcome in ("stopped", "killed", "gone"):
            _remove_socket(host, inst)
        results.append(StopOutcome(inst, outcome, info_file_removed=removed))
    store.remove(host.name, {(r.instance.pid, r.instance.recorded_create_time) for r in results
                             if r.instance.pid is not None and r.outcome not in FAILED})
    return results


def _remove_socket(host: Host, inst: TensorBoardInstance) -> None:
    """A private instance's socket and directory: its launcher removes them when stopped, not when killed."""
    if inst.socket is not None and inst.user == host.user:
        host.remove_private_socket(inst.socket)
