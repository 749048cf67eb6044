"""Ctrl-C while `up` waits for TensorBoard to answer (a person gives up half a second after Enter): a real
SIGINT from the terminal, on a pty. tbctl says `interrupted`, exits 130, and leaves nothing running, here
or on the remote."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.conftest import Cli, tensorboard_pids_for
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


def test_ctrl_c_before_the_launchs_answer_came_back_leaves_nothing_on_the_remote(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, logdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch goes out with the wait in one batch; a Ctrl-C before its answer is read (within that
    round trip) leaves tbctl without the pid of what the host started. The interrupt is raised as the
    batch's first answer (the log dir's check) is read, against the real sshd and probe: by then the
    host has the launch too."""
    from tbctl.hosts.openssh.host import OpenSSHHost
    from tbctl.hosts.paramiko.host import SSHHost

    def interrupted(original: Callable[..., Any]) -> Callable[..., Any]:
        def call_many(self: Any, requests: Sequence[Any], **kwargs: Any) -> Any:
            if not any(op == "launch" for op, _ in requests):
                return original(self, requests, **kwargs)

            def first_answer(index: int, answer: Any) -> None:
                raise KeyboardInterrupt

            return original(self, requests, on_answer=first_answer)
        return call_many

    for host_class in (OpenSSHHost, SSHHost):
        monkeypatch.setattr(host_class, "call_many", interrupted(host_class.call_many))
    result = cli("up", "--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD, "--new", exit_code=130)
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert _left_running(reaper, logdir) == [], result.stderr
