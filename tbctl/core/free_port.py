"""`free-port`: who LISTENs on a port, and stopping them — never a mere client of the port."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from tbctl.core.stopping import terminate
from tbctl.errors import PortBusy
from tbctl.hosts.base import Host
from tbctl.models import FreePortResult, HolderOutcome, PortHolder, PortReport

if TYPE_CHECKING:
    from tbctl.config import Settings

VERIFY_SECONDS = 2.0  # a killed server's socket disappears within milliseconds; allow for slow hosts


@dataclass(frozen=True)
class FreePortSummary:
    """What `free-port` did, as its JSON prints it: who held the port, what became of each, and whether it
    is free now (before anything is stopped, `outcomes` is empty and `freed` says whether nobody held it)."""

    port: int
    host: str
    holders: tuple[PortHolder, ...]
    outcomes: tuple[HolderOutcome, ...]
    freed: bool
    dry_run: bool


def summary(report: PortReport, *, dry_run: bool, result: FreePortResult | None = None) -> FreePortSummary:
    return FreePortSummary(port=report.port, host=report.host, holders=report.holders,
                           outcomes=result.outcomes if result is not None else (),
                           freed=result.freed if result is not None else not report.holders, dry_run=dry_run)


def asked_pids(asking: Sequence[PortHolder]) -> str:
    return ", ".join(sorted({str(h.pid) for h in asking}))


def refuse_unconfirmed(report: PortReport, asking: Sequence[PortHolder], *,
                       hint: str = "pass --yes to stop it without asking") -> NoReturn:
    """Where nobody can be asked, holders that need a person's yes are left running (PortBusy, exit 3)."""
    raise PortBusy(report.port, report.holders, f"not stopping pid {asked_pids(asking)} without confirmation",
                   hint=hint)


def inspect(host: Host, port: int) -> PortReport:
    return PortReport(host=host.name, port=port, holders=tuple(host.port_holders(port)), user=host.user)


def needs_confirmation(report: PortReport, holder: PortHolder) -> bool:
    """Only this user's own TensorBoards are stopped without asking."""
    return not (holder.is_tensorboard and holder.user == report.user)


def is_foreign(report: PortReport, holder: PortHolder) -> bool:
    """Another user's process, which we do not try to signal (root may)."""
    return holder.pid is None or (holder.user != report.user and report.user != "root")


def to_confirm(report: PortReport) -> tuple[PortHolder, ...]:
    """The holders a person must agree to stop: all but this user's own TensorBoards, and not those we
    would not signal anyway."""
    return tuple(h for h in report.holders if needs_confirmation(report, h) and not is_foreign(report, h))


def require_freed(result: FreePortResult) -> None:
    """PortBusy (exit 3) unless the port is free now, saying when sudo is what it takes."""
    if result.freed:
        return
    denied = any(o.outcome == "denied" for o in result.outcomes)
    raise PortBusy(result.port, result.remaining, f"port {result.port} is still held",
                   hint="a process of another user needs sudo" if denied else None)


def free(host: Host, report: PortReport, *, force: bool, timeout: float | None, settings: Settings) -> FreePortResult:
    """Stop the holders (SIGTERM, and SIGKILL after `timeout`, else the stop_timeout setting; or SIGKILL at
    once with `force`), then wait for the port to be free."""
    timeout = timeout or settings.stop_timeout
    by_pid: dict[int, PortHolder] = {}
    outcomes: list[HolderOutcome] = []
    for holder in report.holders:
        if is_foreign(report, holder):
            outcomes.append(HolderOutcome(holder, "denied"))
        elif holder.pid is not None and holder.pid not in by_pid:
            by_pid[holder.pid] = holder
    results = terminate(host, [(h.pid, h.create_time) for h in by_pid.values() if h.pid is not None], force=force, timeout=timeout)
    killed_tensorboards: set[int] = set()
    for pid, holder in by_pid.items():
        outcome = results.get(pid, "gone")
        outcomes.append(HolderOutcome(holder, outcome))
        if holder.is_tensorboard and outcome == "killed":
            killed_tensorboards.add(pid)
    if killed_tensorboards:
        _remove_stale_info_files(host, killed_tensorboards)
    remaining = _wait_port_free(host, report.port)
    return FreePortResult(host=host.name, port=report.port, outcomes=tuple(outcomes), freed=not remaining,
                          remaining=tuple(remaining))


def _wait_port_free(host: Host, port: int) -> list[PortHolder]:
    deadline = time.monotonic() + VERIFY_SECONDS
    while True:
        remaining = host.port_holders(port)
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.05)


def _remove_stale_info_files(host: Host, pids: set[int]) -> None:
    for info in host.scan().get("info_files", []):
        content = info.get("content")
        if isinstance(content, dict) and content.get("pid") in pids and not info.get("pid_alive"):
            host.remove_info_file(info["path"])
