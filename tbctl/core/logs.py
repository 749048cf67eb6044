"""`logs`: the output of a TensorBoard tbctl started (its log file on the host), shown and followed.

Only tbctl's own instances have a log it knows: TensorBoard started elsewhere writes to a terminal or a
notebook. The record outlives the process, so the log of a TensorBoard that crashed can still be read.
Following polls the probe's `read_log` (one round trip per poll, also over SSH), which says whether the
process is still alive before it reads, so the last lines a dying TensorBoard wrote are never lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tbctl.core.instances import list_instances, select
from tbctl.errors import InstanceNotFound, NotFound, TbctlError
from tbctl.hosts.base import Host
from tbctl.models import TensorBoardInstance
from tbctl.records import InstanceRecord
from tbctl.state import StateStore

FOLLOW_INTERVAL = 0.5  # seconds between polls when nothing new was written


@dataclass(frozen=True)
class LogSource:
    """Where an instance's output goes, and the process that writes it."""

    host: str
    pid: int | None
    create_time: float | None
    port: int | None
    logdir: str | None
    log_path: str
    running: bool


@dataclass(frozen=True)
class LogTail:
    """The last lines of a log, and where following it continues."""

    source: LogSource
    text: str
    offset: int

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def find_log(host: Host, store: StateStore, target: str) -> LogSource:
    """The log of the instance `target` (port, pid or logdir) names: a running one tbctl started, else the
    newest record of one that has exited."""
    running = [i for i in list_instances(host, store) if i.is_running]
    try:
        chosen = select(host, running, target)
    except InstanceNotFound:
        chosen = []
    logged = [i for i in chosen if i.log_path]
    if logged:
        return _from_instance(logged[0])
    if chosen:  # running, but not ours: say why there is no log rather than "not found"
        other = chosen[0]
        raise NotFound(
            f"TensorBoard pid {other.pid} on {host.name} was not started by tbctl, so tbctl has no log of it",
            hint="its output went wherever it was started from (a terminal, a notebook)",
        )
    record = _newest_record(host, store, target)  # one that exited (or was killed) without `tbctl down`
    if record is None:
        raise InstanceNotFound(host.name, target)
    assert record.log_path is not None
    return LogSource(host=host.name, pid=record.pid, create_time=record.create_time, port=record.port,
                     logdir=record.logdir, log_path=record.log_path, running=False)


def _from_instance(inst: TensorBoardInstance) -> LogSource:
    assert inst.log_path is not None
    return LogSource(host=inst.host, pid=inst.pid, create_time=inst.create_time, port=inst.port,
                     logdir=inst.logdir, log_path=inst.log_path, running=inst.is_running)


def _newest_record(host: Host, store: StateStore, target: str) -> InstanceRecord | None:
    """A record of an instance that is no longer running, matched like `select` matches live ones."""
    records = [r for r in store.for_host(host.name) if r.log_path]
    text = target.strip()
    if text.isdigit():
        number = int(text)
        matches = [r for r in records if r.port == number] or [r for r in records if r.pid == number]
    elif text:
        resolved = host.resolve_path(text).path
        matches = [r for r in records if r.logdir == resolved]
    else:
        matches = []
    return max(matches, key=lambda r: r.started_at or 0.0, default=None)


def read_tail(host: Host, source: LogSource, lines: int) -> LogTail:
    answer = host.read_log(source.log_path, offset=None, lines=lines)
    if answer.get("error"):
        raise NotFound(f"cannot read {source.log_path} on {host.name}: {answer['error']}",
                       hint="the log may have been removed; tbctl keeps logs under its state dir")
    return LogTail(source=source, text=str(answer["text"]), offset=int(answer["offset"]))


def follow(host: Host, source: LogSource, offset: int, *, emit: Callable[[str], None],
           interval: float = FOLLOW_INTERVAL, on_truncated: Callable[[], None] = lambda: None) -> None:
    """Emit what is appended to the log from `offset` on, until the process exits (then return) or the
    caller is interrupted (KeyboardInterrupt propagates)."""
    while True:
        answer = host.read_log(source.log_path, offset=offset, pid=source.pid, create_time=source.create_time)
        if answer.get("error") and answer.get("alive") is not False:
            raise TbctlError(f"cannot read {source.log_path} on {host.name}: {answer['error']}")
        if answer.get("truncated"):
            on_truncated()
        if answer["text"]:
            emit(str(answer["text"]))
        offset = int(answer["offset"])
        more = offset < int(answer.get("size") or 0)
        if more:
            continue  # a burst bigger than one read: drain it before sleeping
        if answer.get("alive") is False or source.pid is None:
            return
        time.sleep(interval)


FollowOutcome = Literal["not running", "exited", "interrupted"]


def follow_to_end(host: Host, tail: LogTail, *, emit: Callable[[str], None],
                  on_truncated: Callable[[], None] = lambda: None) -> FollowOutcome:
    """`logs -f`: emit the tail, then what is appended, until the process exits or the person stops it
    (Ctrl-C, or SIGTERM/SIGHUP: a closed terminal), which is how one stops following, not an error. Why
    it ended: it was not running (nothing more will be written), it exited, or it was interrupted."""
    from tbctl.core.expose import interrupt_on_hangup

    try:
        with interrupt_on_hangup():
            emit(tail.text)
            if not tail.source.running:
                return "not running"
            follow(host, tail.source, tail.offset, emit=emit, on_truncated=on_truncated)
            return "exited"
    except KeyboardInterrupt:
        return "interrupted"
