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
    pulls: tuple[str, ...] = ()  # the ids of the pulls ended (`up --pull … --detach`)
    purged: tuple[str, ...] = ()  # the mirrors deleted (--purge)


def end(hosts: Reach, store: StateStore, target: str | None, *, host_spec: str | None, all_instances: bool,
        force: bool, timeout: float | None, connect_timeout: float | None, job: str | None,
        purge: bool = False) -> Ended:
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
    from tbctl.core.pull import end_pulls, purge_mirrors, stopper
    from tbctl.models import LOCAL_HOST_NAME

    if purge and target is None and not all_instances and host_spec is None:  # `down --purge`: mirrors only
        return Ended((), (), (), purged=tuple(purge_mirrors(store)))
    result = down_with_forwards(opener, store, target, host_spec=host_spec, all_instances=all_instances, force=force,
                                timeout=timeout or hosts.settings.stop_timeout)
    # A pull ends with its TensorBoard (`down PORT`), or with everything here (`down --all`).
    stopped = {o.instance.pid for o in result.outcomes if o.instance.host == LOCAL_HOST_NAME}
    pulls = end_pulls(store, lambda p: (all_instances and host_spec is None) or p.instance_pid in stopped,
                      stop=stopper(hosts, store))
    purged = purge_mirrors(store) if purge else []
    return Ended(tuple(result.outcomes), tuple(result.closed_forwards), tuple(result.warnings),
                 pulls=tuple(p.id for p in pulls), purged=tuple(purged))


def require_ended(ended: Ended) -> None:
    """TbctlError (exit 1) when something named could not be ended (another user's, or it survived SIGKILL)."""
    from tbctl.core.down import FAILED

    failed: Sequence[StopOutcome] = [o for o in ended.outcomes if o.outcome in FAILED]
    if not failed:
        return
    if ended.job is not None:
        raise TbctlError("a step could not be ended")
    raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")
