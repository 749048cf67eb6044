"""What tbctl started, kept under the user state dir: one JSON record per line, rewritten atomically.

JSON Lines rather than one JSON document so that a damaged file loses only its damaged lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECORDS_FILE = "instances.jsonl"


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
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        with open(lock_dir / f"{safe}.lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def load(self) -> list[dict[str, Any]]:
        """All readable records; damaged lines are set aside in a `.corrupt-*` file with a warning."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        bad: list[str] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int) or "host" not in rec:
                    raise ValueError("not a record")
                records.append(rec)
            except ValueError:
                bad.append(line)
        if bad:
            aside = self.path.with_name(f"{RECORDS_FILE}.corrupt-{int(time.time())}")
            aside.write_text("\n".join(bad) + "\n", encoding="utf-8")
            self._write(records)
            self.warnings.append(
                f"state file {self.path} had {len(bad)} damaged line(s); kept {len(records)} record(s), "
                f"moved the rest to {aside}"
            )
        return records

    def for_host(self, host: str) -> list[dict[str, Any]]:
        return [r for r in self.load() if r.get("host") == host]

    def add(self, record: dict[str, Any]) -> None:
        with self.lock("state"):
            records = self.load()
            records.append(record)
            self._write(records)

    def remove(self, host: str, pids: set[int]) -> None:
        with self.lock("state"):
            records = self.load()
            kept = [r for r in records if not (r.get("host") == host and r.get("pid") in pids)]
            if len(kept) != len(records):
                self._write(kept)

    def _write(self, records: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".instances-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
