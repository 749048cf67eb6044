"""The suite itself: a hung test fails instead of hanging CI, and no test (nor anything it starts, here or
on the "remote", which is this machine as this user) writes under the real user's home."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REAL_TBCTL_DIRS

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


def _real_homes() -> set[Path]:
    return {Path(pwd.getpwuid(os.getuid()).pw_dir)}


def _outside(path: str | Path, homes: set[Path]) -> bool:
    return not any(Path(path).is_relative_to(home) for home in homes)


def test_home_and_xdg_dirs_are_the_tests_own(tmp_path: Path) -> None:
    homes = _real_homes()
    assert Path(os.environ["HOME"]).is_relative_to(tmp_path)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        assert Path(os.environ[var]).is_relative_to(tmp_path), var
    # A process the test starts inherits it; without TBCTL_STATE_DIR, tbctl's default is the isolated one.
    env = {k: v for k, v in os.environ.items() if k != "TBCTL_STATE_DIR"}
    shown = subprocess.run([sys.executable, "-m", "tbctl", "config", "show", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    state_dir = json.loads(shown.stdout)["state_dir"]
    assert Path(state_dir).is_relative_to(tmp_path) and _outside(state_dir, homes)
    assert all(_outside(d, {tmp_path}) for d in REAL_TBCTL_DIRS)  # the session-end check watches the real ones


def test_the_remote_sessions_have_their_own_home(ssh_env: Any) -> None:
    """sshd gives its sessions the HOME passwd names: the remote's are pointed at a directory of the
    test session, and python3 (which the probe runs) and tensorboard are still found there."""
    script = ('echo "$HOME"; echo "$XDG_CACHE_HOME"; echo "$XDG_STATE_HOME"; '
              'python3 -c "import os; print(os.path.expanduser(chr(126)))"')
    done = subprocess.run(ssh_env.server.ssh_args(script), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert len(lines) == 4, done.stdout
    for line in lines:
        assert Path(line).is_relative_to(ssh_env.home) and _outside(line, _real_homes()), line


def test_a_record_left_in_the_real_state_dir_fails_the_run(tmp_path: Path) -> None:
    """The session-end check of tests/conftest.py, on a run whose "real" HOME is a directory of ours: a test
    that leaves a record there (as a process started with a scrubbed environment would) fails the run."""
    fake_home = tmp_path / "real-home"
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text("import json, os\nfrom pathlib import Path\n\n"
                     "def test_writes_a_record(tmp_path):\n"
                     "    state = Path(os.environ['REAL_HOME']) / '.local' / 'state' / 'tbctl'\n"
                     "    state.mkdir(parents=True, exist_ok=True)\n"
                     "    (state / 'instances.jsonl').write_text(json.dumps({'logdir': str(tmp_path)}) + '\\n')\n\n"
                     "def test_clean():\n"
                     "    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    runs = {}
    for name, args in (("leaky", [str(leaky)]), ("clean", [str(leaky), "-k", "clean"])):
        env.update(HOME=str(fake_home), REAL_HOME=str(fake_home))
        runs[name] = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                                     "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / name), *args],
                                    env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        (fake_home / ".local" / "state" / "tbctl" / "instances.jsonl").unlink(missing_ok=True)
    assert runs["leaky"].returncode == 1 and "2 passed" in runs["leaky"].stdout, runs["leaky"].stdout
    assert "tests wrote under the real home's tbctl dirs" in runs["leaky"].stdout
    assert "instances.jsonl" in runs["leaky"].stdout
    assert runs["clean"].returncode == 0, runs["clean"].stdout


def test_no_test_module_imports_from_another() -> None:
    """What tests share lives in tests/support (and conftest.py's fixtures): a test module is never a library,
    so moving or deleting one cannot break another."""
    import ast

    offenders = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("tests.test_")]
    assert not offenders, offenders
