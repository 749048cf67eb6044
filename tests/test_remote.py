"""Remote hosts over a real sshd: `up --host`, `tunnel`, remote ls / down / free-port, ProxyJump.

The remote is a network namespace of its own when the suite runs as root (CI), so a TensorBoard there
listens on *its* loopback and is reachable only through tbctl's forward.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.procs import (TENSORBOARD, ProcessReaper, alive, free_port, http_get, listeners_on, port_free,
                                 wait_until)

VENV = str(Path(sys.executable).parent.parent)

pytestmark = pytest.mark.unprivileged  # also run as a normal user and under macOS' rules (.ci/run)


def _no_wide_listener(pid: int) -> bool:
    return all(c.laddr.ip in ("127.0.0.1", "::1") for c in psutil.Process(pid).net_connections("tcp")
               if c.status == psutil.CONN_LISTEN)


def test_up_host_serves_through_the_forward_and_ctrl_c_leaves_nothing(
    ssh_env: Any, reaper: ProcessReaper, state_dir: Path, logdir: Path
) -> None:
    remote = ssh_env
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD)
    remote_pid = fg.pid_from_stderr()
    reaper.adopt(remote_pid)
    status, body = http_get(fg.url + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(logdir)
    status, body = http_get(fg.url + "data/plugin/scalars/tags")
    assert status == 200 and set(json.loads(body)) == {"lr_0.1", "lr_0.01"}
    # the forward is 16006 (6006 + 10000) unless that was taken here
    port = int(fg.url.rsplit(":", 1)[1].strip("/"))
    assert port >= 16006
    # every listener tbctl opens is on loopback; the remote TensorBoard listens on the remote's loopback only
    assert listeners_on(port) == ["127.0.0.1"] and _no_wide_listener(fg.proc.pid)
    remote_listeners = [(a, p) for a, p, pid in remote.listeners() if pid == remote_pid]
    assert remote_listeners and all(a == "127.0.0.1" for a, _ in remote_listeners)
    assert fg.interrupt() == 0, fg.stderr
    assert "Traceback" not in fg.stderr, fg.stderr
    assert wait_until(lambda: not alive(remote_pid), 10), "the TensorBoard this command started must stop"
    assert port_free(port)


def test_remote_tensorboard_is_reachable_only_through_the_forward(netns_remote: Any, reaper: ProcessReaper,
                                                                  state_dir: Path, logdir: Path) -> None:
    remote = netns_remote
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6123")
    reaper.adopt(fg.pid_from_stderr())
    assert http_get(fg.url + "data/logdir")[0] == 200
    for addr in ("127.0.0.1", remote.server.host):  # our loopback, and the remote's own address
        with pytest.raises(OSError):
            socket.create_connection((addr, 6123), timeout=2).close()
    assert fg.interrupt() == 0


def test_keep_leaves_tensorboard_running_then_reuse_and_remote_ls_and_down(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path
) -> None:
    remote = ssh_env
    first = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                       "--keep", "--port", "6200")
    pid = first.pid_from_stderr()
    reaper.adopt(pid)
    assert first.interrupt() == 0
    assert alive(pid), "--keep leaves TensorBoard running"
    # reuse: a second up of the same logdir attaches to it, and leaves it running on Ctrl-C
    second = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD)
    assert second.wait_stderr("reusing TensorBoard pid")
    assert second.pid_from_stderr() == pid
    assert http_get(second.url + "data/logdir")[0] == 200
    assert second.interrupt() == 0
    assert alive(pid), "a reused TensorBoard is not stopped"
    # remote ls knows it, and that tbctl started it
    rows = cli("ls", "--host", remote.alias, "--json").json()["instances"]
    row = [r for r in rows if r["pid"] == pid][0]
    assert row["host"] == remote.alias and row["port"] == 6200 and row["status"] == "serving"
    assert row["started_by"] == "tbctl" and row["logdir"] == str(logdir)
    assert "tbremote" in cli("ls", "--host", remote.alias).stdout
    # remote down by port
    out = cli("down", "6200", "--host", remote.alias, "--json").json()["instances"]
    assert [(o["outcome"], o["instance"]["pid"]) for o in out] == [("stopped", pid)]
    assert wait_until(lambda: not alive(pid), 10)


def test_tunnel_forwards_to_an_already_running_tensorboard(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path
) -> None:
    remote = ssh_env
    started = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD,
                         "--keep", "--port", "6300", "--new")
    pid = started.pid_from_stderr()
    reaper.adopt(pid)
    assert started.interrupt() == 0
    local = free_port()
    tun = Foreground(reaper, state_dir, "tunnel", remote.alias, "6300", "--local-port", str(local))
    assert tun.url == f"http://127.0.0.1:{local}/"
    status, body = http_get(tun.url + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(logdir)
    assert listeners_on(local) == ["127.0.0.1"] and _no_wide_listener(tun.proc.pid)
    assert tun.interrupt() == 0
    assert alive(pid), "tunnel never stops what it did not start"
    assert port_free(local)
    cli("down", str(pid), "--host", remote.alias)
    # nothing listening there: exit 4, and no forward left behind
    assert "nothing listens" in cli("tunnel", remote.alias, "6300", exit_code=4).stderr


def test_remote_free_port(ssh_env: Any, cli: Cli, reaper: ProcessReaper) -> None:
    remote = ssh_env
    port = 6400
    code = ("import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            f"s.bind(('127.0.0.1',{port}));s.listen();time.sleep(600)")
    prefix = ["ip", "netns", "exec", remote.netns.name] if remote.netns else []
    holder = reaper.popen([*prefix, sys.executable, "-c", code])
    assert wait_until(lambda: any(p == port for _, p, _ in remote.listeners()), 10)
    dry = cli("free-port", str(port), "--host", remote.alias, "--dry-run", "--json").json()
    assert [h["pid"] for h in dry["holders"]] == [holder.pid]
    cli("free-port", str(port), "--host", remote.alias, exit_code=3)  # no TTY, no --yes: refused
    data = cli("free-port", str(port), "--host", remote.alias, "--yes", "--json").json()
    assert data["freed"] is True and holder.wait(timeout=10) is not None


def test_proxyjump_through_a_second_host(netns_remote: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path,
                                         logdir: Path) -> None:
    """`tbviajump` is R's sshd at an address only the jump host J can route to."""
    fg = Foreground(reaper, state_dir, "up", "--host", "tbviajump", str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6500")
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    assert http_get(fg.url + "data/logdir")[0] == 200
    assert fg.interrupt() == 0
    assert wait_until(lambda: not alive(pid), 10)
    assert cli("ls", "--host", "tbviajump", "--json").exit_code == 0


def test_probe_runs_under_the_remote_python3_and_under_an_env_python(ssh_env: Any) -> None:
    """python3 on the remote's PATH (no psutil there), and --env's interpreter: same answers."""
    from tbctl.hosts.paramiko.host import SSHHost

    with SSHHost(ssh_env.alias).connect() as bare, SSHHost(ssh_env.alias, env_prefix=VENV).connect() as env_host:
        assert bare._hello["python"] and env_host._hello["python"]
        sshd_port = ssh_env.server.port
        for host in (bare, env_host):
            holders = host.port_holders(sshd_port)
            assert holders and holders[0].pid is not None and "sshd" in holders[0].command
        assert {p["pid"] for p in bare.scan()["processes"]} == {p["pid"] for p in env_host.scan()["processes"]}


def test_a_batch_whose_middle_request_fails_answers_the_others_and_names_the_op(
    remote: Any, ssh_backend: str, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests written at once are answered in order; one that fails (here: a wait for a launch that
    started nothing) costs the others nothing, and its error says which operation it was."""
    from tbctl.errors import ProbeError
    from tbctl.hosts.backends import open_ssh_host
    from tbctl.hosts.local import LocalHost

    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(remote.ssh_config))
    batch = [("resolve_path", {"path": "/"}), ("wait_launched", {"port": 1, "path": "/", "timeout": 1}),
             ("ping", {})]
    seen: list[int] = []
    with open_ssh_host(remote.alias, backend=ssh_backend, state_dir=state_dir, connect_timeout=None,
                       env_prefix=None, persist=0) as host:
        host.connect()
        first, middle, last = host.call_many(batch, on_answer=lambda index, answer: seen.append(index))
        assert first.get()["path"] == "/" and last.get() == {} and seen == [0, 1, 2]
        assert isinstance(middle.error, ProbeError) and middle.error.op == "wait_launched"
        assert "wait_launched failed on" in middle.error.message and "LookupError" in middle.error.message
        with pytest.raises(ProbeError):
            middle.get()
        assert host.call("ping") == {}, "the connection answers in order after the failed request"
    local_first, local_middle, local_last = LocalHost(tmp_path).call_many(batch)
    assert local_first.get()["path"] == "/" and local_last.get() == {}
    assert isinstance(local_middle.error, LookupError)


def test_ctrl_c_while_a_remote_tensorboard_starts_stops_it_at_once(
    ssh_env: Any, reaper: ProcessReaper, state_dir: Path, logdir: Path, tmp_path: Path
) -> None:
    """The launch's answer comes before its wait's: "waiting" is said while TensorBoard starts, and a Ctrl-C
    then stops what was launched, without first waiting out the remote wait (--timeout 120 here)."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "slow-tensorboard.pid"
    slow = tmp_path / "tensorboard"
    slow.write_text(f"#!{sys.executable}\nimport os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                    "time.sleep(600)\n")
    slow.chmod(0o755)
    proc = reaper.popen([sys.executable, "-m", "tbctl", "up", "--host", ssh_env.alias, str(logdir), "--tensorboard",
                         str(slow), "--timeout", "120", "--new"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=dict(os.environ, TBCTL_STATE_DIR=str(state_dir)))
    assert proc.stderr is not None
    said = ""
    while "waiting for TensorBoard" not in said:
        line = proc.stderr.readline().decode()
        assert line, f"tbctl ended before it said it was waiting: {said}"
        said += line
    assert wait_until(pid_file.exists, 10)
    launched = int(pid_file.read_text())
    reaper.adopt(launched)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert wait_until(lambda: not alive(launched), 10), "the TensorBoard launched for this command still runs"
    assert time.monotonic() - started < 60, "stopping waited for the remote wait to end"
