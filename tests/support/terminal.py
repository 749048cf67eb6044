"""Running tbctl on a real pseudo-terminal and answering its questions, as a person would."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Mapping, Sequence


def run_on_pty(args: Sequence[str], answers: Sequence[tuple[bytes, bytes]], *, env: Mapping[str, str],
               timeout: float = 60) -> tuple[int, str]:
    """`python -m tbctl ARGS` on a pty; each time the output shows a prompt from `answers` (in order),
    type its answer. Returns (exit code, everything the terminal showed)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: tbctl with the pty as its terminal
        os.environ.clear()
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, "-m", "tbctl", *args])
    out = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if pending and pending[0][0] in out:
                os.write(fd, pending.pop(0)[1])
                out += b"\n[answered]\n"
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
