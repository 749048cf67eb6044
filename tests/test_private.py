"""`up --host H --private`: TensorBoard on a unix socket in a 0700 directory and on no TCP port, forwarded with
SSH's streamlocal (OpenSSH `-L 127.0.0.1:L:/path`, paramiko's `direct-streamlocal@openssh.com` channel), on
both backends, against the real sshd in its own network namespace."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
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
        ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, port: int, tmp_path: Path) -> None:
    from tests.support.browser_process import fake_browser, tbctl_process

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
    # open and logs, as for a TensorBoard on a port
    browser, got = fake_browser(tmp_path)
    opened = tbctl_process("open", "--host", remote.alias, str(inst["pid"]), "--json",
                           env=dict(os.environ, BROWSER=browser))
    assert opened.returncode == 0 and json.loads(opened.stdout)["url"] == up["url"], opened.stderr
    assert got.read_text() == up["url"] + "\n"
    assert f"at unix:{sock} (private: no TCP port)" in cli("logs", "--host", remote.alias, str(inst["pid"])).stdout
    # an `up` of the same logdir reuses it only when private too
    again = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    assert again["reused"] and again["url"] == up["url"]
    # down: the TensorBoard stops, its socket and directory go, the forward closes
    cli("down", "--host", remote.alias, str(logdir))
    assert wait_until(lambda: not alive(inst["pid"]), 10)
    assert not os.path.lexists(os.path.dirname(sock))
    assert cli("ls", "--json").json()["forwards"] == []


def test_private_in_the_foreground_ends_with_ctrl_c_and_leaves_no_socket(
        ssh_env: Any, reaper: ProcessReaper, state_dir: Path, logdir: Path, port: int) -> None:
    from tests.support.foreground import Foreground

    fg = Foreground(reaper, state_dir, "up", "--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--private", "--local-port", str(port))
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    assert fg.url == f"http://127.0.0.1:{port}/" and _answers(fg.url + "data/logdir")
    sock = fg.stderr.split("privately on ")[1].split(",")[0]
    assert os.path.exists(sock)
    assert fg.interrupt() == 0, fg.stderr
    assert wait_until(lambda: not alive(pid), 10), "the TensorBoard this command started must stop"
    assert not os.path.lexists(os.path.dirname(sock))
    assert not _answers(fg.url + "data/logdir")


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
    cli("down", "--host", remote.alias, str(logdir))  # never --all: other TensorBoards of this user may run here


def test_a_detached_private_forward_survives_an_sshd_restart_on_the_same_port(
        ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, port: int) -> None:
    remote = ssh_env
    up = cli.up("--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--private", "--detach",
                "--local-port", str(port))
    reaper.adopt(up["instance"]["pid"])
    adopt_forwarder(reaper, state_dir, remote.alias)
    restart_sshd(remote.server)  # drops every connection, as a server restart does
    assert wait_until(lambda: _answers(up["url"] + "data/logdir"), 30)
    cli("down", "--host", remote.alias, str(logdir))  # never --all: other TensorBoards of this user may run here


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


# --- two real users on the remote machine -----------------------------------------------------------------


@pytest.fixture(scope="module")
def private_users(remote_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from examples.make_example_logdir import write_example_logdir
    from tests.support.private_users import available, start_private_users, stop_private_users

    ok, why = available()
    if not ok or remote_server.netns is None:
        pytest.skip(why if not ok else "the remote is not isolated in a network namespace")
    users = start_private_users(remote_server.netns.name, remote_server.netns.ns_addr,
                                tmp_path_factory.mktemp("private-users"), write_example_logdir)
    try:
        yield users
    finally:
        stop_private_users(users)


def test_another_user_of_the_host_cannot_open_a_private_dashboard(
        private_users: Any, ssh_backend: str, cli: Cli, reaper: ProcessReaper, state_dir: Path, port: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.chromium import assert_scalars_rendered, chromium_or_skip, render_scalars
    from tests.support.private_users import ALIAS_A, USER_A, USER_B

    users = private_users
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(users.ssh_config))
    up = cli.up("--host", ALIAS_A, str(users.logdir), "--tensorboard", users.tensorboard, "--private", "--detach",
                "--local-port", str(port))
    inst = up["instance"]
    reaper.adopt(inst["pid"])
    adopt_forwarder(reaper, state_dir, ALIAS_A)
    sock = inst["socket"]
    assert (inst["user"], inst["exposure"]) == (USER_A, "private") and sock.startswith(os.path.expanduser(f"~{USER_A}/"))
    # A's URL answers, and a real browser draws the scalars through the forward
    status, body = http_get(up["url"] + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(users.logdir)
    # on both backends: paramiko's forwarder carries the page over its own direct-streamlocal channel
    chromium_or_skip()
    assert_scalars_rendered(*render_scalars(reaper, up["url"], f"private-scalars-{ssh_backend}"))
    # A's TensorBoard, its children included, listens on no TCP port on the host
    tree = _tree(None, inst["pid"])
    listeners = users.run("ss", "-Hltnp").stdout
    assert not any(f"pid={pid}," in listeners for pid in tree), listeners
    # B: the socket refuses them, and no TCP port on the host answers with A's logdir
    refused = users.run_as(USER_B, "curl", "-sS", "-m", "5", "--unix-socket", sock, "http://x/data/logdir")
    assert refused.returncode == 7 and refused.stdout == "", refused  # curl: could not connect
    why = users.run_as(USER_B, "/usr/bin/python3", "-c", "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])", sock)
    assert "PermissionError: [Errno 13] Permission denied" in why.stderr, why  # the 0700 directory, not a missing file
    for line in listeners.splitlines():
        addr, _, tcp_port = line.split()[3].rpartition(":")
        host = addr.strip("[]").replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        answer = users.run_as(USER_B, "curl", "-s", "-m", "2", f"http://{'[' + host + ']' if ':' in host else host}:"
                              f"{tcp_port}/data/logdir")
        assert str(users.logdir) not in answer.stdout, line
    # down: the TensorBoard stops and its socket and directory go with it
    cli("down", "--host", ALIAS_A, str(users.logdir))
    assert wait_until(lambda: not alive(inst["pid"]), 10)
    assert not os.path.lexists(os.path.dirname(sock))
