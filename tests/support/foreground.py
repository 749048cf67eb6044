"""`tbctl ARGS` as a real process that holds a forward in the foreground, as a person runs `up --host` or
`tunnel`: read until it prints its URL, watch its stderr, then Ctrl-C it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.support.procs import ProcessReaper, wait_until


class Foreground:
    """`tbctl ARGS` as a real process that holds a forward: read until its URL, then Ctrl-C it."""

    def __init__(self, reaper: ProcessReaper, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir), **(env or {}))
        self.proc = reaper.popen([sys.executable, "-m", "tbctl", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
        self.stderr = ""
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        self.url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("http://"):
                self.url = line.strip()
                break
        if not self.url:
            self.proc.wait(timeout=30)
            self._err_thread.join(5)
            raise AssertionError(f"tbctl {' '.join(args)} printed no URL (rc={self.proc.returncode}):\n{self.stderr}")

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def wait_stderr(self, text: str, timeout: float = 10) -> bool:
        return wait_until(lambda: text in self.stderr, timeout)

    def pid_from_stderr(self) -> int:
        assert self.wait_stderr("TensorBoard pid ") or self.wait_stderr("reusing TensorBoard pid ")
        return int(self.stderr.split("TensorBoard pid ")[1].split()[0])

    def interrupt(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self._err_thread.join(5)
        return rc
