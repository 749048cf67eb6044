"""`tbctl free-port`: LISTEN holders only, confirmation, TERM → KILL, verification."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import (ProcessReaper, free_port, port_free, start_client, start_listener,
                                 start_plain_tensorboard)

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def test_free_port_with_yes_stops_the_holder_and_verifies(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port)
    result = cli("free-port", str(port), "--yes")
    assert f"pid {holder.pid}" in result.stdout and f"port {port} is free" in result.stdout
    assert holder.wait(timeout=5) is not None  # ended by SIGTERM (it exits cleanly on TERM)
    assert "stopped pid" in result.stdout
    assert port_free(port)


def test_a_client_of_the_port_is_never_a_holder_and_survives(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port)
    client = start_client(reaper, port)
    data = cli("free-port", str(port), "--yes", "--json").json()
    assert {h["pid"] for h in data["holders"]} == {holder.pid}
    assert data["freed"] is True
    assert holder.wait(timeout=5) is not None
    assert client.poll() is None  # `lsof -i` would have listed (and `kill` killed) it


def test_a_holder_ignoring_sigterm_is_killed(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port, ignore_sigterm=True)
    data = cli("free-port", str(port), "--yes", "--timeout", "0.5", "--json").json()
    assert [o["outcome"] for o in data["outcomes"]] == ["killed"]
    assert holder.wait(timeout=5) == -9
    assert data["freed"] is True


def test_force_kills_at_once(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port)
    cli("free-port", str(port), "--yes", "--force")
    assert holder.wait(timeout=5) == -9


def test_an_ipv6_only_holder_is_found_and_freed(cli: Cli, reaper: ProcessReaper) -> None:
    port = free_port(socket.AF_INET6)
    holder = start_listener(reaper, port, family=socket.AF_INET6)
    data = cli("free-port", str(port), "--yes", "--json").json()
    assert [(h["pid"], h["family"], h["addr"]) for h in data["holders"]] == [(holder.pid, "ipv6", "::1")]
    assert data["freed"] is True and holder.wait(timeout=5) is not None


def test_own_tensorboard_is_stopped_without_asking(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    tb = start_plain_tensorboard(reaper, logdir, port)
    result = cli("free-port", str(port))  # no --yes, no TTY: still fine for our own TensorBoard
    assert f"stopped pid {tb.pid}" in result.stdout
    assert tb.wait(timeout=10) == 0


def test_confirmation_on_a_tty(reaper: ProcessReaper, port: int, state_dir: Path) -> None:
    """On a real terminal (a pty), the question is asked; 'n' keeps the holder, 'y' stops it."""
    from tests.support.terminal import run_on_pty

    holder = start_listener(reaper, port)
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    rc, screen = run_on_pty(["free-port", str(port)], [(b"[y/N]", b"n\n")], env=env)
    assert rc == 3 and "[answered]" in screen, screen
    assert holder.poll() is None
    rc, screen = run_on_pty(["free-port", str(port)], [(b"[y/N]", b"y\n")], env=env)
    assert rc == 0 and f"port {port} is free" in screen, screen
    assert holder.wait(timeout=5) is not None


def test_another_users_holder_is_explained_not_signalled(reaper: ProcessReaper, port: int, tmp_path: Path) -> None:
    """tbctl running as an unprivileged user cannot see or signal root's listener: it says so, exit 3."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to run tbctl as another user) and setpriv")
    import tempfile

    holder = start_listener(reaper, port)
    state = Path(tempfile.mkdtemp(prefix="tbctl-nobody-"))  # pytest's tmp dirs are 0700: nobody cannot enter
    os.chmod(state, 0o777)
    env = dict(os.environ, TBCTL_STATE_DIR=str(state), HOME=str(state), TBCTL_CONFIG=str(state / "config.toml"))
    env.pop("XDG_CONFIG_HOME", None)
    cmd = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
           sys.executable, "-m", "tbctl", "free-port", str(port), "--yes"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(Path(__file__).parent.parent), timeout=60)
    if "Permission denied" in proc.stderr and "python" in proc.stderr.lower():
        pytest.skip(f"nobody cannot run this interpreter: {proc.stderr.strip()}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "root" in proc.stdout + proc.stderr and "sudo" in proc.stderr
    # What it cannot see is said in words, with the reason, never as `pid ?`, `since -` or a lone `?`.
    out = proc.stdout + proc.stderr
    assert "?" not in out and "since -" not in out, out
    assert "a process of root" in proc.stdout, out
    assert "only to that user and root" in proc.stdout, out
    assert holder.poll() is None
    shutil.rmtree(state, ignore_errors=True)


# What free-port decides is tested in-process (tests/test_cli_decisions.py); these two stay here for the
# real probe, which .ci/run also runs as a normal user and under macOS' rules (a system-wide socket list
# refused): a free port, and a real listener found and left alone.
def test_a_free_port_is_reported_free(cli: Cli, port: int) -> None:
    assert f"port {port} is free" in cli("free-port", str(port)).stdout
    assert cli("free-port", str(port), "--json").json()["holders"] == []


def test_dry_run_only_shows(cli: Cli, reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port)
    result = cli("free-port", str(port), "--dry-run")
    assert f"pid {holder.pid}" in result.stdout and "dry run" in result.stdout
    data = cli("free-port", str(port), "--dry-run", "--json").json()
    assert [h["pid"] for h in data["holders"]] == [holder.pid] and data["dry_run"] is True
    assert holder.poll() is None
