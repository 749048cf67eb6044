"""`--detach` over one SSH backend while a background forwarder to the same host runs over the other: the
forward joins that forwarder (one per host), and tbctl says so instead of letting `ls` tell a different
story than the `--ssh` the user typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, free_port
from tests.support.remote import start_remote_listener


@pytest.mark.parametrize("first,second", [("openssh", "paramiko"), ("paramiko", "openssh")])
def test_a_detach_over_another_backend_says_which_backend_serves_it(
    first: str, second: str, remote_server: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(remote_server.ssh_config))
    alias = remote_server.alias
    port = free_port()
    start_remote_listener(remote_server, reaper, port, banner=b"hello\n")
    one, two = free_port(), free_port()
    quiet = cli("--ssh", first, "tunnel", alias, str(port), "--local-port", str(one), "--detach")
    [status_path] = (state_dir / "forwarders").glob("*.json")
    status = json.loads(status_path.read_text())
    reaper.adopt(status["pid"], status["create_time"])
    assert "warning" not in quiet.stderr
    try:
        joined = cli("--ssh", second, "tunnel", alias, str(port), "--local-port", str(two), "--detach")
        assert f"warning: the forward joins the background forwarder that serves {alias} over {first}, " \
               f"not {second}" in joined.stderr, joined.stderr
        assert json.loads(status_path.read_text())["pid"] == status["pid"], "one forwarder per host"
        forwards = cli("ls", "--json").json()["forwards"]
        assert sorted(f["local_port"] for f in forwards) == sorted([one, two])
    finally:
        cli("down", str(one))
        cli("down", str(two))
