"""Ending what tbctl started in a Slurm job: its TensorBoard step (`scancel JOB.STEP`, never the job),
the step's background forward, and the record."""

from __future__ import annotations

from tbctl.core import slurm
from tbctl.core.forwards import end_forwards
from tbctl.core.job_up import job_instance
from tbctl.errors import NotFound
from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.records import ForwardRecord, InstanceRecord
from tbctl.state import StateStore


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
        inst = job_instance(rec, login.user, "exited", state)
        if said:
            warnings.append(f"scancel {inst.step}: {said}")
            outcomes.append(StopOutcome(inst, "survived"))
        else:  # a step that ended with its job leaves only its record to remove
            outcomes.append(StopOutcome(inst, "stopped" if ended else "cleaned"))
    return outcomes, closed, warnings
