"""tbctl as a normal user, and under macOS' rules, where psutil may not read the whole machine's sockets.

Marked `unprivileged`: .ci/run runs these again as a normal user of its own, and then under macOS' rules
(tests/support/macos_like). Here the `rules` fixture runs each one natively and once more with macOS' rules
applied in this process: the psutil backend, `psutil.net_connections()` replaced by psutil's own macOS
implementation (the one stand-in of the suite: it asks every process for its sockets, and is refused
another user's), and no `os.pidfd_open`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.foreign import foreign_listener
from tests.support.forwarders import adopt_forwarder
from tests.support.macos_like.sitecustomize import macos_net_connections
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, free_port, start_listener, wait_until

pytestmark = pytest.mark.unprivileged


@pytest.fixture(params=["native", "macos-like"])
def rules(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "macos-like":
        monkeypatch.setenv("TBCTL_PROBE_PSUTIL", "1")
        monkeypatch.setattr(psutil, "net_connections", macos_net_connections(psutil))
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    return str(request.param)


def test_up_ls_down_and_free_port_of_own_processes(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int,
                                                   rules: str) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    assert inst["port"] == port
    rows = [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == inst["pid"]]
    assert [r["status"] for r in rows] == ["serving"]
    assert f"stopped pid {inst['pid']}" in cli("down", str(port)).stdout
    assert wait_until(lambda: not alive(inst["pid"]), 10)
    holder = start_listener(reaper, port)
    data = cli("free-port", str(port), "--yes", "--json").json()
    assert [h["pid"] for h in data["holders"]] == [holder.pid] and data["freed"] is True
    assert holder.wait(timeout=5) is not None


def test_a_port_of_another_user_is_explained_skipped_and_never_signalled(cli: Cli, reaper: ProcessReaper,
                                                                          logdir: Path, rules: str) -> None:
    theirs = foreign_listener()
    result = cli("free-port", str(theirs.port), "--yes", exit_code=3)
    assert "another user" in result.stdout + result.stderr or "nobody" in result.stdout + result.stderr
    assert "internal error" not in result.stderr and theirs.answers()
    up = cli("up", str(logdir), "--port", str(theirs.port), "--json")
    pid, got = up.json()["instance"]["pid"], up.json()["instance"]["port"]
    reaper.adopt(pid)
    assert got != theirs.port and f"port {theirs.port} is held by" in up.stderr
    cli("down", str(pid))


def test_up_host_detach_and_down_all_host(ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
                                          logdir: Path, rules: str) -> None:
    remote_port = free_port()
    data = cli.up("--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD, "--detach",
                  "--port", str(remote_port))
    adopt_forwarder(reaper, state_dir, ssh_env.alias)
    assert data["url"].startswith("http://127.0.0.1:")
    out = cli("down", "--all", "--host", ssh_env.alias, "--json").json()
    assert data["instance"]["pid"] in {o["instance"]["pid"] for o in out["instances"] if o["outcome"] == "stopped"}
    assert wait_until(lambda: not alive(data["instance"]["pid"]), 10)
