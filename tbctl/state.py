"""What tbctl started, kept under the user state dir: one JSON record per line, rewritten atomically.

JSON Lines rather than one JSON document so that a damaged file loses only its damaged lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RECORDS_FILE = "instances.jsonl"
FORWARDS_FILE = "forwards.jsonl"


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / RECORDS_FILE
        self.warnings: list[str] = []

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between tbctl processes on this machine (held across check-then-launch)."""
        lock_dir = self.dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{_safe(name)}.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def load(self) -> list[dict[str, Any]]:
        """All readable instance records; damaged lines are set aside with a warning."""
        return self._load(self.path, _is_instance)

    def for_host(self, host: str) -> list[dict[str, Any]]:
        return [r for r in self.load() if r.get("host") == host]

    def add(self, record: dict[str, Any]) -> None:
        self._append(self.path, _is_instance, record)

    def remove(self, host: str, pids: set[int]) -> None:
        self._remove(self.path, _is_instance, lambda r: r.get("host") == host and r.get("pid") in pids)

    # --- forwards: what the background forwarders should serve ---

    @property
    def forwards_path(self) -> Path:
        return self.dir / FORWARDS_FILE

    def forwards(self, host: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._load(self.forwards_path, _is_forward) if host is None or r["host"] == host]

    def add_forward(self, record: dict[str, Any]) -> None:
        self._append(self.forwards_path, _is_forward, record)

    def remove_forwards(self, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return self._remove(self.forwards_path, _is_forward, match)

    # --- background forwarder status: written by the forwarder, read by ls and down ---

    def forwarder_status_path(self, host: str) -> Path:
        return self.dir / "forwarders" / f"{_safe(host)}.json"

    def forwarder_log_path(self, host: str) -> Path:
        return self.dir / "forwarders" / f"{_safe(host)}.log"

    def write_forwarder_status(self, host: str, status: dict[str, Any]) -> None:
        path = self.forwarder_status_path(host)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps(status, sort_keys=True, indent=1) + "\n")

    def forwarder_statuses(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.dir / "forwarders").glob("*.json")):
            try:
                status = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(status, dict) and isinstance(status.get("pid"), int):
                    out.append(status)
            except (OSError, ValueError):
                self.warnings.append(f"unreadable forwarder status {path}; ignored")
        return out

    def remove_forwarder_status(self, host: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.forwarder_status_path(host).unlink()

    # --- JSON Lines files ---

    def _load(self, path: Path, valid: Callable[[Any], bool], *, locked: bool = False) -> list[dict[str, Any]]:
        records, bad = _parse(path, valid)
        if not bad:
            return records
        if not locked:
            # A repair rewrites the file: only under the lock, or it could overwrite a concurrent add().
            # Parse again once we hold it: the writer we waited for may have changed the file.
            with self.lock("state"):
                return self._load(path, valid, locked=True)
        aside = _set_aside(path, bad)
        self._write(path, records)
        self.warnings.append(
            f"state file {path} had {len(bad)} damaged line(s); kept {len(records)} record(s), "
            f"moved the rest to {aside}"
        )
        return records

    def _append(self, path: Path, valid: Callable[[Any], bool], record: dict[str, Any]) -> None:
        with self.lock("state"):
            records = self._load(path, valid, locked=True)
            records.append(record)
            self._write(path, records)

    def _remove(self, path: Path, valid: Callable[[Any], bool], match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock("state"):
            records = self._load(path, valid, locked=True)
            kept = [r for r in records if not match(r)]
            if len(kept) != len(records):
                self._write(path, kept)
            return [r for r in records if match(r)]

    def _write(self, path: Path, records: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records))


def _atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of either."""
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


def _parse(path: Path, valid: Callable[[Any], bool]) -> tuple[list[dict[str, Any]], list[str]]:
    """(readable records, damaged lines) of a JSON Lines file; a missing file has neither."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not valid(rec):
                raise ValueError("not a record")
            records.append(rec)
        except ValueError:
            bad.append(line)
    return records, bad


def _set_aside(path: Path, lines: list[str]) -> Path:
    """Write damaged lines to a new `NAME.corrupt-SECOND[-N]` file: never over an earlier repair's copy
    (two repairs within one second would otherwise share a name)."""
    stamp = int(time.time())
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return aside
    raise FileExistsError(f"no free name for the damaged lines of {path}")


def _safe(name: str) -> str:
    """A file name for `name` (a host as typed): readable, and distinct for distinct names. Replacing
    characters alone maps `a@b` and `a_b` to one file, so a short hash of the exact name follows."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
    return f"{readable}-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def _is_instance(rec: Any) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("pid"), int) and "host" in rec


def _is_forward(rec: Any) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("local_port"), int) and isinstance(rec.get("host"), str) \
        and isinstance(rec.get("remote_port"), int)
