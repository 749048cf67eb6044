"""One forward per remote port: a second `tunnel … --detach`, or an `up --host` that reuses an instance whose
background forward is live, rides that forward and says so, rather than opening the next local port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.forwarders import adopt_forwarders
from tests.support.procs import TENSORBOARD, ProcessReaper, http_get


def test_a_live_background_forward_is_reused_and_said(ssh_env: Any, cli: Cli, reaper: ProcessReaper,
                                                      state_dir: Path, logdir: Path) -> None:
    remote = ssh_env
    first = cli("up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--port", "6680",
                "--detach", "--json").json()
    reaper.adopt(first["instance"]["pid"])
    adopt_forwarders(reaper, state_dir)
    local = first["instance"]["forward_port"]
    try:
        again = cli("tunnel", remote.alias, "6680", "--detach", "--json")
        assert again.json()["local_port"] == local, again.stderr
        assert f"reusing the background forward to {remote.alias}:6680 on 127.0.0.1:{local}" in again.stderr

        # `up` of the same logdir reuses the instance, and with it its forward: no foreground one next to it
        fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD)
        assert fg.url == f"http://127.0.0.1:{local}/", fg.stderr
        assert fg.proc.wait(timeout=30) == 0  # nothing held in the foreground
        assert fg.wait_stderr("forwarding in the background"), fg.stderr
        assert "reusing the background forward" in fg.stderr and "press Ctrl-C" not in fg.stderr, fg.stderr
        status, body = http_get(fg.url + "data/logdir")
        assert status == 200 and json.loads(body)["logdir"] == str(logdir)

        forwards = cli("ls", "--host", remote.alias, "--json").json()["forwards"]
        assert [f["local_port"] for f in forwards if f["remote_port"] == 6680] == [local]
    finally:
        cli("down", "--host", remote.alias, "--json")
