"""Polling pulled logdirs: one `pull_poll` per source per poll, its bytes appended to the mirror.

Used by the foreground `up --pull` (a thread per source) and by each host's background tbctl process
(`--detach`, tbctl/daemon.py). The mirror is the truth about what was fetched, so a poller that starts
(again, after a link loss or a restart) resumes from it and neither loses nor repeats a byte.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbctl.core.mirror import SourceMirror
from tbctl.probe import pull_digest
from tbctl.errors import SSHError, TbctlError
from tbctl.models import human_bytes
from tbctl.records import PullProgress, PullSource

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.state import StateStore

IDLE_BACKOFF = 1.5  # a poll that found nothing new waits this much longer before the next, ...
IDLE_MAX_FACTOR = 3.0  # ... up to this many intervals; one that found bytes goes back to the interval


def pull_dir(cache_root: Path, pull_id: str) -> Path:
    return cache_root / "pulls" / pull_id


def mirror_of(cache_root: Path, pull_id: str) -> Path:
    """The directory TensorBoard serves: LABEL/RUN/… for every source."""
    return pull_dir(cache_root, pull_id) / "mirror"


def open_mirror(mirror: Path, source: PullSource) -> SourceMirror:
    return SourceMirror.open(mirror / source.label, mirror.parent / "index" / f"{source.label}.json")


class SourcePoller:
    """Keeps one source's mirror up to date, and its progress file (what `ls` shows) current."""

    def __init__(self, store: StateStore, pull_id: str, source: PullSource, mirror: Path, *, interval: float,
                 budget: int) -> None:
        self.store = store
        self.source = source
        self.interval = interval
        self.budget = budget
        self.mirror = open_mirror(mirror, source)
        me = _me()
        self.progress = PullProgress(pull_id=pull_id, source=source, pid=me[0], create_time=me[1],
                                     files=self.mirror.file_count, gone=self.mirror.gone_count,
                                     bytes=self.mirror.mirrored_bytes())
        self.wait = 0.0  # seconds until the next poll
        self.closed = False  # once set, the progress file is left alone (its owner removes it)
        self._foreseen: str | None = None  # what the probe expects us to hold after its last answer

    def poll(self, host: Host) -> PullProgress:
        """One poll: ask, append, record. A link failure is a state (`reconnecting`), not an error."""
        p = self.progress
        sent = self.mirror.known()
        digest = pull_digest(sent)
        try:  # the map of what we have travels only when the probe's last answer did not foresee it
            ask: dict[str, Any] = {"logdir": self.source.logdir, "budget": self.budget, "digest": digest}
            answer = host.pull_poll(**ask, known=None if digest == self._foreseen else sent)
            if answer.get("resend"):  # another probe (a new connection) than the one that foresaw it
                answer = host.pull_poll(**ask, known=sent)
        except (SSHError, TbctlError, OSError) as exc:
            self.wait = self.interval
            message = getattr(exc, "message", None) or str(exc)
            return self._publish(replace(p, state="reconnecting", error=message, updated_at=time.time()))
        with self.store.lock(f"pull-{p.pull_id}-{self.source.label}"):  # one writer per mirror, whoever polls
            applied = self.mirror.apply(answer, sent)
        self._foreseen = answer.get("next_digest")
        now = time.time()
        done = applied.pending == 0 and not applied.errors
        error = "" if answer.get("exists") else f"{answer.get('root')} does not exist on {self.source.host} (yet)"
        error = "; ".join([*applied.errors, *answer.get("errors", ())]) or error
        self.wait = 0.0 if applied.pending else (self.interval if applied.fetched else
                                                 min(max(self.wait, self.interval) * IDLE_BACKOFF,
                                                     self.interval * IDLE_MAX_FACTOR))
        state = "up" if done or p.state == "up" else "syncing"
        return self._publish(replace(
            p, state=state, files=self.mirror.file_count, gone=self.mirror.gone_count,
            bytes=p.bytes + applied.fetched, fetched=p.fetched + applied.fetched, pending=applied.pending,
            complete_at=now if done else p.complete_at, error=error, polls=p.polls + 1, updated_at=now))

    def _publish(self, progress: PullProgress) -> PullProgress:
        self.progress = progress
        if not self.closed:
            self.store.write_pull_progress(progress)
        return progress

    def close(self) -> None:
        """No more progress files from this poller (a poll still on its way finishes silently)."""
        self.closed = True
        self.store.remove_pull_progress(self.progress.pull_id, self.source.label)


def first_sync(host: Host, poller: SourcePoller, report: Callable[[str], None]) -> PullProgress:
    """Poll until nothing is left behind (the byte budget may take several polls), saying how far it is."""
    while True:
        progress = poller.poll(host)
        if progress.state == "reconnecting":
            raise SSHError(f"pulling {poller.source.host}:{poller.source.logdir}: {progress.error}")
        if progress.pending == 0:
            return progress
        report(f"pulling {poller.source.host}:{poller.source.logdir}: {human_bytes(progress.fetched)} fetched, "
               f"{human_bytes(progress.pending)} to go")


def keep_polling(host: Host, pollers: Callable[[], list[SourcePoller]], stop: threading.Event) -> None:
    """Poll each of `pollers()` (asked again every loop: a background process learns of new pulls) when it is
    due, until `stop` is set. A host's sources share its connection, so they take turns on one thread."""
    due: dict[int, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        current = pollers()
        for poller in current:
            if due.get(id(poller), 0.0) <= now:
                poller.poll(host)
                due[id(poller)] = time.monotonic() + poller.wait
        live = {id(p) for p in current}
        for key in [k for k in due if k not in live]:
            del due[key]
        next_due = min((due[id(p)] for p in current), default=now + 0.5)
        stop.wait(min(max(0.0, next_due - time.monotonic()), 0.5))


def _me() -> tuple[int, float | None]:
    from tbctl import probe

    info = probe.default_backend().proc_info(os.getpid()) or {}
    return os.getpid(), info.get("create_time")


class PullKeeper:
    """The pollers of one host's sources of every detached pull, as the pull records say (re-read at most
    every RELOAD_SECONDS, so a new `--detach` or a `down` takes effect within a second)."""

    RELOAD_SECONDS = 0.5

    def __init__(self, store: StateStore, host: str, log: Callable[[str], None]) -> None:
        self.store = store
        self.host = host
        self.log = log
        self._pollers: dict[tuple[str, str], SourcePoller] = {}
        self._loaded = 0.0

    def pollers(self) -> list[SourcePoller]:
        if time.monotonic() - self._loaded >= self.RELOAD_SECONDS:
            self._loaded = time.monotonic()
            wanted = {(rec.id, s.label): (rec, s) for rec in self.store.pulls() for s in rec.sources
                      if s.host == self.host}
            for key in [k for k in self._pollers if k not in wanted]:
                self._pollers.pop(key).close()
                self.log(f"stopped pulling {key[1]} of pull {key[0]}")
            for key, (rec, source) in wanted.items():
                if key not in self._pollers:
                    self._pollers[key] = SourcePoller(self.store, rec.id, source, Path(rec.mirror),
                                                      interval=rec.interval, budget=rec.budget)
                    self.log(f"pulling {source.host}:{source.logdir} into {rec.mirror}/{source.label}")
        return list(self._pollers.values())
