"""Ctrl-C while `up` waits for TensorBoard to answer (a person gives up half a second after Enter): a real
SIGINT from the terminal, on a pty. tbctl says `interrupted`, exits 130, and leaves nothing running, here
or on the remote."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tests.conftest import tensorboard_pids_for
from tests.support.procs import TENSORBOARD, ProcessReaper, wait_until
from tests.support.terminal import Terminal


def _interrupt_while_waiting(reaper: ProcessReaper, state_dir: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    term = Terminal([sys.executable, "-m", "tbctl", "up", *args], env=env, reaper=reaper, size=(40, 200))
    try:
        assert term.wait_for(b"to answer", 60), term.screen()
        term.type(b"\x03")  # the terminal's interrupt character: SIGINT to the foreground process group
        code = term.wait_exit(60)
    finally:
        term.close(wait=0)
    return code, term.out.decode(errors="replace")


def _left_running(reaper: ProcessReaper, logdir: Path) -> list[int]:
    """TensorBoards of `logdir` still running after a while (the reaper stops them when the test ends)."""
    wait_until(lambda: not tensorboard_pids_for(logdir), 15)
    left = tensorboard_pids_for(logdir)
    for pid in left:
        reaper.adopt(pid)
    return left


def test_ctrl_c_while_a_remote_tensorboard_starts(ssh_env: Any, reaper: ProcessReaper, state_dir: Path,
                                                  logdir: Path) -> None:
    code, screen = _interrupt_while_waiting(reaper, state_dir, "--host", ssh_env.alias, str(logdir),
                                            "--tensorboard", TENSORBOARD, "--new")
    assert "internal error" not in screen and "Traceback" not in screen, screen
    assert code == 130 and "interrupted" in screen, screen
    assert _left_running(reaper, logdir) == [], screen


def test_ctrl_c_while_a_local_tensorboard_starts(reaper: ProcessReaper, state_dir: Path, logdir: Path) -> None:
    code, screen = _interrupt_while_waiting(reaper, state_dir, str(logdir), "--new")
    assert "internal error" not in screen and "Traceback" not in screen, screen
    assert code == 130 and "interrupted" in screen, screen
    assert _left_running(reaper, logdir) == [], screen
