"""Ending what tbctl started in a Slurm job: its TensorBoard step (`scancel JOB.STEP`, never the job),
the step's background forward, and the record."""

from __future__ import annotations

from typing import Any

from tbctl.core import slurm
from tbctl.core.forwards import end_forwards
from tbctl.core.job_up import job_instance
from tbctl.errors import NotFound
from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.state import StateStore


def _records(store: StateStore, login: str, job: str | None = None) -> list[dict[str, Any]]:
    return [r for r in store.for_host(login) if isinstance(r.get("job"), dict)
            and (job is None or job in (str(r["job"].get("id")), str(r["job"].get("display"))))]


def _end(login: Host, store: StateStore, rec: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str, bool]:
    """scancel the step while its job runs, close its forwards, drop the record: (what scancel said,
    forwards, the job's state, whether a step was ended)."""
    job = rec["job"]
    said, ended = "", False
    state = slurm.states(login, [str(job["id"])]).get(str(job["id"]), "UNKNOWN")
    if state == "RUNNING":
        live = {s.step for s in slurm.steps(login, [str(job["id"])])}
        if str(job["step"]) in live:
            said = slurm.cancel_step(login, str(job["id"]), str(job["step"]))
            ended = not said
    closed = end_forwards(store, lambda r: r["host"] == job.get("node_host") and r["remote_port"] == rec.get("port"))
    if not said:
        store.remove(login.name, {(rec["pid"], rec.get("create_time"))})
    return said, closed, state, ended


def end_step(login: Host, store: StateStore, inst: TensorBoardInstance) -> str:
    """The step of this instance (Ctrl-C of a foreground `up --job`). "" when done, else scancel's words."""
    for rec in _records(store, login.name, inst.job):
        if rec.get("pid") == inst.pid and f"{rec['job']['id']}.{rec['job']['step']}" == inst.step:
            return _end(login, store, rec)[0]
    return ""


def down_job(login: Host, store: StateStore, job: str) -> tuple[list[StopOutcome], list[dict[str, Any]], list[str]]:
    """`down --job J --host LOGIN`: every step tbctl started in J. (outcomes, closed forwards, warnings)."""
    job = slurm.check_job_id(job)
    recs = _records(store, login.name, job)
    if not recs:
        raise NotFound(f"tbctl started nothing in job {job} on {login.name}", hint=f"`tbctl ls --host {login.name}` shows what it did")
    outcomes: list[StopOutcome] = []
    closed: list[dict[str, Any]] = []
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
