"""The local mirror of one pulled logdir: the host's event files, kept by appending only.

A pull's mirror directory is what its TensorBoard serves; each source has a subdirectory (its label), so
runs show as LABEL/RUN. An event file is only ever appended to: when the host's file was replaced (another
inode) or shrank, the bytes go to a new local file beside the old one, named after it with `.N` added, so
it sorts after it and every TensorBoard loader (the fast one included) reads it as a new file. The index
(outside the served directory) remembers which host file each local file mirrors; how much of it is
mirrored is the local file's size, so a crash between an append and the index write loses nothing and
duplicates nothing.

The host is not trusted: a path it sends becomes a local path only when every part is a plain name (no
`..`, no separators, no drive), and files are created under the mirror only, never through a symlink.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FORBIDDEN = ("\x00", "\\", "/") + ((":",) if sys.platform == "win32" else ())  # ':' names a stream on Windows
INDEX_VERSION = 1


def safe_parts(rel: str) -> list[str] | None:
    """The parts of a host's relative path, or None when any part could leave the directory it is joined to."""
    if not isinstance(rel, str) or not rel:
        return None
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", "..") or any(c in part for c in _FORBIDDEN) or len(part.encode("utf-8", "replace")) > 255:
            return None
    return parts


@dataclass
class MirroredFile:
    """One host file and the local file holding the bytes mirrored from it."""

    dev: int
    ino: int
    local: str  # relative to the source's directory, `/`-separated
    size: int = 0  # the host file's size when last seen
    mtime: float = 0.0
    gone: bool = False  # deleted on the host; its mirror stays


@dataclass(frozen=True)
class Applied:
    fetched: int  # bytes taken from the answer
    pending: int  # bytes the host still has for the next poll
    errors: tuple[str, ...] = ()


@dataclass
class SourceMirror:
    """A source's directory in the mirror, and its index."""

    directory: Path
    index_path: Path
    files: dict[str, MirroredFile] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path, index_path: Path) -> SourceMirror:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        index_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        mirror = cls(directory, index_path)
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            data = json.loads(index_path.read_text(encoding="utf-8"))
            for rel, row in data["files"].items():
                if safe_parts(rel) and safe_parts(row["local"]):
                    mirror.files[rel] = MirroredFile(int(row["dev"]), int(row["ino"]), row["local"], int(row["size"]),
                                                     float(row["mtime"]), bool(row.get("gone")))
        return mirror

    def local_size(self, entry: MirroredFile) -> int:
        try:
            return os.lstat(self.directory / entry.local).st_size
        except OSError:
            return 0

    def known(self) -> dict[str, list[Any]]:
        """What the host is told we have: [dev, ino, size mirrored, mtime] per path still there."""
        out: dict[str, list[Any]] = {}
        for rel, entry in self.files.items():
            if entry.gone:
                continue
            size = self.local_size(entry) if is_event_file(rel) else entry.size
            out[rel] = [entry.dev, entry.ino, size, entry.mtime]
        return out

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def gone_count(self) -> int:
        return sum(1 for e in self.files.values() if e.gone)

    def mirrored_bytes(self) -> int:
        total = 0
        for path in self.directory.rglob("*"):
            with contextlib.suppress(OSError):
                st = path.lstat()
                if not path.is_symlink() and path.is_file():
                    total += st.st_size
        return total

    def apply(self, answer: Mapping[str, Any], sent: Mapping[str, Any]) -> Applied:
        """Append (or write) what one `pull_poll` answer carries, then record it in the index. `sent`: the
        `known()` the poll was asked with. A file the mirror changed for since (another poller of this
        mirror got there first) is skipped, so no answer is ever applied twice."""
        fetched, errors, changed = 0, [], False
        now = self.known()
        for row in answer.get("files") or ():
            rel = row.get("path")
            parts = safe_parts(rel)
            if parts is None:
                errors.append(f"refused a path from the host: {rel!r}")
                continue
            if now.get(rel) != sent.get(rel):
                errors.append(f"{rel}: the mirror changed since the poll; polling again")
                continue
            try:
                got, moved = self._apply_row(rel, row)
            except (OSError, ValueError, TypeError, KeyError, zlib.error) as exc:
                errors.append(f"{rel}: {exc}")
                continue
            fetched += got
            changed = changed or moved
        for rel in answer.get("gone") or ():
            entry = self.files.get(rel)
            if entry is not None and not entry.gone:
                entry.gone, changed = True, True
        if changed:
            self._save()
        return Applied(fetched, int(answer.get("pending") or 0), tuple(errors))

    def _apply_row(self, rel: str, row: Mapping[str, Any]) -> tuple[int, bool]:
        data = base64.b64decode(row["data"]) if row["data"] else b""
        if row["encoding"] == "zlib":  # never more than the host says it sent (a small bomb stays small)
            data = zlib.decompressobj().decompress(data, int(row["length"]) + 1)
        if len(data) != row["length"]:
            raise ValueError("the answer's length does not match its data")
        dev, ino, offset = int(row["dev"]), int(row["ino"]), int(row["offset"])
        entry = self.files.get(rel)
        if not is_event_file(rel):
            if row["length"] != row["size"]:
                return 0, False  # too big for this poll's budget: whole next time
            local = rel
            _replace(self.directory, local, data)
            self.files[rel] = MirroredFile(dev, ino, local, int(row["size"]), float(row["mtime"]))
            return len(data), True
        moved = False
        same = entry is not None and (entry.dev, entry.ino) == (dev, ino) and not entry.gone
        if not same or offset == 0 and self.local_size(entry) > 0:  # type: ignore[arg-type]
            entry = MirroredFile(dev, ino, self._new_local_name(rel, entry))
            self.files[rel] = entry
            self._save()  # named before any byte lands in it
            moved = True
        assert entry is not None
        if data:
            _append(self.directory, entry.local, data, expect_size=offset)
        entry.size, entry.mtime = int(row["size"]), float(row["mtime"])
        return len(data), moved

    def _new_local_name(self, rel: str, previous: MirroredFile | None) -> str:
        """The host path itself the first time; after a replacement, `PATH.N` with N counting up (so it
        sorts after the earlier ones and still has `tfevents` in its name)."""
        if previous is None and not os.path.lexists(self.directory / rel):
            return rel
        n = 2
        while os.path.lexists(self.directory / f"{rel}.{n}") or any(e.local == f"{rel}.{n}" for e in self.files.values()):
            n += 1
        return f"{rel}.{n}"

    def _save(self) -> None:
        rows = {rel: {"dev": e.dev, "ino": e.ino, "local": e.local, "size": e.size, "mtime": e.mtime, "gone": e.gone}
                for rel, e in self.files.items()}
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": rows}), encoding="utf-8")
        os.replace(tmp, self.index_path)


def is_event_file(rel: str) -> bool:
    return "tfevents" in rel.rsplit("/", 1)[-1]


def _local_path(directory: Path, local: str) -> Path:
    """`directory`/`local`, its parent made, and refused if any directory on the way is a symlink."""
    parts = safe_parts(local)
    if parts is None:
        raise ValueError(f"not a plain relative path: {local!r}")
    parent = directory
    for part in parts[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise ValueError(f"{parent} is a symlink; not following it")
        parent.mkdir(exist_ok=True, mode=0o700)
    return parent / parts[-1]


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _append(directory: Path, local: str, data: bytes, *, expect_size: int) -> None:
    """Append `data` if the local file holds exactly `expect_size` bytes (else the answer is stale: skip it)."""
    fd = os.open(_local_path(directory, local), os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size != expect_size:
            raise ValueError(f"the mirror holds {size} bytes, the answer starts at {expect_size}; polling again")
        _write_all(fd, data)
    finally:
        os.close(fd)


def _replace(directory: Path, local: str, data: bytes) -> None:
    """A small file plugins read (not an event file): written beside, then renamed over the old one."""
    path = _local_path(directory, local)
    tmp = path.with_name(f".{path.name}.tbctl-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
