"""Finding TensorBoards on a host and picking the ones a command names."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tbctl.config import parse_port
from tbctl.errors import ExitCode, InstanceNotFound, TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.models import ForwardInfo, TensorBoardInstance
from tbctl.probe import CREATE_TIME_SLACK
from tbctl.state import StateStore
from tbctl.tensorboard import classify


def list_instances(host: Host, store: StateStore, scanned: Mapping[str, Any] | None = None) -> list[TensorBoardInstance]:
    """Every TensorBoard on `host`, ours or not, live or stale, sorted by port; and those tbctl runs as steps
    of Slurm jobs that `host` (a login node) schedules, which run on the jobs' nodes. `scanned`: the host's
    scan when it was asked for together with other questions."""
    records = store.for_host(host.name)
    instances = classify(host.scan() if scanned is None else scanned, host=host.name,
                         records=[r for r in records if r.job is None])
    if any(r.job is not None for r in records):
        from tbctl.core.slurm import job_instances

        steps = job_instances(host, store)
        # Where the login node sees the nodes' processes (no PID namespace between them), a step's
        # TensorBoard is listed once, as the step.
        ours = {(i.pid, i.port) for i in steps}
        instances = [i for i in instances if (i.pid, i.port) not in ours] + steps
    return sorted(instances, key=lambda i: (i.port is None, i.port or 0, i.pid or 0))


def select(host: Host, instances: list[TensorBoardInstance], target: str) -> list[TensorBoardInstance]:
    """Instances named by `target`: a port, else a pid, else a logdir (as the host resolves it)."""
    text = target.strip()
    if not text:
        raise UsageError("empty target", hint="give a port, a pid or a logdir")
    if text.isdigit():
        number = int(text)
        by_port = [i for i in instances if i.port == number]
        if by_port:
            return by_port
        by_pid = [i for i in instances if i.pid == number]
        if by_pid:
            return by_pid
        if number > 65535:
            raise InstanceNotFound(host.name, text)
        parse_port(number)  # 0 is not a port: a usage error, not "not found"
        raise InstanceNotFound(host.name, text)
    if text.lstrip("-").isdigit():
        raise UsageError(f"{text!r} is neither a port, a pid nor a logdir", hint="ports and pids are positive")
    resolved = host.resolve_path(text).path
    matches = [i for i in instances if i.logdir == resolved]
    if not matches:
        raise InstanceNotFound(host.name, text)
    return matches


def live_for_logdir(instances: list[TensorBoardInstance], logdir: str, user: str, *,
                    private: bool = False) -> TensorBoardInstance | None:
    """A serving instance of `user` for exactly this logdir, if any (what `up` reuses): a private one for
    `up --private`, a TCP one otherwise (never the one for the other)."""
    for inst in instances:
        if (inst.status == "serving" and inst.user == user and inst.logdir == logdir
                and (inst.socket is not None) == private):
            return inst
    return None


def launched_as(inst: TensorBoardInstance, pid: int, create_time: float) -> bool:
    """Whether `inst` is the process another record of tbctl's names as (pid, create_time). Compared with
    the create time tbctl recorded for it (the same clock as that other record's) when there is one, so a
    wall-clock step since does not matter; else with the one the host shows now."""
    ct = inst.recorded_create_time if inst.recorded_create_time is not None else inst.create_time
    return inst.pid == pid and ct is not None and abs(ct - create_time) < CREATE_TIME_SLACK


@dataclass(frozen=True)
class HostError:
    """A host that could not be listed: a row in the answer, not a failed command."""

    host: str
    error: str
    exit_code: ExitCode


def list_many(
    specs: Sequence[str | None], opener: Callable[[str | None], Host], store: StateStore, *, timeout: float
) -> tuple[list[TensorBoardInstance], list[HostError]]:
    """List several hosts at once, each in its own thread with its own deadline: the slowest host costs
    one host's time, and a dead one becomes a HostError."""
    results: dict[int, list[TensorBoardInstance] | HostError] = {}

    def one(i: int, spec: str | None) -> None:
        try:
            with opener(spec) as host:
                results[i] = list_instances(host, store)
        except TbctlError as exc:
            results[i] = HostError(spec or "localhost", exc.message, exc.exit_code)
        except Exception as exc:  # a broken host must not take the others down
            results[i] = HostError(spec or "localhost", f"{type(exc).__name__}: {exc}", ExitCode.ERROR)

    threads = [threading.Thread(target=one, args=(i, s), daemon=True, name=f"tbctl-ls-{s}") for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    instances: list[TensorBoardInstance] = []
    errors: list[HostError] = []
    for i, spec in enumerate(specs):
        got = results.get(i)
        if got is None:
            errors.append(HostError(spec or "localhost", f"no answer within {timeout:g} s", ExitCode.SSH))
        elif isinstance(got, HostError):
            errors.append(got)
        else:
            instances.extend(got)
    return instances, errors


def with_forwards(instances: list[TensorBoardInstance], forwards: Sequence[ForwardInfo]) -> list[TensorBoardInstance]:
    """Remote instances that a live forward serves get its local port (so their URL opens from here)."""
    from tbctl.hosts.host_spec import jumped_name

    live: dict[tuple[str, int | str | None], int] = {(f.host, f.remote_socket or f.remote_port): f.local_port
                                                     for f in forwards if f.tunnel in ("up", "reconnecting")}

    def where(i: TensorBoardInstance) -> tuple[str, int | str | None]:  # a job step's forward goes to its node
        end = i.socket or i.port  # a private instance is forwarded by its socket
        return (jumped_name(i.host, i.node), end) if i.node is not None else (i.host, end)

    return [dataclasses.replace(i, forward_port=live[where(i)]) if where(i) in live and i.forward_port is None
            and i.status == "serving" else i for i in instances]
