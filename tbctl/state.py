"""What tbctl started, kept under the user state dir: one JSON record per line, rewritten atomically.

JSON Lines rather than one JSON document so that a damaged file loses only its damaged lines.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tbctl import locks
from tbctl.errors import TbctlError
from tbctl.probe import open_private, private_dir
from tbctl.records import ForwarderStatus, ForwardRecord, InstanceRecord, PullProgress, PullRecord, Record

RECORDS_FILE = "instances.jsonl"
FORWARDS_FILE = "forwards.jsonl"
PULLS_FILE = "pulls.jsonl"

_R = TypeVar("_R", bound=Record)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / RECORDS_FILE
        self.warnings: list[str] = []
        self._private: set[Path] = set()  # directories already made (or found) private

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def _private_dir(self, path: Path, *, create: bool = True) -> bool:
        """Whether `path` (the state dir or one of its subdirs) exists and is ours alone: made 0700, or
        refused in one line when it is another user's (or their symlink). With `create=False` a missing
        one is left missing (reading needs no directory)."""
        if path in self._private:
            return True
        if path != self.dir:
            self._private_dir(self.dir, create=create)
        if not create and not os.path.lexists(path):
            return False
        error = private_dir(str(path))["error"]
        if error:
            what = "state dir" if path == self.dir else "state subdir"
            raise TbctlError(f"{what} {error}", hint="point TBCTL_STATE_DIR at a directory of your own")
        self._private.add(path)
        return True

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between tbctl processes on this machine (held across check-then-launch)."""
        lock_dir = self.dir / "locks"
        self._private_dir(lock_dir)
        with os.fdopen(_open(lock_dir / f"{_safe(name)}.lock", os.O_RDWR | os.O_CREAT), "r+b") as f, \
                locks.held(f.fileno()):
            yield

    def load(self) -> list[InstanceRecord]:
        """All readable instance records; damaged lines are set aside with a warning."""
        return self._load(self.path, InstanceRecord.from_json)

    def for_host(self, host: str) -> list[InstanceRecord]:
        return [r for r in self.load() if r.host == host]

    def add(self, record: InstanceRecord) -> None:
        self._append(self.path, InstanceRecord.from_json, record)

    def remove(self, host: str, identities: set[tuple[int, float | None]]) -> None:
        """Remove the records of these (pid, recorded create_time); a None create_time means any record of
        that pid. By pid alone, cleaning one that exited would also drop a newer one that got its pid."""
        def match(r: InstanceRecord) -> bool:
            return r.host == host and any(
                r.pid == pid and (ct is None or r.create_time == ct) for pid, ct in identities)

        self._remove(self.path, InstanceRecord.from_json, match)

    # --- forwards: what the background forwarders should serve ---

    @property
    def forwards_path(self) -> Path:
        return self.dir / FORWARDS_FILE

    def forwards(self, host: str | None = None) -> list[ForwardRecord]:
        return [r for r in self._load(self.forwards_path, ForwardRecord.from_json) if host is None or r.host == host]

    def add_forward(self, record: ForwardRecord) -> None:
        self._append(self.forwards_path, ForwardRecord.from_json, record)

    def remove_forwards(self, match: Callable[[ForwardRecord], bool]) -> list[ForwardRecord]:
        return self._remove(self.forwards_path, ForwardRecord.from_json, match)

    # --- background forwarder status: written by the forwarder, read by ls and down ---

    def forwarder_status_path(self, host: str) -> Path:
        return self.dir / "forwarders" / f"{_safe(host)}.json"

    def forwarder_log_path(self, host: str) -> Path:
        """The forwarder's log, created 0600 in a 0700 dir if missing, so that whoever opens it for
        appending (the forwarder's parent) neither creates it world-readable nor follows a symlink."""
        path = self.dir / "forwarders" / f"{_safe(host)}.log"
        self._private_dir(path.parent)
        os.close(_open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        return path

    def write_forwarder_status(self, host: str, status: ForwarderStatus) -> None:
        path = self.forwarder_status_path(host)
        self._private_dir(path.parent)
        _atomic_write(path, json.dumps(status.to_json(), sort_keys=True, indent=1) + "\n")

    def forwarder_statuses(self) -> list[ForwarderStatus]:
        out: list[ForwarderStatus] = []
        if not self._private_dir(self.dir / "forwarders", create=False):
            return out
        for path in sorted((self.dir / "forwarders").glob("*.json")):
            try:
                out.append(ForwarderStatus.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                self.warnings.append(f"unreadable forwarder status {path}; ignored")
        return out

    def remove_forwarder_status(self, host: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.forwarder_status_path(host).unlink()

    # --- pulls (`up --pull`): what is mirrored, and how each source is doing ---

    def pulls(self) -> list[PullRecord]:
        return self._load(self.dir / PULLS_FILE, PullRecord.from_json)

    def put_pull(self, record: PullRecord) -> None:
        """Add the pull, or replace the one with its id (in one write: its pollers never see it gone)."""
        with self.lock("state"):
            records = [r for r in self._load(self.dir / PULLS_FILE, PullRecord.from_json, locked=True) if r.id != record.id]
            self._write(self.dir / PULLS_FILE, [*records, record])

    def remove_pulls(self, match: Callable[[PullRecord], bool]) -> list[PullRecord]:
        return self._remove(self.dir / PULLS_FILE, PullRecord.from_json, match)

    def _pull_progress_path(self, pull_id: str, label: str) -> Path:
        return self.dir / "pulls" / f"{_safe(pull_id)}-{_safe(label)}.json"

    def write_pull_progress(self, progress: PullProgress) -> None:
        path = self._pull_progress_path(progress.pull_id, progress.source.label)
        self._private_dir(path.parent)
        _atomic_write(path, json.dumps(progress.to_json(), sort_keys=True) + "\n")

    def pull_progress(self, pull_id: str, label: str) -> PullProgress | None:
        path = self._pull_progress_path(pull_id, label)
        if not self._private_dir(path.parent, create=False):
            return None
        try:
            return PullProgress.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.warnings.append(f"unreadable pull progress {path}; ignored")
            return None

    def pull_progresses(self) -> list[PullProgress]:
        """Every source's progress file, foreground pulls' included."""
        directory = self.dir / "pulls"
        if not self._private_dir(directory, create=False):
            return []
        out = []
        for path in sorted(directory.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(PullProgress.from_json(json.loads(path.read_text(encoding="utf-8"))))
        return out

    def remove_pull_progress(self, pull_id: str, label: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._pull_progress_path(pull_id, label).unlink()

    # --- JSON Lines files ---

    def _load(self, path: Path, parse: Callable[[Any], _R], *, locked: bool = False) -> list[_R]:
        if not self._private_dir(self.dir, create=False):
            return []
        records, bad = _parse(path, parse)
        if not bad:
            return records
        if not locked:
            # A repair rewrites the file: only under the lock, or it could overwrite a concurrent add().
            # Parse again once we hold it: the writer we waited for may have changed the file.
            with self.lock("state"):
                return self._load(path, parse, locked=True)
        aside = _set_aside(path, bad)
        self._write(path, records)
        self.warnings.append(
            f"state file {path} had {len(bad)} damaged line(s); kept {len(records)} record(s), "
            f"moved the rest to {aside}"
        )
        return records

    def _append(self, path: Path, parse: Callable[[Any], _R], record: _R) -> None:
        with self.lock("state"):
            records = self._load(path, parse, locked=True)
            records.append(record)
            self._write(path, records)

    def _remove(self, path: Path, parse: Callable[[Any], _R], match: Callable[[_R], bool]) -> list[_R]:
        with self.lock("state"):
            records = self._load(path, parse, locked=True)
            kept = [r for r in records if not match(r)]
            if len(kept) != len(records):
                self._write(path, kept)
            return [r for r in records if match(r)]

    def _write(self, path: Path, records: list[_R]) -> None:
        self._private_dir(self.dir)
        _atomic_write(path, "".join(json.dumps(rec.to_json(), sort_keys=True) + "\n" for rec in records))


def _atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of either. mkstemp creates it 0600, and
    os.replace puts the file itself in place of a symlink there, never writing through it."""
    import tempfile  # here, not at the top: `up` reads the state before it launches TensorBoard

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _open(path: Path, flags: int) -> int:
    """A file of tbctl's: created 0600, and a symlink in its place is refused in one line, not followed."""
    try:
        return open_private(str(path), flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TbctlError(f"{path} is a symlink; refusing to follow it", hint="remove it: tbctl made none there") from None
        raise


def _parse(path: Path, parse: Callable[[Any], _R]) -> tuple[list[_R], list[str]]:
    """(readable records, damaged lines) of a JSON Lines file; a missing file has neither."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return [], []
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        text = f.read()
    records: list[_R] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(parse(json.loads(line)))
        except ValueError:  # not JSON, or not a record
            bad.append(line)
    return records, bad


def _set_aside(path: Path, lines: list[str]) -> Path:
    """Write damaged lines to a new `NAME.corrupt-SECOND[-N]` file: never over an earlier repair's copy
    (two repairs within one second would otherwise share a name)."""
    stamp = int(time.time())
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = open_private(str(aside), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return aside
    raise FileExistsError(f"no free name for the damaged lines of {path}")


_SAFE_CHARS = "-_."


def _safe(name: str) -> str:
    """A file name for `name` (a host as typed), distinct for distinct names. A name of only letters,
    digits and -_. is its own file name; any other gets its characters replaced (`a@b` → `a_b`) plus `~`
    and a hash of the exact name, since replacing alone would give `a@b` and `a_b` one file. No plain
    name has a `~`, so the two kinds never meet."""
    if name and all(c.isalnum() or c in _SAFE_CHARS for c in name) and name.isascii():
        return name
    readable = "".join(c if c.isascii() and (c.isalnum() or c in _SAFE_CHARS) else "_" for c in name)[:64]
    import hashlib  # here: OpenSSL's loading costs ~3 ms, and most commands name no host file

    return f"{readable}~{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"

