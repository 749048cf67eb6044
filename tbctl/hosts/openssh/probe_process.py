"""The probe as a process here: `ssh -S CTL -T -- HOST python3 -I -c BOOTSTRAP` over pipes, its answer
lines read with deadlines, its stderr kept for the error message, and its end (EOF, then a kill after a
grace period) reaped."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable


class Lines:
    """Lines from a pipe with a deadline (a dead link must fail a call, not hang it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def readline(self, deadline: float | None = None) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:  # EOF: whatever is left, possibly nothing
                line, self.buf = bytes(self.buf), bytearray()
                return line
            self.buf += chunk


class ProbeProcess:
    """The probe process: `ssh -S CTL -T -- HOST python3 -I -c BOOTSTRAP`, in its own session so a Ctrl-C
    meant for tbctl does not kill it before tbctl has cleaned up through it."""

    def __init__(self, argv: list[str], *, on_exit: Callable[[], None]) -> None:
        self._on_exit = on_exit  # the link watcher's wake-up: a probe that exits is a link to re-make now
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, bufsize=0)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.lines = Lines(self.proc.stdout.fileno())
        self.greeted = False  # its hello line has been read
        self._stderr = bytearray()
        self._drain = threading.Thread(target=self._read_stderr, name="tbctl-probe-stderr", daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            for chunk in iter(lambda: stream.read(4096), b""):  # raw: what is there, up to 4 KiB
                self._stderr += chunk
                del self._stderr[:-16384]  # only the end is ever shown
        except (OSError, ValueError):
            pass
        finally:
            stream.close()
            self._on_exit()

    def stderr(self) -> str:
        self._drain.join(timeout=2)
        return self._stderr.decode("utf-8", "replace")

    def exit_status(self, timeout: float = 5.0) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def close(self, grace: float = 2.0) -> None:
        """EOF on the probe's stdin: it exits by itself; killed if it does not within `grace` seconds."""
        self._end_input()
        self._reap(grace)

    def close_soon(self) -> None:
        """EOF now, the rest in the background: a command shows its answer without waiting the round trip
        the probe's exit takes. If tbctl exits first, the ssh client (in its own session) still ends with
        its channel, and init reaps it."""
        self._end_input()
        threading.Thread(target=self._reap, name="tbctl-probe-close", daemon=True).start()

    def _end_input(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass

    def _reap(self, grace: float = 2.0) -> None:
        if self.exit_status(grace) is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._drain.join(timeout=2)  # stderr reaches EOF with the process, and the drain closes it
