"""`down`: stop TensorBoards by port, pid or logdir (or all of this user's), end the background forwards
that lead to them, and clean what they leave; with `--job`, end the steps tbctl started in a Slurm job
(`scancel JOB.STEP`, never the job), their forwards and records. Whether anything refused to end decides
the exit code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tbctl.core import slurm
from tbctl.core.forwards import end_forwards
from tbctl.core.instances import launched_as, list_instances, select
from tbctl.core.stopping import FAILED, stop_instances
from tbctl.errors import NotFound, TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.records import ForwardRecord, InstanceRecord
from tbctl.state import StateStore

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.core.host_opener import HostOpener



@dataclass(frozen=True)
class Ended:
    outcomes: tuple[StopOutcome, ...]
    closed_forwards: tuple[ForwardRecord, ...]  # the forward records ended
    warnings: tuple[str, ...]
    job: str | None = None  # the Slurm job whose steps these were
    pulls: tuple[str, ...] = ()  # the ids of the pulls ended (`up --pull … --detach`)
    purged: tuple[str, ...] = ()  # the mirrors deleted (--purge)


def end(hosts: HostOpener, settings: Settings, store: StateStore, target: str | None, *, host_spec: str | None,
        all_instances: bool, force: bool, timeout: float | None, connect_timeout: float | None,
        job: str | None, purge: bool = False) -> Ended:
    """`down`: with `job`, every step tbctl started in it (through the login node, `host_spec`); else what
    `down_with_forwards` ends, waiting `timeout` (else the stop_timeout setting) before SIGKILL."""
    if job is not None:
        if target is not None or all_instances:
            raise UsageError("--job names what to end; give no target and no --all with it")
        with hosts.open(host_spec, connect_timeout=connect_timeout) as login:
            outcomes, closed, warnings = down_job(login, store, job)
        return Ended(tuple(outcomes), tuple(closed), tuple(warnings), job=job)
    from tbctl.core.pull import end_pulls, purge_mirrors, stopper
    from tbctl.models import LOCAL_HOST_NAME

    if purge and target is None and not all_instances and host_spec is None:  # `down --purge`: mirrors only
        return Ended((), (), (), purged=tuple(purge_mirrors(store)))
    result = down_with_forwards(hosts, store, target, host_spec=host_spec, all_instances=all_instances, force=force,
                                timeout=timeout or settings.stop_timeout, connect_timeout=connect_timeout)
    # A pull ends with its TensorBoard (`down PORT`), or with everything here (`down --all`).
    stopped = {o.instance.pid for o in result.outcomes if o.instance.host == LOCAL_HOST_NAME}
    pulls = end_pulls(store, lambda p: (all_instances and host_spec is None) or p.instance_pid in stopped,
                      stop=stopper(hosts, store))
    purged = purge_mirrors(store) if purge else []
    return Ended(tuple(result.outcomes), tuple(result.closed_forwards), tuple(result.warnings),
                 pulls=tuple(p.id for p in pulls), purged=tuple(purged))


def require_ended(ended: Ended) -> None:
    """TbctlError (exit 1) when something named could not be ended (another user's, or it survived SIGKILL)."""
    failed: Sequence[StopOutcome] = [o for o in ended.outcomes if o.outcome in FAILED]
    if not failed:
        return
    if ended.job is not None:
        raise TbctlError("a step could not be ended")
    raise TbctlError(f"{len(failed)} TensorBoard(s) could not be stopped")


@dataclass(frozen=True)
class DownResult:
    outcomes: list[StopOutcome]
    closed_forwards: list[ForwardRecord]  # the forwards ended
    warnings: list[str] = field(default_factory=list)


def down_with_forwards(
    hosts: HostOpener, store: StateStore, target: str | None, *, host_spec: str | None,
    all_instances: bool, force: bool, timeout: float, connect_timeout: float | None = None,
) -> DownResult:
    """`down LOCAL_PORT` of a detached forward ends that forward; `down --host H` alone every forward to H;
    otherwise the TensorBoards named on the host (`host_spec`), with the forwards to them, and with
    `--all` here, every forward. A TensorBoard tbctl started for an ended forward stops with it."""

    def opener(spec: str | None) -> Host:
        return hosts.open(spec, connect_timeout=connect_timeout)

    forwarded = {f.local_port for f in store.forwards()}
    outcomes: list[StopOutcome] = []
    if host_spec is None and target is not None and target.isdigit() and int(target) in forwarded:
        closed = end_forwards(store, lambda r: r.local_port == int(target))
    elif host_spec is not None and target is None and not all_instances:
        closed = end_forwards(store, lambda r: r.host == host_spec)
    else:
        with opener(host_spec) as host:
            outcomes = down(host, store, target, all_instances=all_instances, force=force, timeout=timeout)
            name = host.name
        gone = {o.instance.pid for o in outcomes if o.outcome in ("stopped", "killed", "gone", "cleaned")}
        everything = all_instances and host_spec is None  # everything of ours, here and behind every forward
        closed = end_forwards(store, lambda r: everything or (
            r.host == name and (all_instances or r.instance_pid in gone)))
    stopped = {(o.instance.host, o.instance.pid) for o in outcomes}  # a pid names a process on one host only
    more, warnings = _stop_forwarded_instances(opener, store, [r for r in closed if (r.host, r.instance_pid) not in stopped],
                                               force=force, timeout=timeout)
    return DownResult(outcomes + more, closed, warnings)


def _stop_forwarded_instances(opener: Callable[[str | None], Host], store: StateStore, closed: list[ForwardRecord],
                              *, force: bool, timeout: float) -> tuple[list[StopOutcome], list[str]]:
    """Stop the TensorBoards tbctl started for forwards that were just ended (not reused or kept ones):
    each the very process the forward was made for, by pid *and* start, never whatever has its pid now."""
    by_host: dict[str, list[tuple[int, float]]] = {}
    for rec in closed:
        if rec.stop_instance and rec.instance_pid is not None and rec.instance_create_time is not None:
            by_host.setdefault(rec.host, []).append((rec.instance_pid, rec.instance_create_time))
    outcomes: list[StopOutcome] = []
    warnings: list[str] = []
    for name, identities in by_host.items():
        try:
            with opener(name) as host:
                chosen = [i for i in list_instances(host, store) if i.is_running
                          and any(launched_as(i, pid, ct) for pid, ct in identities)]
                outcomes += stop_instances(host, store, chosen, force=force, timeout=timeout)
        except TbctlError as exc:
            warnings.append(f"could not stop the TensorBoard(s) tbctl started on {name}: {exc.message}")
    return outcomes, warnings


def down(
    host: Host, store: StateStore, target: str | None, *, all_instances: bool, force: bool, timeout: float
) -> list[StopOutcome]:
    if target is None and not all_instances:
        raise UsageError("say which TensorBoard to stop", hint="give a port, a pid or a logdir, or --all")
    if target is not None and all_instances:
        raise UsageError("give a target or --all, not both")
    instances = list_instances(host, store)
    if all_instances:
        chosen = [i for i in instances if i.user == host.user]
    else:
        assert target is not None
        chosen = select(host, instances, target)
    return stop_instances(host, store, chosen, force=force, timeout=timeout)


# --- Slurm job steps (`down --job`) ---


def _records(store: StateStore, login: str, job: str | None = None) -> list[InstanceRecord]:
    return [r for r in store.for_host(login) if r.job is not None and (job is None or job in (r.job.id, r.job.display))]


def _end(login: Host, store: StateStore, rec: InstanceRecord) -> tuple[str, list[ForwardRecord], str, bool]:
    """scancel the step while its job runs, close its forwards, drop the record: (what scancel said,
    forwards, the job's state, whether a step was ended)."""
    job = rec.job
    assert job is not None  # _records gives job steps only
    said, ended = "", False
    state = slurm.states(login, [job.id]).get(job.id, "UNKNOWN")
    if state == "RUNNING":
        live = {s.step for s in slurm.steps(login, [job.id])}
        if job.step in live:
            said = slurm.cancel_step(login, job.id, job.step)
            ended = not said
    closed = end_forwards(store, lambda r: r.host == job.node_host and r.remote_port == rec.port)
    if not said:
        store.remove(login.name, {(rec.pid, rec.create_time)})
    return said, closed, state, ended


def end_step(login: Host, store: StateStore, inst: TensorBoardInstance) -> str:
    """The step of this instance (Ctrl-C of a foreground `up --job`). "" when done, else scancel's words."""
    for rec in _records(store, login.name, inst.job):
        if rec.pid == inst.pid and rec.job is not None and f"{rec.job.id}.{rec.job.step}" == inst.step:
            return _end(login, store, rec)[0]
    return ""


def down_job(login: Host, store: StateStore, job: str) -> tuple[list[StopOutcome], list[ForwardRecord], list[str]]:
    """`down --job J --host LOGIN`: every step tbctl started in J. (outcomes, closed forwards, warnings)."""
    job = slurm.check_job_id(job)
    recs = _records(store, login.name, job)
    if not recs:
        raise NotFound(f"tbctl started nothing in job {job} on {login.name}", hint=f"`tbctl ls --host {login.name}` shows what it did")
    outcomes: list[StopOutcome] = []
    closed: list[ForwardRecord] = []
    warnings: list[str] = []
    for rec in recs:
        said, forwards, state, ended = _end(login, store, rec)
        closed += forwards
        inst = slurm.job_instance(rec, login.user, "exited", state)
        if said:
            warnings.append(f"scancel {inst.step}: {said}")
            outcomes.append(StopOutcome(inst, "survived"))
        else:  # a step that ended with its job leaves only its record to remove
            outcomes.append(StopOutcome(inst, "stopped" if ended else "cleaned"))
    return outcomes, closed, warnings
