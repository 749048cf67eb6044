"""`up --pull HOST:LOGDIR …`: runs from several hosts in one local TensorBoard, with nothing running there.

Each host's event files are mirrored under tbctl's cache dir (tbctl/core/mirror.py) by polling its probe
(tbctl/core/pulling.py); one local TensorBoard serves the mirrors, started or reused as `up` does, with runs
named HOST/RUN. In the foreground the command polls until Ctrl-C, then stops the TensorBoard it started;
with `--detach` each host's background tbctl process (tbctl/daemon.py) polls instead, until `tbctl down`.
The mirror stays until `tbctl down --purge`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tbctl.core.pulling import SourcePoller, first_sync, keep_polling, mirror_of
from tbctl.errors import UsageError
from tbctl.models import PullInfo, PullSourceInfo, UpResult, browser_url
from tbctl.records import PullRecord, PullSource

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.core.host_opener import HostOpener
    from tbctl.core.session import ServeReport
    from tbctl.hosts.base import Host
    from tbctl.state import StateStore

STOP_JOIN_SECONDS = 5.0  # how long Ctrl-C waits for a poll on its way before leaving it behind
_SPEC = re.compile(r"^(?P<host>[^:\s]+(?::\d+)?)(?::(?P<logdir>.*))?$")  # HOST[:PORT][:LOGDIR], as scp has it


@dataclass(frozen=True)
class PullRequest:
    specs: tuple[str, ...]  # HOST:LOGDIR (or HOST: its `logdir` setting)
    detach: bool = False
    port: str | None = None
    timeout: float | None = None
    tensorboard: str | None = None
    connect_timeout: float | None = None
    extra_args: tuple[str, ...] = ()


def cache_root() -> Path:
    """platformdirs' user cache dir for tbctl (`~/.cache/tbctl` on Linux, following XDG_CACHE_HOME)."""
    import platformdirs

    return Path(platformdirs.user_cache_path("tbctl"))


def parse_sources(specs: Sequence[str], settings: Settings) -> tuple[PullSource, ...]:
    """Each `HOST:LOGDIR` (a host's port may precede it: `me@box:2222:runs`); `HOST` alone pulls its `logdir`
    setting. The label (the mirror's directory, and the first part of each run's name) is the host, made a
    plain file name, and numbered when one host is pulled twice."""
    from tbctl.state import _safe

    out: list[PullSource] = []
    for spec in specs:
        match = _SPEC.match(spec.strip())
        if match is None or match["host"].startswith("-"):
            raise UsageError(f"--pull {spec!r} is not HOST:LOGDIR", hint="e.g. --pull gpu1:runs (LOGDIR relative to the remote home)")
        host = match["host"]
        logdir = match["logdir"] or settings.for_host(host).logdir or settings.logdir
        if any((s.host, s.logdir) == (host, logdir) for s in out):
            continue
        label = _safe(host).lstrip(".") or "host"
        taken = {s.label for s in out}
        n, base = 2, label
        while label in taken:
            label, n = f"{base}-{n}", n + 1
        out.append(PullSource(host=host, logdir=logdir, label=label))
    if not out:
        raise UsageError("nothing to pull", hint="give --pull HOST:LOGDIR, or a `pull` list in the config file")
    return tuple(out)


def pull_id(sources: Sequence[PullSource]) -> str:
    """The same sources, the same pull: its mirror is found again (and resumed), its TensorBoard reused."""
    text = "\n".join(f"{s.host}\t{s.logdir}\t{s.label}" for s in sources)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


class PullSession:
    """What `up --pull` holds: the result, and in the foreground the polling until Ctrl-C."""

    def __init__(self, result: UpResult, record: PullRecord, *, detached: bool,
                 hold: Callable[[], None] = lambda: None) -> None:
        self.result = result
        self.record = record
        self.detached = detached
        self._hold = hold

    def hold(self) -> None:
        self._hold()


@contextlib.contextmanager
def pull_up(request: PullRequest, settings: Settings, hosts: HostOpener, store: StateStore,
            report: ServeReport) -> Iterator[PullSession]:
    from tbctl.config import parse_port
    from tbctl.core.up import UpRequest, up

    sources = parse_sources(request.specs, settings)
    ident = pull_id(sources)
    mirror = mirror_of(cache_root(), ident)
    existing = next((p for p in store.pulls() if p.id == ident), None)
    up_request = UpRequest(
        logdir=str(mirror), port=parse_port(request.port, source="--port") if request.port else settings.port,
        timeout=request.timeout or settings.timeout, tensorboard=request.tensorboard,
        extra_args=settings.defaults.tensorboard_args + request.extra_args)
    from tbctl.tensorboard import check_extra_args

    check_extra_args(up_request.extra_args, network_ok=False)
    opened: dict[str, Host] = {}
    pollers: list[SourcePoller] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    record = PullRecord(id=ident, sources=sources, mirror=str(mirror), interval=settings.pull_interval,
                        budget=settings.pull_budget)
    handed_off = False

    def let_go() -> None:
        """Stop polling here: threads told and waited for, progress files removed, connections closed."""
        stop.set()
        for thread in threads:
            thread.join(STOP_JOIN_SECONDS)  # a poll on its way ends, or is left behind by close()
        for poller in pollers:
            poller.close()
        for host in opened.values():
            host.close()

    try:
        with report.busy():
            for source in sources:
                if source.host not in opened:
                    opened[source.host] = hosts.open(source.host, connect_timeout=request.connect_timeout)
            if request.detach:
                from tbctl.core.forwards import detach_warning

                for host in opened.values():
                    detach_warning(host)  # refused before anything starts
            if existing is None:  # else a background pull of the same sources already keeps the mirror
                pollers = [SourcePoller(store, ident, s, mirror, interval=settings.pull_interval,
                                        budget=settings.pull_budget) for s in sources]
                for poller in pollers:
                    synced = first_sync(opened[poller.source.host], poller, report.progress)
                    if synced.error:  # e.g. the logdir does not exist there (yet): pulled once it does
                        report.warn(synced.error)
                # Polling goes on while TensorBoard starts, so the mirror is no staler than a poll or two by
                # the time the URL is shown: here, or in each host's background process.
                if request.detach:
                    store.put_pull(record)
                    handed_off = True
                    let_go()
                    _start_background(store, hosts, list(opened), request.connect_timeout)
                else:
                    threads = [threading.Thread(target=keep_polling, name=f"tbctl-pull-{name}", daemon=True,
                                                args=(host, _of(pollers, name), stop)) for name, host in opened.items()]
                    for thread in threads:
                        thread.start()
            mirror.mkdir(parents=True, exist_ok=True)
            result = up(hosts.local(), store, up_request, progress=report.progress, notice=report.notice)
    except BaseException:
        let_go()
        if handed_off:
            end_pulls(store, lambda p: p.id == ident, stop=lambda rec: None)
        raise
    inst = result.instance
    record = replace(record, instance_pid=inst.pid, instance_create_time=inst.create_time, port=inst.port,
                     stop_instance=not result.reused)
    if existing is not None:
        for host in opened.values():
            host.close()
        report.notice(f"reusing the background pull of {describe(sources)}")
        yield PullSession(result, existing, detached=True)
        return
    if request.detach:
        store.put_pull(record)  # now with its TensorBoard, which `down` stops with it
        yield PullSession(result, record, detached=True)
        return

    def hold() -> None:
        from tbctl.core.expose import interrupt_on_hangup

        report.notice(f"pulling every {record.interval:g} s; press Ctrl-C to stop"
                      + (" (TensorBoard stops too)" if record.stop_instance else ""))
        with interrupt_on_hangup(), contextlib.suppress(KeyboardInterrupt):
            while any(t.is_alive() for t in threads):
                time.sleep(0.2)

    try:
        yield PullSession(result, record, detached=False, hold=hold)
    finally:
        let_go()
        if record.stop_instance:
            stopper(hosts, store)(record)
        report.notice(f"pull ended; the mirror stays in {mirror} until `tbctl down --purge`")


def _start_background(store: StateStore, hosts: HostOpener, names: list[str], connect_timeout: float | None) -> None:
    """Each host's background process, started (or found running) at the same time; the first failure raised."""
    from tbctl import daemon

    failures: list[BaseException] = []

    def start(name: str) -> None:
        try:
            daemon.ensure_running(store, name, backend=hosts.backend(name), connect_timeout=connect_timeout)
        except BaseException as exc:  # raised in the caller's thread below
            failures.append(exc)

    starters = [threading.Thread(target=start, args=(name,), name=f"tbctl-start-{name}") for name in names]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    if failures:
        raise failures[0]


def _of(pollers: list[SourcePoller], host: str) -> Callable[[], list[SourcePoller]]:
    mine = [p for p in pollers if p.source.host == host]
    return lambda: mine


def describe(sources: Sequence[PullSource]) -> str:
    return ", ".join(f"{s.host}:{s.logdir}" for s in sources)


# --- ls and down ------------------------------------------------------------------------------------------


def list_pulls(store: StateStore, *, now: float | None = None) -> list[PullInfo]:
    """Every detached pull, each source as its background process last reported it (`stale` when that
    process is gone). Lag: how old the newest byte the mirror may lack can be (now − the last poll that
    left nothing behind)."""
    from tbctl import probe

    now = time.time() if now is None else now
    local = probe.Probe()
    out = []
    for rec in store.pulls():
        rows = []
        for source in rec.sources:
            p = store.pull_progress(rec.id, source.label)
            if p is None:
                rows.append(PullSourceInfo(host=source.host, logdir=source.logdir, label=source.label, state="starting"))
                continue
            alive = local.alive(p.pid, p.create_time)
            rows.append(PullSourceInfo(
                host=source.host, logdir=source.logdir, label=source.label, state=p.state if alive else "stale",
                files=p.files, gone=p.gone, bytes=p.bytes, pending=p.pending,
                lag=None if p.complete_at is None else max(0.0, now - p.complete_at), error=p.error, pid=p.pid))
        serving = rec.instance_pid is not None and local.alive(rec.instance_pid, rec.instance_create_time)
        out.append(PullInfo(id=rec.id, sources=tuple(rows), mirror=rec.mirror, port=rec.port,
                            instance_pid=rec.instance_pid, tensorboard="serving" if serving else "dead",
                            url=browser_url(rec.port) if rec.port and serving else None))
    return out


def stopper(hosts: HostOpener, store: StateStore) -> Callable[[PullRecord], None]:
    """Stops the TensorBoard a pull started (not a reused one), pid-reuse safe."""

    def stop(rec: PullRecord) -> None:
        if not rec.stop_instance or rec.instance_pid is None or rec.instance_create_time is None:
            return  # without its start time the pid may be another process's by now
        from tbctl.core.stopping import stop_instances
        from tbctl.core.instances import launched_as, list_instances

        local = hosts.local()
        mine = [i for i in list_instances(local, store) if launched_as(i, rec.instance_pid, rec.instance_create_time)]
        if mine:
            stop_instances(local, store, mine, force=False, timeout=5.0)

    return stop


def end_pulls(store: StateStore, match: Callable[[PullRecord], bool], *,
              stop: Callable[[PullRecord], None]) -> list[PullRecord]:
    """Remove matching pulls (their background processes stop polling them within a second and exit when they
    have nothing left), and stop the TensorBoards they started. Their mirrors stay (`purge_mirrors`)."""
    from tbctl.core.forwards import retire_idle_forwarders

    ended = store.remove_pulls(match)
    for rec in ended:
        stop(rec)
        for source in rec.sources:
            store.remove_pull_progress(rec.id, source.label)
    retire_idle_forwarders(store)
    return ended


def purge_mirrors(store: StateStore) -> list[str]:
    """Every mirror no pull uses any more (`down --purge`): deleted, and named. In use: a background pull's,
    and a foreground one's (a live process polls it)."""
    from tbctl import probe

    root = cache_root() / "pulls"
    local = probe.Probe()
    in_use = {p.id for p in store.pulls()}
    in_use |= {p.pull_id for p in store.pull_progresses() if local.alive(p.pid, p.create_time)}
    gone = []
    for path in sorted(root.glob("*")) if root.is_dir() else ():
        if path.name not in in_use and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            gone.append(str(path))
    return gone
