"""tbctl in a process of its own, with a stand-in for the browser it opens: for the few tests that must
check the real hand-over through Python's webbrowser and $BROWSER (read once per process). Tests of
what a command decides give the in-process Environment a fake browser instead (tests/support/cli_env.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def fake_browser(tmp_path: Path) -> tuple[str, Path]:
    """What $BROWSER runs where a real browser window cannot open (no display here): it records the URL it
    is given in the returned file and, like real browsers, chatters on its stdout."""
    got = tmp_path / "browser-got"
    script = tmp_path / "fake-browser"
    script.write_text(f'#!/bin/sh\necho "Opening in existing browser session."\nprintf "%s\\n" "$1" >> {got}\n')
    script.chmod(0o755)
    return f"{script} %s", got


def tbctl_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """tbctl in a process of its own: webbrowser reads $BROWSER once per process, so each case needs one."""
    return subprocess.run([sys.executable, "-m", "tbctl", *args], env=env, capture_output=True, text=True, timeout=60)
