"""`up --host H --private`: TensorBoard on a unix socket in a 0700 directory and on no TCP port, forwarded with
SSH's streamlocal (OpenSSH `-L 127.0.0.1:L:/path`, paramiko's `direct-streamlocal@openssh.com` channel), on
both backends, against the real sshd in its own network namespace."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.forwarders import adopt_forwarder
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, http_get, wait_until
from tests.support.sshd import restart_sshd


def _tree(remote: Any, pid: int) -> set[int]:
    """`pid` and its descendants on the remote (the same kernel: /proc here sees them)."""
    import psutil

    proc = psutil.Process(pid)
    return {pid, *(c.pid for c in proc.children(recursive=True))}


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=1.0)[0] == 200
    except OSError:  # refused or reset while the connection is re-made
        return False


def test_private_detached_serves_through_the_forward_with_no_tcp_listener(
        ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, port: int) -> None:
    remote = ssh_env
    up = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    inst = up["instance"]
    reaper.adopt(inst["pid"])
    adopt_forwarder(reaper, state_dir, remote.alias)
    sock = inst["socket"]
    assert (inst["exposure"], inst["port"]) == ("private", None) and sock, inst
    status, body = http_get(up["url"] + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(logdir)
    status, body = http_get(up["url"] + "data/plugin/scalars/tags")
    assert status == 200 and set(json.loads(body)) == {"lr_0.1", "lr_0.01"}
    # the socket's directory is the user's own, 0700; nothing of the TensorBoard's listens on TCP on the host
    mode = os.lstat(os.path.dirname(sock)).st_mode
    assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o700 and stat.S_ISSOCK(os.lstat(sock).st_mode)
    tree = _tree(remote, inst["pid"])
    assert [row for row in remote.listeners() if row[2] in tree] == []
    # ls: the socket instead of a port, `private`, its URL through the forward
    rows = [r for r in cli("ls", "--host", remote.alias, "--json").json()["instances"] if r["pid"] == inst["pid"]]
    assert [(r["exposure"], r["socket"], r["status"], r["url"]) for r in rows] == [("private", sock, "serving", up["url"])]
    cells = next(x.split() for x in cli("ls", "--host", remote.alias).stdout.splitlines()
                 if x.split()[:2] == [remote.alias, str(inst["pid"])])
    assert cells[2] == sock and cells[-2:] == ["private", "serving"], cells  # host, pid, the socket as its port
    forwards = cli("ls", "--json").json()["forwards"]
    assert [(f["remote_socket"], f["remote_port"], f["url"]) for f in forwards] == [(sock, 0, up["url"])]
    # an `up` of the same logdir reuses it only when private too
    again = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    assert again["reused"] and again["url"] == up["url"]
    # down: the TensorBoard stops, its socket and directory go, the forward closes
    cli("down", "--host", remote.alias, str(logdir))
    assert wait_until(lambda: not alive(inst["pid"]), 10)
    assert not os.path.lexists(os.path.dirname(sock))
    assert cli("ls", "--json").json()["forwards"] == []


def test_a_plain_up_never_reuses_a_private_instance(ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
                                                    logdir: Path, port: int) -> None:
    remote = ssh_env
    private = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    reaper.adopt(private["instance"]["pid"])
    adopt_forwarder(reaper, state_dir, remote.alias)
    plain = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--detach", "--port", "6830")
    reaper.adopt(plain["instance"]["pid"])
    assert not plain["reused"] and plain["instance"]["exposure"] == "loopback" and plain["url"] != private["url"]
    rows = {r["pid"]: r["exposure"] for r in cli("ls", "--host", remote.alias, "--json").json()["instances"]}
    assert (rows[private["instance"]["pid"]], rows[plain["instance"]["pid"]]) == ("private", "loopback")
    again = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach")
    assert again["reused"] and again["instance"]["pid"] == private["instance"]["pid"]
    cli("down", "--host", remote.alias, "--all")


def test_a_detached_private_forward_survives_an_sshd_restart_on_the_same_port(
        ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, port: int) -> None:
    remote = ssh_env
    up = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    reaper.adopt(up["instance"]["pid"])
    adopt_forwarder(reaper, state_dir, remote.alias)
    restart_sshd(remote.server)  # drops every connection, as a server restart does
    assert wait_until(lambda: _answers(up["url"] + "data/logdir"), 30)
    cli("down", "--host", remote.alias, "--all")


def test_private_is_refused_here_and_with_what_would_open_tcp(cli: Cli, logdir: Path) -> None:
    err = cli("up", str(logdir), "--private", exit_code=2).stderr
    assert "--private needs --host: a browser cannot open a unix socket" in err, err
    err = cli("up", "--host", "nowhere.invalid", str(logdir), "--private", "--", "--load_fast=true", exit_code=2).stderr
    assert "--load_fast=true cannot be used with --private" in err and "TCP port" in err, err
    err = cli("up", "--host", "nowhere.invalid", str(logdir), "--private", "--expose-to-network", exit_code=2).stderr
    assert "contradict" in err, err


def test_the_private_setting_applies_to_hosts_only(cli: Cli, logdir: Path, no_config_file: Path, port: int,
                                                   reaper: ProcessReaper) -> None:
    no_config_file.write_text("private = true\n")
    inst = cli.up(str(logdir), "--port", str(port))["instance"]  # here: a browser needs a port
    reaper.adopt(inst["pid"])
    assert inst["exposure"] == "loopback"
    cli("down", str(port))
