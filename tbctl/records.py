"""What tbctl keeps in its state dir, as it lies on disk: a TensorBoard it started (instances.jsonl), a
detached forward (forwards.jsonl), and what a background forwarder reports (forwarders/HOST.json).

These are a contract between processes and between tbctl versions, so each record has exactly one
`to_json` and one `from_json`. `from_json` takes what an older or newer tbctl wrote: a missing optional key
gets its default, a value of the wrong type counts as missing, and keys it does not know are kept and
written back as they were (an older tbctl rewriting the file must not strip a newer one's data). A record
without what identifies it raises ValueError, which the store answers by setting the line aside.

Results shown to users live in tbctl/models.py; these records are what those results are built from.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tbctl.hosts.link import LinkState


class Record(Protocol):
    """What the state store writes: anything with a to_json (and a from_json to read it back)."""

    def to_json(self) -> dict[str, Any]: ...


class _KeepsUnknownKeys(Record, Protocol):
    @property
    def unknown(self) -> Mapping[str, Any]: ...


_R = TypeVar("_R", bound=_KeepsUnknownKeys)


def _with_unknown(record: _R, data: Mapping[str, Any]) -> _R:
    """`record` keeping the keys of `data` that its own to_json does not write."""
    known = record.to_json()
    unknown = {k: v for k, v in data.items() if k not in known}
    return dataclasses.replace(record, unknown=unknown) if unknown else record  # type: ignore[type-var]


def _unknown_keys() -> Any:
    """The field that keeps the keys a record does not know; in no JSON document tbctl prints (tbctl/models.py
    `as_json` skips it), and not compared."""
    return field(default_factory=dict, compare=False, repr=False, metadata={"json": False})


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not a JSON object")
    return data


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _required_int(data: Mapping[str, Any], key: str) -> int:
    value = _int(data, key)
    if value is None:
        raise ValueError(f"{key} is not an integer")
    return value


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _required_str(data: Mapping[str, Any], key: str) -> str:
    value = _str(data, key)
    if value is None:
        raise ValueError(f"{key} is not a string")
    return value


@dataclass(frozen=True)
class JobStep:
    """The Slurm job step a TensorBoard runs as (`up --job`): the `job` object of its instance record."""

    id: str  # what srun --jobid and scancel take
    display: str  # as squeue shows it (123, or 123_4 for an array task)
    step: str
    node: str | None = None  # the compute node, as Slurm names it
    node_host: str | None = None  # the host tbctl reaches it as (LOGIN/NODE): its forwards' host
    srun_pid: int | None = None  # the srun client on the login node
    srun_create_time: float | None = None
    unknown: Mapping[str, Any] = _unknown_keys()

    def to_json(self) -> dict[str, Any]:
        known = {"id": self.id, "display": self.display, "step": self.step, "node": self.node,
                 "node_host": self.node_host, "srun_pid": self.srun_pid, "srun_create_time": self.srun_create_time}
        return {**self.unknown, **known}

    @classmethod
    def from_json(cls, data: Any) -> JobStep:
        data = _object(data, "job")
        named = [data.get(k) for k in ("id", "display", "step")]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in named):
            raise ValueError("a job needs its id, display and step")
        record = cls(id=str(named[0]), display=str(named[1]), step=str(named[2]),
                     node=_str(data, "node"), node_host=_str(data, "node_host"), srun_pid=_int(data, "srun_pid"),
                     srun_create_time=_number(data, "srun_create_time"))
        return _with_unknown(record, data)


@dataclass(frozen=True)
class InstanceRecord:
    """A TensorBoard tbctl started: one line of instances.jsonl. Outlives the process (its log stays readable)."""

    host: str
    pid: int
    create_time: float | None = None  # in the clock of the moment it was launched
    port: int | None = None
    logdir: str | None = None
    log_path: str | None = None
    started_at: float | None = None
    argv: tuple[str, ...] = ()
    start_ticks: int | None = None  # its start in clock ticks since boot, where the host can tell
    job: JobStep | None = None
    unknown: Mapping[str, Any] = _unknown_keys()

    def to_json(self) -> dict[str, Any]:
        known: dict[str, Any] = {
            "host": self.host, "pid": self.pid, "create_time": self.create_time, "port": self.port,
            "logdir": self.logdir, "log_path": self.log_path, "started_at": self.started_at,
            "argv": list(self.argv), "start_ticks": self.start_ticks,
        }
        if self.job is not None:  # absent, not null, for an instance outside Slurm
            known["job"] = self.job.to_json()
        return {**self.unknown, **known}

    @classmethod
    def from_json(cls, data: Any) -> InstanceRecord:
        data = _object(data, "an instance record")
        argv = data.get("argv")
        record = cls(
            host=_required_str(data, "host"), pid=_required_int(data, "pid"),
            create_time=_number(data, "create_time"), port=_int(data, "port"), logdir=_str(data, "logdir"),
            log_path=_str(data, "log_path"), started_at=_number(data, "started_at"),
            argv=tuple(str(a) for a in argv) if isinstance(argv, list) else (), start_ticks=_int(data, "start_ticks"),
            job=JobStep.from_json(data["job"]) if data.get("job") is not None else None,
        )
        return _with_unknown(record, data)


@dataclass(frozen=True)
class ForwardRecord:
    """A detached forward a background forwarder should serve: one line of forwards.jsonl. `down --json`
    prints the ones it ended with these keys."""

    host: str
    local_port: int
    remote_port: int
    # The TensorBoard it was made for, by pid and start (so a reused pid is never taken for it).
    instance_pid: int | None = None
    instance_create_time: float | None = None
    instance_start_ticks: int | None = None
    logdir: str | None = None
    path_prefix: str = ""
    stop_instance: bool = False  # tbctl started that TensorBoard for this forward: it ends with it
    created_at: float = field(default_factory=time.time)
    # A private instance's unix socket: the forward goes there, and remote_port is 0 (which an older tbctl,
    # not knowing this key, fails to forward to rather than reaching something else).
    remote_socket: str | None = None
    unknown: Mapping[str, Any] = _unknown_keys()

    def to_json(self) -> dict[str, Any]:
        known = {
            "host": self.host, "local_port": self.local_port, "remote_port": self.remote_port,
            "instance_pid": self.instance_pid, "instance_create_time": self.instance_create_time,
            "instance_start_ticks": self.instance_start_ticks, "logdir": self.logdir,
            "path_prefix": self.path_prefix, "stop_instance": self.stop_instance, "created_at": self.created_at,
            "remote_socket": self.remote_socket,
        }
        return {**self.unknown, **known}

    @classmethod
    def from_json(cls, data: Any) -> ForwardRecord:
        data = _object(data, "a forward record")
        record = cls(
            host=_required_str(data, "host"), local_port=_required_int(data, "local_port"),
            remote_port=_required_int(data, "remote_port"), instance_pid=_int(data, "instance_pid"),
            instance_create_time=_number(data, "instance_create_time"),
            instance_start_ticks=_int(data, "instance_start_ticks"), logdir=_str(data, "logdir"),
            path_prefix=_str(data, "path_prefix") or "", stop_instance=data.get("stop_instance") is True,
            created_at=_number(data, "created_at") or 0.0, remote_socket=_str(data, "remote_socket"),
        )
        return _with_unknown(record, data)


@dataclass(frozen=True)
class ForwardState:
    """How a background forwarder is doing with one forward: a row of its status file (the forward
    record's keys, and these)."""

    forward: ForwardRecord
    listening: bool = False
    error: str = ""  # why its local port could not be opened, or its forward's first failure
    active_connections: int = 0
    served: int = 0
    tensorboard: str = "unknown"  # serving · dead · unknown (not checked yet, or the link is down)

    def to_json(self) -> dict[str, Any]:
        return {**self.forward.to_json(), "listening": self.listening, "error": self.error,
                "active_connections": self.active_connections, "served": self.served,
                "tensorboard": self.tensorboard}

    @classmethod
    def from_json(cls, data: Any) -> ForwardState:
        data = _object(data, "a forward's state")
        own = ("listening", "error", "active_connections", "served", "tensorboard")
        return cls(
            forward=ForwardRecord.from_json({k: v for k, v in data.items() if k not in own}),
            listening=data.get("listening") is True, error=_str(data, "error") or "",
            active_connections=_int(data, "active_connections") or 0, served=_int(data, "served") or 0,
            tensorboard=_str(data, "tensorboard") or "unknown",
        )


@dataclass(frozen=True)
class ForwarderStatus:
    """What a host's background forwarder writes about itself (forwarders/HOST.json): the process (so a
    reused pid is not taken for it), its link to the host, and each forward it serves."""

    host: str
    pid: int
    create_time: float | None = None
    log_path: str = ""
    started_at: float | None = None
    link: LinkState | None = None  # None: it has not said (a status written by no tbctl)
    forwards: tuple[ForwardState, ...] = ()
    backend: str = ""  # the SSH backend it connects with ("" in a status an older tbctl wrote)

    def to_json(self) -> dict[str, Any]:
        link = None if self.link is None else {
            "state": self.link.state, "since": self.link.since, "attempts": self.link.attempts,
            "error": self.link.error, "via": self.link.via}
        return {"host": self.host, "pid": self.pid, "create_time": self.create_time, "log_path": self.log_path,
                "started_at": self.started_at, "link": link, "forwards": [f.to_json() for f in self.forwards],
                "backend": self.backend}

    @classmethod
    def from_json(cls, data: Any) -> ForwarderStatus:
        data = _object(data, "a forwarder status")
        link, forwards = data.get("link"), data.get("forwards") or []
        if not isinstance(forwards, list):
            raise ValueError("forwards is not a list")
        return cls(
            host=_required_str(data, "host"), pid=_required_int(data, "pid"), create_time=_number(data, "create_time"),
            log_path=_str(data, "log_path") or "", started_at=_number(data, "started_at"),
            link=None if not isinstance(link, Mapping) else LinkState(
                state="up" if link.get("state") == "up" else "reconnecting" if link.get("state") == "reconnecting"
                else "down",
                since=_number(link, "since") or 0.0, attempts=_int(link, "attempts") or 0,
                error=_str(link, "error") or "", via=_str(link, "via") or ""),
            forwards=tuple(ForwardState.from_json(f) for f in forwards),
            backend=_str(data, "backend") or "",
        )



@dataclass(frozen=True)
class PullSource:
    """One `--pull HOST:LOGDIR`: where it comes from, and `label`, the directory of the mirror its runs sit in
    (runs show as LABEL/RUN)."""

    host: str
    logdir: str
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "logdir": self.logdir, "label": self.label}

    @classmethod
    def from_json(cls, data: Any) -> PullSource:
        data = _object(data, "a pull source")
        return cls(host=_required_str(data, "host"), logdir=_required_str(data, "logdir"),
                   label=_required_str(data, "label"))


@dataclass(frozen=True)
class PullRecord:
    """A detached pull (pulls.jsonl): what the hosts' background tbctl processes mirror, and the local
    TensorBoard serving the mirror."""

    id: str
    sources: tuple[PullSource, ...]
    mirror: str  # the directory TensorBoard serves: one subdirectory per source
    interval: float
    budget: int
    instance_pid: int | None = None
    instance_create_time: float | None = None
    port: int | None = None
    stop_instance: bool = False  # tbctl started that TensorBoard for this pull: it ends with it
    created_at: float = field(default_factory=time.time)
    unknown: Mapping[str, Any] = _unknown_keys()

    def to_json(self) -> dict[str, Any]:
        known = {"id": self.id, "sources": [s.to_json() for s in self.sources], "mirror": self.mirror,
                 "interval": self.interval, "budget": self.budget, "instance_pid": self.instance_pid,
                 "instance_create_time": self.instance_create_time, "port": self.port,
                 "stop_instance": self.stop_instance, "created_at": self.created_at}
        return {**self.unknown, **known}

    @classmethod
    def from_json(cls, data: Any) -> PullRecord:
        data = _object(data, "a pull record")
        sources = data.get("sources")
        if not isinstance(sources, list) or not sources:
            raise ValueError("a pull record without sources")
        record = cls(
            id=_required_str(data, "id"), sources=tuple(PullSource.from_json(s) for s in sources),
            mirror=_required_str(data, "mirror"), interval=_number(data, "interval") or 2.0,
            budget=_int(data, "budget") or 4 << 20, instance_pid=_int(data, "instance_pid"),
            instance_create_time=_number(data, "instance_create_time"), port=_int(data, "port"),
            stop_instance=data.get("stop_instance") is True, created_at=_number(data, "created_at") or 0.0,
        )
        return _with_unknown(record, data)


@dataclass(frozen=True)
class PullProgress:
    """How one source of a pull is doing, as its poller (the foreground `up` or the host's background
    process) last wrote it (pulls/ID-LABEL.json)."""

    pull_id: str
    source: PullSource
    pid: int
    create_time: float | None = None
    state: str = "syncing"  # syncing (first sync not done) · up · reconnecting · down
    files: int = 0
    gone: int = 0  # files deleted on the host, kept in the mirror
    bytes: int = 0  # in the mirror
    fetched: int = 0  # bytes read from the host by this poller
    pending: int = 0  # bytes the last poll left for the next (the budget)
    complete_at: float | None = None  # when a poll last left nothing behind: the mirror lags by at most now - this
    error: str = ""
    polls: int = 0
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"pull_id": self.pull_id, "source": self.source.to_json(), "pid": self.pid,
                "create_time": self.create_time, "state": self.state, "files": self.files, "gone": self.gone,
                "bytes": self.bytes, "fetched": self.fetched, "pending": self.pending,
                "complete_at": self.complete_at, "error": self.error, "polls": self.polls,
                "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: Any) -> PullProgress:
        data = _object(data, "a pull's progress")
        return cls(
            pull_id=_required_str(data, "pull_id"), source=PullSource.from_json(data.get("source")),
            pid=_required_int(data, "pid"), create_time=_number(data, "create_time"),
            state=_str(data, "state") or "down", files=_int(data, "files") or 0, gone=_int(data, "gone") or 0,
            bytes=_int(data, "bytes") or 0, fetched=_int(data, "fetched") or 0, pending=_int(data, "pending") or 0,
            complete_at=_number(data, "complete_at"), error=_str(data, "error") or "", polls=_int(data, "polls") or 0,
            updated_at=_number(data, "updated_at") or 0.0,
        )
