"""`down`: a job's steps (--job) or TensorBoards and forwards, ended, and whether anything refused to end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tbctl.errors import TbctlError, UsageError

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.core.reach import Reach
    from tbctl.models import StopOutcome
    from tbctl.records import ForwardRecord
    from tbctl.state import StateStore


@dataclass(frozen=True)
class Ended:
    outcomes: tuple[StopOutcome, ...]
    closed_forwards: tuple[ForwardRecord, ...]  # the forward records ended
    warnings: tuple[str, ...]
    job: str | None = None  # the Slurm job whose steps these were


def end(hosts: Reach, store: StateStore, target: str | None, *, host_spec: str | None, all_instances: bool,
        force: bool, timeout: float | None, connect_timeout: float | None, job: str | None) -> Ended:
    """With `job`, every step tbctl started in it (through the login node, `host_spec`); else what
    `down_with_forwards` ends, waiting `timeout` (else the stop_timeout setting) before SIGKILL."""

    def opener(spec: str | None) -> Host:
        return hosts.open(spec, connect_timeout=connect_timeout)

    if job is not None:
        from tbctl.core.job_down import down_job

        if target is not None or all_instances:
            raise UsageError("--job names what to end; give no target and no --all with it")
        with opener(host_spec) as login:
            outcomes, closed, warnings = down_job(login, store, job)
        return Ended(tuple(outcomes), tuple(closed), tuple(warnings), job=job)
    from tbctl.core.down import down_with_forwards

    result = down_with_forwards(opener, store, target, host_spec=host_spec, all_instances=all_instances, force=force,
                                timeout=timeout or hosts.settings.stop_timeout)
    return Ended(tuple(result.outcomes), tuple(result.closed_forwards), tuple(result.warnings))


def require_ended(ended: Ended) -> None:
    """TbctlError (exit 1) when something named could not be ended (another user's, or it survived SIGKILL)."""
    from tbctl.core.down import FAILED

    failed: Sequence[StopOutcome] = [o for o in ended.outcomes if o.outcome in FAILED]
    if not failed:
        return
    if ended.job is not None:
        raise TbctlError("a step could not be ended")
    raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")
