"""Result records: what core returns and cli/render.py shows. Frozen, JSON-able through `as_json`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["serving", "starting", "unknown", "stale", "exited", "dead"]
# What the statuses mean, in one place (the questions are TensorBoardInstance's properties below):
RUNNING: frozenset[Status] = frozenset({"serving", "starting"})  # ours to stop, its log to follow
MAY_ANSWER: frozenset[Status] = RUNNING | {"unknown"}  # another user's whose sockets are hidden may serve too
ENDED: frozenset[Status] = frozenset({"stale", "exited", "dead"})  # no process: only what it left to clean
LOCAL_HOST_NAME = "localhost"
StartedBy = Literal["tbctl", "other"]
LOOPBACK = "127.0.0.1"


def is_loopback(address: str) -> bool:
    """Whether a bind address (TensorBoard's --host, or a socket's address) is reachable only from this
    machine."""
    import ipaddress

    text = address.strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever it resolves to


def browser_url(port: int, path_prefix: str = "", *, host: str = LOOPBACK) -> str:
    """What a browser on this machine opens for an HTTP server on host:port (TensorBoard, or the local end
    of a forward to it). `path_prefix` is TensorBoard's --path_prefix, normalised ("" or "/a/b")."""
    from urllib.parse import quote

    shown = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"http://{shown}:{port}{quote(path_prefix, safe='/')}/"


@dataclass(frozen=True)
class TensorBoardInstance:
    host: str
    pid: int | None
    port: int | None
    logdir: str | None  # absolute as the host resolves it; None when TensorBoard was given a logdir_spec
    logdir_arg: str | None  # as TensorBoard was given it
    user: str | None
    status: Status
    started_by: StartedBy
    create_time: float | None = None
    path_prefix: str = ""
    bind: str = "127.0.0.1"
    info_file: str | None = None
    log_path: str | None = None
    cmdline: tuple[str, ...] = ()
    note: str = ""
    forward_port: int | None = None  # the local end of a forward to this instance, when there is one
    # A private instance (`up --private`) serves on this unix socket, in a 0700 directory, and on no port.
    socket: str | None = None
    # A TensorBoard tbctl runs as a step of a Slurm job (`up --job`): the job as squeue shows it, its state,
    # the compute node and the step (JOB.STEP). None elsewhere.
    job: str | None = None
    job_state: str | None = None
    node: str | None = None
    step: str | None = None
    # The create time in tbctl's record of this instance, in the clock of the moment it was launched: what
    # other records of that launch (a forward's instance_create_time) carry, even after a wall-clock step
    # moved create_time. Internal, so not in the JSON.
    recorded_create_time: float | None = field(default=None, metadata={"json": False})
    start_ticks: int | None = field(default=None, metadata={"json": False})  # its start, in ticks since boot

    @property
    def url(self) -> str | None:
        """Where this machine opens it: directly when local, through a forward when remote (else None)."""
        if (self.port is None and self.socket is None) or self.has_ended:
            return None
        if self.forward_port is not None:
            return browser_url(self.forward_port, self.path_prefix)
        if self.host != LOCAL_HOST_NAME or self.port is None:
            return None
        # Always a loopback address of tbctl's choosing: the bind comes from a command line or an info file,
        # which another user may have written (`--host 'evil.example/phish?'`).
        host = "::1" if ":" in self.bind and is_loopback(self.bind) else LOOPBACK
        return browser_url(self.port, self.path_prefix, host=host)

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING

    @property
    def may_answer(self) -> bool:
        """Whether something may answer at its URL (running, or another user's that cannot be told)."""
        return self.status in MAY_ANSWER

    @property
    def has_ended(self) -> bool:
        return self.status in ENDED

    @property
    def exposure(self) -> Literal["private", "loopback", "network"]:
        """Who can connect to it: only this user (`private`: a unix socket in a 0700 directory), any user of
        this host (`loopback`), or anyone who reaches it (`network`)."""
        if self.socket is not None:
            return "private"
        return "loopback" if is_loopback(self.bind) else "network"

    @property
    def uptime(self) -> float | None:
        if self.create_time is None or self.status == "exited":
            return None
        return max(0.0, time.time() - self.create_time)


@dataclass(frozen=True)
class PortHolder:
    host: str
    port: int
    pid: int | None  # None: the socket belongs to another user and we are not root
    family: str
    addr: str
    user: str | None
    cmdline: tuple[str, ...]
    create_time: float | None
    is_tensorboard: bool

    @property
    def command(self) -> str:
        return " ".join(self.cmdline) if self.cmdline else "?"


@dataclass(frozen=True)
class UpResult:
    instance: TensorBoardInstance
    url: str
    reused: bool
    port_note: str = ""  # why the port differs from the one asked for
    warnings: tuple[str, ...] = ()
    ready_seconds: float | None = None


@dataclass(frozen=True)
class StopOutcome:
    instance: TensorBoardInstance
    outcome: Literal["stopped", "killed", "cleaned", "gone", "denied", "protected", "survived"]
    info_file_removed: bool = False


@dataclass(frozen=True)
class PortReport:
    host: str
    port: int
    holders: tuple[PortHolder, ...]
    user: str


@dataclass(frozen=True)
class HolderOutcome:
    holder: PortHolder
    outcome: Literal["stopped", "killed", "gone", "denied", "protected", "survived", "skipped"]


@dataclass(frozen=True)
class FreePortResult:
    host: str
    port: int
    outcomes: tuple[HolderOutcome, ...]
    freed: bool
    remaining: tuple[PortHolder, ...] = field(default=())


def as_json(record: Any) -> Any:
    """A JSON-able view of a record, with derived properties (url, uptime) included."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        out = {f.name: as_json(getattr(record, f.name)) for f in dataclasses.fields(record) if f.metadata.get("json", True)}
        for extra in ("url", "uptime", "command", "exposure"):
            if hasattr(type(record), extra):
                out[extra] = getattr(record, extra)
        return out
    if isinstance(record, (list, tuple)):
        return [as_json(r) for r in record]
    if isinstance(record, dict):
        return {k: as_json(v) for k, v in record.items()}
    return record


@dataclass(frozen=True)
class ForwardInfo:
    """A detached forward: its tunnel and its TensorBoard are reported separately ("tunnel down" is not
    "TensorBoard died")."""

    host: str
    local_port: int
    remote_port: int  # 0 for a forward to a unix socket (remote_socket)
    instance_pid: int | None
    logdir: str | None
    tunnel: Literal["up", "reconnecting", "down", "stale"]
    tensorboard: Literal["serving", "dead", "unknown"]
    since: float | None = None
    attempts: int = 0
    error: str = ""
    forwarder_pid: int | None = None
    stop_instance: bool = False
    path_prefix: str = ""
    via: str = ""  # how the forwarder reaches the host (e.g. the user's own ControlMaster)
    remote_socket: str | None = None  # a private instance's unix socket, where the forward goes

    @property
    def remote_end(self) -> str:
        """What it forwards to on the host, in words: the port, or a private instance's socket."""
        return self.remote_socket if self.remote_socket is not None else str(self.remote_port)

    @property
    def url(self) -> str:
        return browser_url(self.local_port, self.path_prefix)


@dataclass(frozen=True)
class PullSourceInfo:
    """One source of a detached pull, as `ls` shows it."""

    host: str
    logdir: str
    label: str  # its runs show as LABEL/RUN
    state: str  # starting · syncing · up · reconnecting · down · stale (its background process is gone)
    files: int = 0
    gone: int = 0  # deleted on the host, kept in the mirror
    bytes: int = 0
    pending: int = 0
    lag: float | None = None  # seconds: how old the newest byte the mirror may lack can be
    error: str = ""
    pid: int | None = None  # the tbctl process polling it


@dataclass(frozen=True)
class PullInfo:
    """A detached pull (`up --pull … --detach`): its sources and the local TensorBoard serving the mirror."""

    id: str
    sources: tuple[PullSourceInfo, ...]
    mirror: str
    port: int | None
    instance_pid: int | None
    tensorboard: str  # serving · dead
    url: str | None


def human_bytes(n: int) -> str:
    """`512 B`, `3.1 KiB`, `2.0 MiB`, `1.5 GiB`."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
