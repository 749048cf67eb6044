"""Slurm, asked on the login node: which job, in which state, on which node, in which directory; the steps
tbctl starts in a job, and ending them. Every scheduler command is a fixed argv run by the probe on that
host (no shell), its output read from explicit, machine-readable format fields."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tbctl.errors import NotFound, SSHError, TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.hosts.host_spec import is_host_name
from tbctl.models import TensorBoardInstance
from tbctl.records import InstanceRecord
from tbctl.state import StateStore
from tbctl.tensorboard import flag_value, normalize_path_prefix

SEP = "\x1f"  # between squeue's fields: a character no job name, path or reason contains
# numeric job id (unique per array task), id as shown (123_4), state, reason, batch host, node list, user,
# submit time, name, work dir: the free-text fields last
JOB_FIELDS = SEP.join(["%A", "%i", "%T", "%r", "%B", "%N", "%u", "%V", "%j", "%Z"])
STEP_FIELDS = SEP.join(["%i", "%j", "%N"])
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
QUERY_TIMEOUT = 30.0
ENDED_STATES = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT")


@dataclass(frozen=True)
class Job:
    id: str  # the numeric id srun --jobid and scancel take (an array task has its own)
    display: str  # as squeue shows it: 123, or 123_4 for an array task
    state: str  # RUNNING, PENDING, COMPLETED, CANCELLED, TIMEOUT…
    reason: str  # why it is pending (Priority, Resources…), or None
    batch_host: str
    node_list: str  # a hostlist expression (node[1-3])
    user: str
    submitted: str
    name: str
    work_dir: str


@dataclass(frozen=True)
class Step:
    id: str  # JOB.STEP as squeue shows it
    name: str
    nodes: str

    @property
    def step(self) -> str:
        return self.id.rsplit(".", 1)[-1]


def check_job_id(job: str) -> str:
    text = job.strip()
    if not _JOB_ID.match(text):
        raise UsageError(f"{job!r} is not a Slurm job id", hint="give a job id (123) or an array task (123_4), or --job-name NAME")
    return text


def run(login: Host, argv: Sequence[str], *, timeout: float = QUERY_TIMEOUT) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a scheduler command on `login`; NotFound when it is not there."""
    answer = login.run(argv, timeout=timeout)
    if answer.get("rc") is None:
        error = str(answer.get("error") or "failed")
        if "not found" in error:
            raise NotFound(f"no Slurm on {login.name}: {error}",
                           hint="--host must name the cluster's login node, where squeue and srun work")
        raise TbctlError(f"{argv[0]} on {login.name}: {error}")
    return int(answer["rc"]), str(answer["stdout"]), str(answer["stderr"])


def _said(stdout: str, stderr: str) -> str:
    lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _parse_jobs(stdout: str) -> list[Job]:
    jobs = []
    for line in stdout.splitlines():
        parts = line.split(SEP)
        if len(parts) != 10:
            continue
        jobs.append(Job(*[p.strip() for p in parts[:9]], work_dir=parts[9].strip()))  # type: ignore[misc]
    return jobs


def show_job(login: Host, job: str) -> Job:
    """The job as squeue knows it (running, pending, or ended within the controller's MinJobAge)."""
    rc, out, err = run(login, ["squeue", "--noheader", "--states=all", f"--jobs={job}", f"--format={JOB_FIELDS}"])
    jobs = _parse_jobs(out) if rc == 0 else []
    found = [j for j in jobs if j.display == job or j.id == job] or jobs[:1]
    if not found:
        said = _said(out, err) if rc != 0 else "no such job"
        raise NotFound(f"job {job} is not known to Slurm on {login.name} (squeue: {said})",
                       hint=f"`squeue --me` on {login.name} lists your jobs; an ended job is forgotten after a while")
    return found[0]


def newest_named(login: Host, name: str) -> Job:
    """This user's newest RUNNING job named `name`; else what its newest job of that name is doing."""
    if "," in name or not name.strip():
        raise UsageError(f"{name!r} is not a job name tbctl can look up", hint="give the job id instead")
    rc, out, err = run(login, ["squeue", "--noheader", "--states=all", f"--user={login.user}", f"--name={name}",
                               f"--format={JOB_FIELDS}"])
    if rc != 0:
        raise NotFound(f"squeue on {login.name} failed: {_said(out, err)}")
    jobs = [j for j in _parse_jobs(out) if j.name == name]
    if not jobs:
        raise NotFound(f"no job of yours named {name!r} on {login.name}", hint=f"`squeue --me` on {login.name} lists your jobs")
    newest = sorted(jobs, key=lambda j: (j.submitted, int(j.id) if j.id.isdigit() else 0))
    running = [j for j in newest if j.state == "RUNNING"]
    return (running or newest)[-1]


def require_running(login: Host, job: Job, *, wait: bool, timeout: float | None,
                    progress: Callable[[str], None], refetch: Callable[[], Job]) -> Job:
    """The job, RUNNING; a pending one is waited for with `wait`, else refused (exit 4) with its reason."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while job.state in ("PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED") and wait:
        progress(f"waiting for job {job.display} to start ({job.state.lower()}: {job.reason})")
        if deadline is not None and time.monotonic() >= deadline:
            raise NotFound(f"job {job.display} did not start within {timeout:g} s ({job.state}, reason: {job.reason})")
        time.sleep(1.0)
        job = refetch()
    if job.state == "RUNNING":
        return job
    if job.state == "PENDING":
        raise NotFound(f"job {job.display} is pending (reason: {job.reason}); it has no node to serve from yet",
                       hint="--wait waits until it starts")
    raise NotFound(f"job {job.display} is {job.state}, not running (squeue on {login.name})",
                   hint="TensorBoard runs inside a running job; for an ended one, `tbctl up --host` on the login node serves its logdir")


def node_name(login: Host, name: str, what: str) -> str:
    """`name`, which the login node gave as a node's name, when it is a host name tbctl may connect to:
    SSH tooling reads a name like `n;id>f` as shell (paramiko's `Match exec`, a ProxyCommand's %h)."""
    if not is_host_name(name):
        raise SSHError(f"{login.name} named {name!r} as {what}, which is not a host name; tbctl will not connect to it",
                       hint="a node name has letters, digits, '.', '-' and '_' only; Slurm itself prints no other")
    return name


def hostnames(login: Host, expression: str) -> list[str]:
    rc, out, err = run(login, ["scontrol", "show", "hostnames", expression])
    if rc != 0:
        raise TbctlError(f"scontrol could not expand {expression!r} on {login.name}: {_said(out, err)}")
    return [line.strip() for line in out.splitlines() if line.strip()]


def choose_node(login: Host, job: Job, wanted: str | None) -> str:
    """The node to serve from: the job's batch host, or `wanted` among its nodes (a name checked as a host
    name either way, before anything connects to it)."""
    if wanted is None:
        if not job.batch_host or job.batch_host in ("n/a", "(null)"):
            raise NotFound(f"job {job.display} has no batch host", hint="name one of its nodes with --node")
        return node_name(login, job.batch_host, f"job {job.display}'s batch host")
    if not is_host_name(wanted):
        raise UsageError(f"--node {wanted!r} is not a node name", hint="`squeue -j JOB -o %N` lists the job's nodes")
    nodes = hostnames(login, job.node_list)
    if wanted not in nodes:
        raise UsageError(f"node {wanted} is not one of job {job.display}'s nodes ({', '.join(nodes)})")
    return wanted


def steps(login: Host, job_ids: Iterable[str]) -> list[Step]:
    ids = ",".join(sorted(set(job_ids)))
    if not ids:
        return []
    rc, out, _ = run(login, ["squeue", "--noheader", "--steps", f"--jobs={ids}", f"--format={STEP_FIELDS}"])
    if rc != 0:
        return []
    return [Step(*[p.strip() for p in line.split(SEP)]) for line in out.splitlines() if line.count(SEP) == 2]


def states(login: Host, job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: state} of jobs squeue still knows (one call for all)."""
    ids = sorted(set(job_ids))
    out: dict[str, str] = {}
    if not ids:
        return out
    rc, stdout, _ = run(login, ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--format={JOB_FIELDS}"])
    for job in _parse_jobs(stdout) if rc == 0 else []:
        out[job.id] = job.state
    if rc != 0 and len(ids) > 1:  # one forgotten job fails the lot: ask one by one
        for job_id in ids:
            out.update(states(login, [job_id]))
    return out


STEP_STOP_SECONDS = 5.0


def cancel_step(login: Host, job_id: str, step: str) -> str:
    """That step only, never the job: SIGTERM to its tasks first (`scancel --signal=TERM JOB.STEP`, so
    TensorBoard exits cleanly and removes its info file), then `scancel JOB.STEP` if it is still listed
    after a few seconds. Returns what scancel said when it failed, else ""."""
    step_id = f"{job_id}.{step}"
    rc, out, err = run(login, ["scancel", "--signal=TERM", step_id])
    if rc == 0:
        deadline = time.monotonic() + STEP_STOP_SECONDS
        while time.monotonic() < deadline:
            if all(s.step != step for s in steps(login, [job_id])):
                return ""
            time.sleep(0.1)
    rc, out, err = run(login, ["scancel", step_id])
    return "" if rc == 0 else _said(out, err)


def node_address(login: Host, node: str) -> str:
    """The node's address on the cluster network (`scontrol show node -o`: NodeAddr)."""
    rc, out, err = run(login, ["scontrol", "show", "node", "--oneliner", node])
    found = re.search(r"(?:^|\s)NodeAddr=(\S+)", out) if rc == 0 else None
    if found is None:
        raise TbctlError(f"scontrol on {login.name} does not say {node}'s address: {_said(out, err)}")
    address = found.group(1)
    if re.fullmatch(r"[0-9A-Fa-f:.]+", address):  # an IP address, v6 included
        return address
    return node_name(login, address, f"{node}'s address")


# --- the steps tbctl started, as instances (`ls`, `down --job`, a foreground `up --job`) ---


def job_instance(rec: InstanceRecord, user: str | None, status: str, job_state: str, note: str = "") -> TensorBoardInstance:
    """A record of a TensorBoard tbctl started as a job step, as an instance of the login node's listing."""
    job = rec.job
    assert job is not None, "not the record of a job step"
    argv = list(rec.argv)
    return TensorBoardInstance(
        host=rec.host, pid=rec.pid, port=rec.port, logdir=rec.logdir,
        logdir_arg=rec.logdir, user=user, status=status, started_by="tbctl",  # type: ignore[arg-type]
        create_time=rec.create_time, path_prefix=normalize_path_prefix(flag_value(argv, "path_prefix")),
        bind=flag_value(argv, "host") or "127.0.0.1", log_path=rec.log_path, cmdline=rec.argv, note=note,
        recorded_create_time=rec.create_time, start_ticks=rec.start_ticks,
        job=job.display, job_state=job_state, node=job.node, step=f"{job.id}.{job.step}",
        socket=flag_value(argv, "unix_socket"),
    )


def job_instances(login: Host, store: StateStore) -> list[TensorBoardInstance]:
    """tbctl's job-step TensorBoards recorded for this login node, with their jobs' states from squeue:
    serving while the job runs and the step is listed, else ended with the job's final state."""
    recs = [(r, r.job) for r in store.for_host(login.name) if r.job is not None]
    if not recs:
        return []
    ids = [job.id for _, job in recs]
    known = states(login, ids)
    live = {s.id for s in steps(login, [i for i in ids if known.get(i) == "RUNNING"])}
    out = []
    for rec, job in recs:
        state = known.get(job.id, "")
        step_id = f"{job.id}.{job.step}"
        shown = {s.split(".", 1)[1] for s in live if s.startswith(f"{job.display}.") or s.startswith(f"{job.id}.")}
        if state == "RUNNING" and job.step in shown:
            out.append(job_instance(rec, login.user, "serving", state))
        else:
            why = f"job {job.display} {state}" if state and state != "RUNNING" else \
                f"step {step_id} ended" if state else f"job {job.display} is no longer known to Slurm"
            out.append(job_instance(rec, login.user, "exited", state or "UNKNOWN", note=why))
    return out


def step_ended(login: Host, node: Host, inst: TensorBoardInstance) -> str:
    """"" while the step's TensorBoard runs, else what became of it (its job ended, or the step alone)."""
    if node is not login and inst.pid is not None:
        if node.alive(inst.pid, inst.create_time, inst.start_ticks):
            return ""
    job_id, _, step = str(inst.step).rpartition(".")
    state = states(login, [job_id]).get(job_id, "")
    if state == "RUNNING" and step in {s.step for s in steps(login, [job_id])}:
        return ""
    if state and state != "RUNNING":
        return f"job {inst.job} ended ({state}), and TensorBoard's step with it"
    return f"TensorBoard's step {inst.step} ended; job {inst.job} is {state or 'no longer known to Slurm'}"
