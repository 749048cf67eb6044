"""Programs on a real pseudo-terminal, driven as a person would: type keys, read what the terminal shows,
answer questions. The one pty driver of the suite: tbctl's prompts (host keys, passphrases, `free-port`'s
confirmation), its live status line, and interactive shells pressing TAB all run through `Terminal`."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.procs import ProcessReaper


class Terminal:
    """`argv` with a new pseudo-terminal as its controlling terminal and as stdin, stdout and stderr (stdout
    to the file `stdout_to` instead, if given: a script capturing it). `out` is everything the terminal has
    shown so far, as read by `read_until` / `wait_for` / `read_for` / `wait_exit`.

    `size` (rows, columns) sets the window size, else the pty's default (0 x 0, which programs take as
    80 columns). With a `reaper` the process is reaped even when the test fails half way."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], reaper: ProcessReaper | None = None,
                 cwd: str | Path | None = None, stdout_to: str | Path | None = None,
                 size: tuple[int, int] | None = None) -> None:
        master, slave = os.openpty()
        if size is not None:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))

        def controlling_terminal() -> None:  # after setsid: make the pty this session's terminal (ssh asks on it)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        stdout = os.open(stdout_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if stdout_to is not None else slave
        popen: Callable[..., subprocess.Popen[Any]] = reaper.popen if reaper is not None else subprocess.Popen
        try:
            self.proc = popen(list(argv), stdin=slave, stdout=stdout, stderr=slave, env=dict(env), cwd=cwd,
                              start_new_session=True, preexec_fn=controlling_terminal)
        finally:
            os.close(slave)
            if stdout != slave:
                os.close(stdout)
        self.fd = master
        self.out = b""
        self.closed = False  # the program (and whatever it started on the terminal) is done with it

    def type(self, keys: str | bytes) -> None:
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)

    def read_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read what the terminal shows until `done()` (True), or `timeout` or the terminal closing (False
        unless `done()` by then)."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return done()
            if select.select([self.fd], [], [], min(remaining, 0.2))[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: every process is done with the terminal
                    chunk = b""
                if not chunk:
                    self.closed = True
                self.out += chunk
        return True

    def wait_for(self, text: bytes, timeout: float = 30, since: int = 0) -> bool:
        """Whether `text` shows (after the first `since` bytes of `out`) within `timeout`."""
        return self.read_until(lambda: text in self.out[since:], timeout)

    def read_for(self, seconds: float) -> bytes:
        """What the terminal shows in the next `seconds`."""
        mark = len(self.out)
        self.read_until(lambda: False, seconds)
        return self.out[mark:]

    def wait_exit(self, timeout: float = 60) -> int:
        """Read until the terminal closes, then the exit code; killed (-9) if that takes past `timeout`."""
        if not self.read_until(lambda: self.closed, timeout):
            self.proc.kill()
        return self.proc.wait(timeout=30)

    def close(self, *, wait: float = 5) -> None:
        """Hang up: close the terminal, then wait `wait` s for the program to end, else kill it."""
        os.close(self.fd)
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def screen(self, last: int = 3000) -> str:
        return self.out.decode(errors="replace")[-last:]


def run_on_pty(args: Sequence[str], answers: Sequence[tuple[bytes, bytes]], *, env: Mapping[str, str],
               timeout: float = 60) -> tuple[int, str]:
    """`python -m tbctl ARGS` on a pty; each time the output shows a prompt from `answers` (in order),
    type its answer ("[answered]" marks the place in the transcript). Returns (exit code, everything the
    terminal showed)."""
    deadline = time.monotonic() + timeout
    term = Terminal([sys.executable, "-m", "tbctl", *args], env=env)
    try:
        since = 0
        for prompt, answer in answers:
            if not term.wait_for(prompt, max(0.0, deadline - time.monotonic()), since):
                break
            term.type(answer)
            term.out += b"\n[answered]\n"
            since = len(term.out)
        code = term.wait_exit(max(0.0, deadline - time.monotonic()))
    finally:
        term.close(wait=0)
    return code, term.out.decode(errors="replace")
