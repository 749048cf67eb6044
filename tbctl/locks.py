"""The one lock between tbctl processes on this machine: the state files' and an SSH master's start.

An exclusive lock on a file the caller opened itself (0600, never through a symlink: `probe.open_private`),
held for a block and released when it ends or when the process dies. `fcntl.flock` where there is fcntl
(Linux, macOS); on Windows `msvcrt.locking` of the file's first byte, which Windows also releases when the
process exits. Not the `filelock` package: it opens the lock file itself (so it could neither refuse a
symlink nor share the caller's descriptor), and what it would add over these lines is a dependency.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


@contextlib.contextmanager
def held(fd: int) -> Iterator[None]:
    """Hold an exclusive lock on the open file `fd` for the block, waiting for it as long as it takes."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return
    _lock_first_byte(fd)
    try:
        yield
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]  # (typeshed: Windows only)


def _lock_first_byte(fd: int) -> None:
    """msvcrt.locking locks from the current position. Its LK_LOCK tries for ~10 s, then raises EDEADLOCK
    (Windows' name for EDEADLK): another tbctl still holds it, so wait on, as flock does."""
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            return
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
