"""The suite itself: a hung test fails instead of hanging CI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_a_hung_test_fails_by_the_configured_timeout(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    """pyproject.toml's per-test timeout applies (pytest-timeout), and it fails the hung test rather than
    ending the run: the next test still runs."""
    assert float(pytestconfig.getini("timeout")) > 0
    hung = tmp_path / "test_hung.py"
    hung.write_text("import socket, time\n\n"
                    "def test_hangs_on_a_read():\n"
                    "    a, b = socket.socketpair()\n"
                    "    a.recv(1)  # nobody ever writes\n\n"
                    "def test_after_it():\n"
                    "    pass\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-o", "timeout=2", str(hung)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout" in done.stdout and "1 failed, 1 passed" in done.stdout, done.stdout
