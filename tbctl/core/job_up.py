"""`up --host LOGIN --job J`: TensorBoard inside a running Slurm job's allocation, as a step of that job
(the session that holds it: core/job_session.py).

The login node is asked about the job and runs the step's `srun` client, detached (its own session, stdin
from /dev/null, its output to a log there); the compute node is reached through the login node as a jump
host, and its probe resolves the logdir, picks the port, proves TensorBoard ready and that it is the
port's listener, and finds its pid."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tbctl.core import slurm
from tbctl.core.stopping import terminate
from tbctl.core.up import (
    _BIND_FAILURE_MARKERS,
    BIND_RACE_RETRIES,
    _choose_port,
    _serves,
    private_args,
    taken_while_starting,
)
from tbctl.errors import SSHError, TbctlError, TensorBoardFailed, UsageError
from tbctl.hosts.base import Host
from tbctl.models import PortHolder, TensorBoardInstance, UpResult
from tbctl.probe import tensorboard_args
from tbctl.records import InstanceRecord, JobStep
from tbctl.state import StateStore
from tbctl.tensorboard import build_argv, flag_value, normalize_path_prefix, readiness_path

STEP_NAME = "tbctl-tensorboard"
STEP_SEEN_TIMEOUT = 15.0  # seconds from TensorBoard answering to squeue listing its step


@dataclass(frozen=True)
class JobUpRequest:
    job: str | None
    job_name: str | None
    node: str | None
    logdir: str
    port: int
    timeout: float
    wait: bool = False
    new: bool = False
    tensorboard: str | None = None
    env_prefix: str | None = None
    extra_args: tuple[str, ...] = ()
    tensorboard_from: str = "--tensorboard"  # where `tensorboard` was set: the flag, or a config file's line
    # The fallback where the cluster refuses ssh to compute nodes: TensorBoard binds the node's cluster
    # address and the login node's connection forwards to it. Only when asked: anyone on that network can reach it.
    bind_node_address: bool = False
    expose_to_network: bool = False  # a bind beyond loopback given after `--`, chosen by the user
    private: bool = False  # --private: the step serves on a unix socket on the node, forwarded through the login node


@dataclass(frozen=True)
class JobUp:
    result: UpResult
    node_host: Host
    job: slurm.Job
    step: str


def find_job(login: Host, request: JobUpRequest, progress: Callable[[str], None]) -> slurm.Job:
    if (request.job is None) == (request.job_name is None):
        raise UsageError("give a job: --job ID or --job-name NAME (one of them)")
    if request.job is not None:
        job_id = slurm.check_job_id(request.job)
        job = slurm.show_job(login, job_id)
        refetch = lambda: slurm.show_job(login, job_id)  # noqa: E731
    else:
        assert request.job_name is not None
        name = request.job_name
        job = slurm.newest_named(login, name)
        refetch = lambda: slurm.newest_named(login, name)  # noqa: E731
    return slurm.require_running(login, job, wait=request.wait, timeout=None, progress=progress, refetch=refetch)


def node_unreachable(login: Host, node: str, exc: SSHError) -> SSHError:
    return SSHError(
        f"cannot reach compute node {node} through {login.name}: {exc.message}",
        hint=("if this cluster refuses ssh to compute nodes, `--bind-node-address` serves TensorBoard on the "
              "node's cluster address instead (everyone on the cluster network can reach it)"),
    )


class _Node:
    """The compute node's connection, opened in the background (through the login node) while the login
    node starts the step: the jump's handshakes overlap TensorBoard's start-up instead of preceding it."""

    def __init__(self, login: Host, name: str, opener: Callable[[str], Host] | None) -> None:
        self.login, self.name = login, name
        self._host: Host | None = login if opener is None else None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if opener is not None:
            self._thread = threading.Thread(target=self._open, args=(opener,), name="tbctl-node", daemon=True)
            self._thread.start()

    def _open(self, opener: Callable[[str], Host]) -> None:
        try:
            self._host = opener(self.name)
        except BaseException as exc:  # handed to the thread that asks for the host
            self._error = exc

    @property
    def ready(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def get(self) -> Host:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            if isinstance(self._error, SSHError):
                raise node_unreachable(self.login, self.name, self._error)
            raise self._error
        assert self._host is not None
        return self._host

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            if self._host is not None:
                self._host.close()


def up_job(login: Host, open_node: Callable[[str], Host], store: StateStore, request: JobUpRequest, *,
           progress: Callable[[str], None] = lambda _: None, notice: Callable[[str], None] = lambda _: None) -> JobUp:
    """Find the job and its node, then reuse the step of tbctl's that serves this logdir there, or start
    one (`srun --jobid=J --overlap -w NODE -n1 tensorboard …`) and prove it ready. The caller closes the
    node host it gets back (the login host itself with --bind-node-address)."""
    progress(f"asking Slurm on {login.name} about the job")
    job = find_job(login, request, progress)
    node_name = slurm.choose_node(login, job, request.node)
    if request.bind_node_address:
        address = slurm.node_address(login, node_name)
        return _up_on_node(login, _Node(login, node_name, None), store, job, request, progress, notice, bind=address)
    node = _Node(login, node_name, open_node)
    try:
        return _up_on_node(login, node, store, job, request, progress, notice)
    except BaseException:
        node.close()
        raise


def _up_on_node(login: Host, node: _Node, store: StateStore, job: slurm.Job, request: JobUpRequest,
                progress: Callable[[str], None], notice: Callable[[str], None], bind: str | None = None) -> JobUp:
    """The logdir and the executable are found by the login node's probe, in the cluster's shared
    filesystem, while the node's connection opens; the node's probe then picks ports when one is taken,
    proves TensorBoard ready and finds its process. With `bind` (the node's cluster address) there is no
    node connection: the login node does all, and the node's ports and processes are out of its sight."""
    node_name = node.name
    resolved = login.resolve_path(request.logdir, cwd=job.work_dir)  # relative: to the job's WorkDir
    logdir = resolved.path
    warnings: list[str] = []
    if resolved.kind == "not a directory":
        raise UsageError(f"logdir {logdir} is not a directory", hint="give the directory the event files are in")
    if not resolved.exists:
        warnings.append(f"logdir {logdir} does not exist yet; TensorBoard will show runs once they appear")
    if bind is not None:
        warnings.append(f"TensorBoard listens on {node_name}'s cluster address {bind}: everyone on the cluster "
                        "network can reach it, not only you (--bind-node-address)")
    executable = login.find_tensorboard(request.tensorboard, request.env_prefix, explicit_from=request.tensorboard_from)
    path_prefix = normalize_path_prefix(flag_value(list(request.extra_args), "path_prefix"))
    with store.lock(f"up-job-{login.name}-{job.id}"):
        if not request.new:
            reused = _reusable(login, store, job, logdir, private=request.private)
            if reused is not None:
                inst, step = reused
                return JobUp(UpResult(instance=inst, url=inst.url or "", reused=True, warnings=tuple(warnings)),
                             node.get(), job, step)
        if request.private:
            return _up_private_step(login, node, store, job, request, executable, logdir, path_prefix,
                                    tuple(warnings), progress)
        wanted, port_note = request.port, ""
        listener: Mapping[str, Any] | None = None
        for attempt in range(BIND_RACE_RETRIES):
            # the first try takes the port asked for unless the node is already there to say it is taken;
            # a port taken after all fails TensorBoard's bind, and the next try asks the node
            port, note = _choose_port(node.get(), wanted) if bind is None and (attempt or node.ready) else (wanted, "")
            if note and not port_note:
                notice(note)
            port_note = port_note or note
            argv = build_argv(executable, logdir, port, (*request.extra_args, *(("--host", bind) if bind else ())),
                              network_ok=bind is not None or request.expose_to_network)
            srun = _srun(job, node_name, f"{STEP_NAME}-{port}", argv)
            log_path = f"{login.log_dir}/tensorboard-job{job.id}-{port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            progress(f"starting TensorBoard in job {job.display} on {node_name}:{port}")
            launched = login.launch(srun, log_path, cwd=job.work_dir)
            srun_proc = (launched.pid, launched.create_time)
            try:
                progress(f"waiting for TensorBoard on {node_name}:{port} to answer")
                ready, reason, elapsed, body = _wait_ready(login, node.get(), srun_proc, port,
                                                           readiness_path(path_prefix), request.timeout,
                                                           bind or "127.0.0.1")
            except BaseException:  # Ctrl-C while waiting, or no way to the node: leave nothing running
                terminate(login, [srun_proc], force=False, timeout=5.0)
                raise
            if ready and _serves(body, logdir):
                if bind is not None:
                    break  # the node's sockets are out of the login node's sight
                try:
                    listener, holders = _listener(node.get(), port, logdir)
                except BaseException:
                    terminate(login, [srun_proc], force=False, timeout=5.0)
                    raise
                if listener is not None:
                    break
                # something else answered: another user of the node bound the port first
                terminate(login, [srun_proc], force=False, timeout=5.0)
                port_note = taken_while_starting(port, holders, notice, where=f" on {node_name}",
                                                 last_try=attempt + 1 == BIND_RACE_RETRIES)
                wanted = port + 1
                continue
            tail = login.tail(launched.log_path, 15)
            terminate(login, [srun_proc], force=False, timeout=5.0)
            if reason == "exited" and any(m in tail for m in _BIND_FAILURE_MARKERS) and attempt + 1 < BIND_RACE_RETRIES:
                wanted = port + 1
                continue
            raise _failure(reason, request.timeout, tail, launched.log_path, job)
        try:
            step = _find_step(login, job, f"{STEP_NAME}-{port}")
            if bind is None:
                assert listener is not None  # the loop ends on the step's listener, or raises
                proc = _owned(node.get(), listener)
            else:  # unseen from the login node, the step's process is known by its srun client there
                proc = {"pid": srun_proc[0], "create_time": srun_proc[1], "start_ticks": None}
        except BaseException:
            terminate(login, [srun_proc], force=False, timeout=5.0)
            raise
        host = node.get()
        store.add(InstanceRecord(
            host=login.name, pid=proc["pid"], create_time=proc.get("create_time"), port=port, logdir=logdir,
            log_path=launched.log_path, started_at=time.time(), argv=tuple(argv), start_ticks=proc.get("start_ticks"),
            job=JobStep(id=job.id, display=job.display, step=step, node=node_name, node_host=host.name,
                        srun_pid=srun_proc[0], srun_create_time=srun_proc[1]),
        ))
    inst = TensorBoardInstance(
        host=login.name, pid=proc["pid"], port=port, logdir=logdir, logdir_arg=logdir, user=login.user,
        status="serving", started_by="tbctl", create_time=proc.get("create_time"), path_prefix=path_prefix,
        bind=flag_value(argv, "host") or "::", log_path=launched.log_path, cmdline=tuple(argv),
        recorded_create_time=proc.get("create_time"), start_ticks=proc.get("start_ticks"),
        job=job.display, job_state=job.state, node=node_name, step=f"{job.id}.{step}",
    )
    return JobUp(UpResult(instance=inst, url="", reused=False, port_note=port_note, warnings=tuple(warnings),
                          ready_seconds=elapsed), host, job, step)


def _srun(job: slurm.Job, node_name: str, step_name: str, argv: list[str]) -> list[str]:
    """The srun client that runs `argv` as a step of the job on that node, alongside the job's own steps."""
    return ["srun", f"--jobid={job.id}", "--overlap", f"--nodelist={node_name}", "--nodes=1", "--ntasks=1",
            f"--job-name={step_name}", "--", *argv]


def _up_private_step(login: Host, node: _Node, store: StateStore, job: slurm.Job, request: JobUpRequest,
                     executable: str, logdir: str, path_prefix: str, warnings: tuple[str, ...],
                     progress: Callable[[str], None]) -> JobUp:
    """`up --job --private`: the node's probe makes the socket directory and its launcher (on the node, where
    the step runs), the step runs the launcher, and the node's probe proves the socket answers, is the
    step's process's own, and that nothing of it listens on TCP."""
    host = node.get()
    prepared = host.prepare_private(executable)
    if prepared.get("error"):
        raise TbctlError(f"cannot start a private TensorBoard on {node.name}: {prepared['error']}")
    sock = str(prepared["socket"])
    argv = [*prepared["argv"], *private_args(logdir, request.extra_args)]
    name = f"{STEP_NAME}-{sock.rsplit('/', 2)[-2]}"  # the socket directory's name: unique on the node
    srun = _srun(job, node.name, name, argv)
    log_path = f"{login.log_dir}/tensorboard-job{job.id}-private-{time.strftime('%Y%m%d-%H%M%S')}.log"
    progress(f"starting a private TensorBoard in job {job.display} on {node.name}")
    launched = login.ask("launch", argv=srun, log_path=log_path, cwd=job.work_dir)
    srun_proc = (int(launched["pid"]), float(launched["create_time"]))
    try:
        ready, reason, elapsed, body = _wait_ready(login, host, srun_proc, None, readiness_path(path_prefix),
                                                   request.timeout, "127.0.0.1", socket_path=sock)
        if not (ready and _serves(body, logdir)):
            tail = login.tail(launched["log_path"], 15)
            raise _failure(reason, request.timeout, tail, launched["log_path"], job)
        proc = _find_process(host, sock, logdir)
        checked = host.private_ready(proc["pid"], sock, readiness_path(path_prefix))
        if not (checked or {}).get("ready"):
            tail = login.tail(launched["log_path"], 15)
            raise TensorBoardFailed(f"the private TensorBoard in job {job.display} is not private: "
                                    f"{(checked or {}).get('error') or (checked or {}).get('reason')}; stopped it",
                                    log_tail=tail, log_path=launched["log_path"])
        step = _find_step(login, job, name)
    except BaseException:
        terminate(login, [srun_proc], force=False, timeout=5.0)
        host.remove_private_socket(sock)
        raise
    store.add(InstanceRecord(
        host=login.name, pid=proc["pid"], create_time=proc.get("create_time"), port=None, logdir=logdir,
        log_path=launched["log_path"], started_at=time.time(), argv=tuple(argv), start_ticks=proc.get("start_ticks"),
        job=JobStep(id=job.id, display=job.display, step=step, node=node.name, node_host=host.name,
                    srun_pid=srun_proc[0], srun_create_time=srun_proc[1]),
    ))
    inst = TensorBoardInstance(
        host=login.name, pid=proc["pid"], port=None, logdir=logdir, logdir_arg=logdir, user=login.user,
        status="serving", started_by="tbctl", create_time=proc.get("create_time"), path_prefix=path_prefix,
        log_path=launched["log_path"], cmdline=tuple(argv), recorded_create_time=proc.get("create_time"),
        start_ticks=proc.get("start_ticks"), job=job.display, job_state=job.state, node=node.name,
        step=f"{job.id}.{step}", socket=sock,
    )
    return JobUp(UpResult(instance=inst, url="", reused=False, warnings=warnings, ready_seconds=elapsed), host, job, step)


def _wait_ready(login: Host, node: Host, srun: tuple[int, float], port: int | None, path: str,
                timeout: float, address: str, *, socket_path: str | None = None) -> tuple[bool, str, float, str]:
    """Poll through the node's probe in short windows, checking between them that srun still lives."""
    started = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - started)
        answer = node.wait_http(port, path, timeout=max(0.0, min(1.0, left)), address=address, socket_path=socket_path)
        if answer["ready"]:
            return True, "", time.monotonic() - started, str(answer.get("body", ""))
        if not login.alive(*srun):
            return False, "exited", time.monotonic() - started, ""
        if time.monotonic() - started >= timeout:
            return False, "timeout", time.monotonic() - started, ""


def _find_step(login: Host, job: slurm.Job, name: str) -> str:
    deadline = time.monotonic() + STEP_SEEN_TIMEOUT
    while True:
        for step in slurm.steps(login, [job.id]):
            if step.name == name:
                return step.step
        if time.monotonic() >= deadline:
            raise TbctlError(f"TensorBoard answers, but squeue on {login.name} lists no step {name} of job {job.display}")
        time.sleep(0.2)


def _step_processes(processes: Sequence[Mapping[str, Any]], logdir: str, *, port: int | None = None,
                    socket_path: str | None = None) -> list[Mapping[str, Any]]:
    """The node's TensorBoard processes serving `logdir` on that port, or a private one on that socket."""
    found = []
    for proc in processes:
        args = tensorboard_args(proc.get("cmdline") or []) or []
        ours = flag_value(args, "unix_socket") == socket_path if socket_path is not None else \
            flag_value(args, "port") == str(port)
        if not proc.get("zombie") and ours and flag_value(args, "logdir") == logdir:
            found.append(proc)
    return found


def _listener(node: Host, port: int, logdir: str) -> tuple[Mapping[str, Any] | None, list[PortHolder]]:
    """The step's TensorBoard, if it is the process that listens on `port` (else None), and who listens
    there: the node's processes and the port's holders, asked in one round trip."""
    scanned, held = node.call_many([node.request("scan"), node.request("holders", port=port)])
    holders = node.holders_from(held.get())
    listening = {h.pid for h in holders if h.pid is not None}
    mine = [p for p in _step_processes(scanned.get().get("processes", []), logdir, port=port) if p["pid"] in listening]
    return (mine[0] if mine else None), holders


def _owned(node: Host, proc: Mapping[str, Any]) -> dict[str, Any]:
    """What the background forwarder watches of the step's process: its pid and start."""
    info = node.proc_info(proc["pid"]) or {}
    return {"pid": proc["pid"], "create_time": proc.get("create_time"), "start_ticks": info.get("start_ticks")}


def _find_process(node: Host, socket_path: str, logdir: str) -> dict[str, Any]:
    """The private TensorBoard the step runs on the node, by its socket."""
    for proc in _step_processes(node.scan().get("processes", []), logdir, socket_path=socket_path):
        return _owned(node, proc)
    raise TbctlError(f"TensorBoard answers on {node.name}:{socket_path}, but its process is not to be seen there")


def _reusable(login: Host, store: StateStore, job: slurm.Job, logdir: str, *,
              private: bool = False) -> tuple[TensorBoardInstance, str] | None:
    """tbctl's step of this job for this logdir, while squeue lists it (it lives as long as its TensorBoard):
    a private one for `--private`, a TCP one otherwise."""
    recs = [r for r in store.for_host(login.name) if r.job is not None and r.job.id == job.id and r.logdir == logdir
            and (flag_value(list(r.argv), "unix_socket") is not None) == private]
    if not recs:
        return None
    live_steps = {s.step for s in slurm.steps(login, [job.id])}
    for rec in recs:
        if rec.job is not None and rec.job.step in live_steps:
            return slurm.job_instance(rec, login.user, "serving", job.state), rec.job.step
    return None


def _failure(reason: str, timeout: float, tail: str, log_path: str, job: slurm.Job) -> TensorBoardFailed:
    if reason == "timeout":
        return TensorBoardFailed(f"TensorBoard in job {job.display} did not answer within {timeout:g} s; stopped it",
                                 log_tail=tail, log_path=log_path, hint="a large logdir can take longer: raise --timeout")
    if reason == "exited":
        return TensorBoardFailed(f"TensorBoard's step in job {job.display} exited before it was ready",
                                 log_tail=tail, log_path=log_path)
    return TensorBoardFailed("TensorBoard answered, but not for this logdir (another server holds the port?)",
                             log_tail=tail, log_path=log_path)
