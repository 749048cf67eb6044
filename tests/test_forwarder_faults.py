"""Faults and odd setups around the background forwarder and the probe's start, on both SSH backends:
a `tbctl/` folder in the caller's directory, a status file rewritten for nothing, a forwarder exiting while
a `--detach` adds a forward, a login shell that prints, and a service that speaks first."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.procs import ProcessReaper, free_port, wait_until
from tests.support.remote import start_remote_listener as _remote_listener


def _status_path(state_dir: Path, host: str) -> Path:
    paths = list((state_dir / "forwarders").glob("*.json"))
    assert len(paths) == 1, paths
    return paths[0]


def test_a_tbctl_folder_in_the_callers_directory_is_not_imported_by_the_forwarder(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "cwd" / "tbctl"
    decoy.mkdir(parents=True)
    marker = tmp_path / "IMPORTED"
    (decoy / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (decoy / "__main__.py").write_text("raise SystemExit(3)\n")
    port = free_port()
    _remote_listener(ssh_env, reaper, port, banner=b"SSH-2.0-decoy\r\n")
    monkeypatch.chdir(tmp_path / "cwd")
    local = free_port()
    cli("tunnel", ssh_env.alias, str(port), "--local-port", str(local), "--detach")
    status = json.loads(_status_path(state_dir, ssh_env.alias).read_text())
    reaper.adopt(status["pid"], status["create_time"])
    assert not marker.exists(), "the forwarder imported the tbctl/ of the directory it was started from"
    with socket.create_connection(("127.0.0.1", local), timeout=5) as s:
        assert s.recv(64).startswith(b"SSH-2.0-decoy")
    cli("down", str(local))


def test_the_status_file_is_written_only_when_something_changed(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path
) -> None:
    port = free_port()
    _remote_listener(ssh_env, reaper, port, banner=b"hello\n")
    local = free_port()
    cli("tunnel", ssh_env.alias, str(port), "--local-port", str(local), "--detach")
    path = _status_path(state_dir, ssh_env.alias)
    reaper.adopt(json.loads(path.read_text())["pid"])
    assert wait_until(lambda: json.loads(path.read_text())["link"]["state"] == "up", 10)
    time.sleep(1.0)  # let the forward's first checks settle
    before = path.stat().st_mtime_ns
    time.sleep(2.5)  # five sync periods of 0.5 s: each used to rewrite (and fsync) the file
    assert path.stat().st_mtime_ns == before, "rewritten although nothing changed"
    cli("down", str(local))


def test_a_forward_added_while_the_forwarder_decides_to_exit_is_served(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path
) -> None:
    """The forwarder exits when it has nothing left; a `--detach` adding a forward at that moment must not be
    left without one. Holding the lock both take makes the race happen every time."""
    from tbctl.core.forwards import add_forward
    from tbctl.state import StateStore

    port = free_port()
    _remote_listener(ssh_env, reaper, port, banner=b"hello\n")
    first, second = free_port(), free_port()
    cli("tunnel", ssh_env.alias, str(port), "--local-port", str(first), "--detach")
    path = _status_path(state_dir, ssh_env.alias)
    forwarder = json.loads(path.read_text())
    reaper.adopt(forwarder["pid"], forwarder["create_time"])
    store = StateStore(state_dir)
    with store.lock(f"forwarder-{ssh_env.alias}"):  # as `--detach` holds it around add + ensure_running
        store.remove_forwards(lambda r: r.local_port == first)
        time.sleep(1.5)  # the forwarder has seen it has nothing left and waits for the lock
        add_forward(store, host=ssh_env.alias, local_port=second, remote_port=port, instance_pid=None,
                    instance_create_time=None, logdir=None, path_prefix="", stop_instance=False)

    def serving_second() -> bool:
        try:
            rows = json.loads(path.read_text())["forwards"]
        except (OSError, ValueError):
            return False
        return any(r["local_port"] == second and r["listening"] for r in rows)

    assert wait_until(serving_second, 10), "the new forward was lost with the exiting forwarder"
    assert json.loads(path.read_text())["pid"] == forwarder["pid"]
    with socket.create_connection(("127.0.0.1", second), timeout=5) as s:
        assert s.recv(16) == b"hello\n"
    cli("down", str(second))


def test_a_login_shell_that_prints_does_not_break_the_probe(ssh_env: Any, cli: Cli) -> None:
    bashrc = ssh_env.home / ".bashrc"
    saved = bashrc.read_text() if bashrc.exists() else None
    bashrc.write_text('echo "Welcome to the cluster! Quota: 93% used"\necho \'{"not": "the probe"}\'\n')
    try:
        result = cli("ls", "--host", ssh_env.alias, "--json")
        assert result.json()["errors"] == []
    finally:
        if saved is None:
            bashrc.unlink()
        else:
            bashrc.write_text(saved)


def test_a_probe_that_never_says_hello_shows_what_the_host_printed(ssh_env: Any, cli: Cli) -> None:
    bashrc = ssh_env.home / ".bashrc"
    saved = bashrc.read_text() if bashrc.exists() else None
    bashrc.write_text('echo "this account is disabled"\nexit 1\n')
    try:
        err = cli("ls", "--host", ssh_env.alias, exit_code=1).stderr
        assert "this account is disabled" in err and "internal error" not in err and "Traceback" not in err
    finally:
        if saved is None:
            bashrc.unlink()
        else:
            bashrc.write_text(saved)


def test_tunnel_to_a_service_that_speaks_first_forwards_it_and_says_it_is_not_http(
    ssh_env: Any, reaper: ProcessReaper, state_dir: Path
) -> None:
    port = free_port()
    _remote_listener(ssh_env, reaper, port, banner=b"SSH-2.0-OpenSSH_9.2p1 banner\r\n")
    tun = Foreground(reaper, state_dir, "tunnel", ssh_env.alias, str(port))
    local = int(tun.url.rsplit(":", 1)[1].strip("/"))
    assert tun.wait_stderr("does not speak HTTP"), tun.stderr
    with socket.create_connection(("127.0.0.1", local), timeout=5) as s:
        assert s.recv(64).startswith(b"SSH-2.0-OpenSSH_9.2p1 banner")
    assert tun.interrupt() == 0
    assert "internal error" not in tun.stderr and "Traceback" not in tun.stderr
