"""The paramiko SSH backend against the real sshd: a connection watcher that never dies silently, probe
calls with deadlines (a silently dead link is noticed even while a call is in flight), passphrase keys
treated as interactive, and known_hosts as OpenSSH reads and writes it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.forwarders import adopt_forwarder
from tests.support.procs import ProcessReaper, free_port, http_get, wait_until
from tests.support.ssh_keys import keygen, locked_key as locked_key_for


@pytest.fixture
def ssh_backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """These tests are about the paramiko backend: only it, not once per backend as conftest's would."""
    monkeypatch.setenv("TBCTL_SSH", "paramiko")
    return "paramiko"


def _alias(remote: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, name: str = "tbpk",
           lines: tuple[str, ...] = (), known_hosts: str | None = None, identity: Path | None = None) -> str:
    """An ssh_config alias for the remote's sshd with its own known_hosts; `lines` come first (first wins)."""
    server = remote.server
    kh = tmp_path / f"{name}_known_hosts"
    kh.write_text(server.known_hosts.read_text() if known_hosts is None else known_hosts)
    cfg = tmp_path / f"{name}_ssh_config"
    body = [*lines, f"HostName {server.host}", f"Port {server.port}", f"User {server.user}",
            f"IdentityFile {identity or server.client_key}", "IdentitiesOnly yes", f"UserKnownHostsFile {kh}",
            "GlobalKnownHostsFile /dev/null", "StrictHostKeyChecking yes", "ConnectTimeout 5"]
    cfg.write_text(f"Host {name}\n" + "".join(f"  {line}\n" for line in body))
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(cfg))
    return name


@pytest.fixture
def remote_listener(ssh_env: Any, reaper: ProcessReaper) -> int:
    """An HTTP server on the remote machine's loopback; its port."""
    port = free_port()
    prefix = ["ip", "netns", "exec", ssh_env.netns.name] if ssh_env.netns else []
    reaper.popen([*prefix, sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: any(p == port for _, p, _ in ssh_env.listeners()), 10)
    return port


def _forwards(cli: Cli) -> list[dict[str, Any]]:
    return cli("ls", "--json").json()["forwards"]


# --- 1. the connection watcher keeps retrying, or says why it stopped -------------------------------------

# A ProxyCommand that connects like `nc %h %p`, except for the background forwarder while BLOCK exists:
# there it fails at once, as an unreachable host does.
PROXY = r"""
import os, socket, sys, threading
block, host, port = sys.argv[1:4]
with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
    if b"_forwarder" in f.read() and os.path.exists(block):
        sys.exit(1)
sock = socket.create_connection((host, int(port)))
def upstream():
    while data := os.read(0, 65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := sock.recv(65536):
    os.write(1, data)
"""


def test_a_background_forwarder_that_cannot_connect_at_start_keeps_retrying(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, remote_listener: int,
) -> None:
    proxy, block = tmp_path / "proxy.py", tmp_path / "BLOCK"
    proxy.write_text(PROXY)
    block.touch()
    alias = _alias(ssh_env, tmp_path, monkeypatch, lines=(f"ProxyCommand {sys.executable} {proxy} {block} %h %p",))
    local = cli("tunnel", alias, str(remote_listener), "--detach", "--json").json()["local_port"]
    adopt_forwarder(reaper, state_dir, alias)
    try:
        assert wait_until(lambda: _forwards(cli)[0]["attempts"] >= 2, 15), _forwards(cli)
        fwd = _forwards(cli)[0]
        assert fwd["tunnel"] == "reconnecting" and fwd["error"], fwd
        block.unlink()  # the host is reachable again: the next attempt connects
        assert wait_until(lambda: _forwards(cli)[0]["tunnel"] == "up", 20), _forwards(cli)
        assert http_get(f"http://127.0.0.1:{local}/")[0] == 200
    finally:
        cli("down", str(local))


def test_a_probe_that_cannot_start_is_retried_with_its_reason(ssh_env: Any, tmp_path: Path) -> None:
    from tbctl.hosts.paramiko.host import SSHHost
    from tbctl.hosts.paramiko.link import Link

    host = SSHHost(ssh_env.alias, env_prefix=str(tmp_path / "no-env"))
    link = Link(host, connected=False).start()
    try:
        assert wait_until(lambda: link.state.attempts >= 2, 15), link.state
        assert link.state.state == "reconnecting" and "no-env/bin/python" in link.state.error, link.state
    finally:
        link.close()
        host.close()


def test_a_python_that_exits_before_the_probe_is_sent_is_still_named(
    ssh_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote command can fail (no python: exit 127) and close the channel before the client has written
    the probe, which then raises "Socket is closed". The user must still be told which python is missing.
    The race is forced here, against the real sshd, by letting exec_command return only once the channel
    has closed."""
    import paramiko

    from tbctl.errors import NotFound
    from tbctl.hosts.paramiko.host import SSHHost

    exec_command = paramiko.Channel.exec_command

    def exec_then_wait_for_close(chan: paramiko.Channel, command: str) -> None:
        exec_command(chan, command)
        assert wait_until(lambda: chan.closed, 10), "the remote command did not end"

    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_then_wait_for_close)
    host = SSHHost(ssh_env.alias, env_prefix=str(tmp_path / "no-env"))
    try:
        with pytest.raises(NotFound, match="no-env/bin/python"):
            host.connect()
    finally:
        host.close()


# --- 2. probe calls have deadlines; a reconnect cannot race a call ------------------------------------------


def test_a_silently_dead_link_is_noticed_while_a_call_is_in_flight(
    netns_remote: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe call holds the probe channel while the link dies without a FIN or RST: the keepalive must
    still notice within ServerAliveInterval x ServerAliveCountMax, and the call must fail, not hang."""
    from tbctl.errors import SSHError
    from tbctl.hosts.paramiko.host import SSHHost
    from tbctl.hosts.paramiko.link import Link
    from tests.support.sshd import link_down, link_up

    interval, count = 1, 2
    alias = _alias(netns_remote, tmp_path, monkeypatch,
                   lines=(f"ServerAliveInterval {interval}", f"ServerAliveCountMax {count}"))
    host = SSHHost(alias).connect()
    link = Link(host).start()
    outcome: dict[str, Any] = {}

    def long_call() -> None:  # legitimately long: waits 20 s for a process that stays alive
        try:
            outcome["answer"] = host.wait_gone([(os.getpid(), None)], 20)
        except BaseException as exc:
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    caller = threading.Thread(target=long_call, daemon=True)
    try:
        caller.start()
        time.sleep(0.5)  # the request is out; its answer is what never comes
        link_down(netns_remote.netns)
        cut = time.monotonic()
        try:
            noticed = wait_until(lambda: link.state.state != "up", interval * count + interval + 5, 0.05)
            took = time.monotonic() - cut
            caller.join(10)
        finally:
            link_up(netns_remote.netns)
        assert noticed, "the dead link went unnoticed while a call was in flight"
        assert took <= interval * count + interval + 1.5, f"noticed after {took:.1f} s"
        assert isinstance(outcome.get("error"), SSHError), outcome
        assert outcome["at"] - cut <= interval * count + interval + 3
        assert wait_until(lambda: link.state.state == "up", 30), link.state
        assert host.alive(os.getpid(), None)
    finally:
        link.close()
        host.close()


def test_calls_racing_a_reconnect_succeed_or_fail_as_ssh_errors(ssh_env: Any) -> None:
    from tbctl.errors import SSHError
    from tbctl.hosts.paramiko.host import SSHHost

    host = SSHHost(ssh_env.alias).connect()
    unexpected: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                assert host.alive(os.getpid(), None)
                answered[0] += 1
            except SSHError:
                pass
            except BaseException as exc:
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for _ in range(5):
            time.sleep(0.1)
            host.reconnect()
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        host.close()
    assert unexpected == [], repr(unexpected[:3])
    assert answered[0] > 0


# --- 3. a key that needed its passphrase is interactive authentication ---------------------------------------


@pytest.fixture
def locked_key(remote: Any, tmp_path: Path) -> Iterator[Path]:
    """A passphrase-protected key ("s3cret phrase") the remote's sshd accepts."""
    with locked_key_for(remote.server, tmp_path / "locked", "s3cret phrase") as key:
        yield key


def test_detach_refuses_a_key_that_needed_its_passphrase(
    ssh_env: Any, locked_key: Path, remote_listener: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    state_dir: Path, reaper: ProcessReaper,
) -> None:
    """The passphrase is asked for on the terminal, but the background forwarder could not ask it again:
    --detach must refuse before anything starts, and say how to make it work."""
    from tests.support.terminal import run_on_pty

    alias = _alias(ssh_env, tmp_path, monkeypatch, identity=locked_key)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}  # no agent to hold the key
    env["TBCTL_STATE_DIR"] = str(state_dir)
    rc, screen = run_on_pty(["tunnel", alias, str(remote_listener), "--detach"],
                            [(b"Enter passphrase for key", b"s3cret phrase\n")], env=env)
    started = (state_dir / "forwarders" / f"{alias}.json").exists()
    if started:  # the bug: a background forwarder that cannot authenticate
        adopt_forwarder(reaper, state_dir, alias)
    assert rc == 5, screen
    assert "--detach needs key or agent authentication" in screen and "ssh-add" in screen, screen
    assert not started


# --- 12. known_hosts as OpenSSH reads and writes it -----------------------------------------------------------


def _host_key_line(remote: Any, name: str | None = None) -> str:
    server = remote.server
    kind, blob = server.host_key_pub.read_text().split()[:2]
    return f"{name or f'[{server.host}]:{server.port}'} {kind} {blob}\n"


def test_a_host_key_found_only_in_the_global_known_hosts_file_is_accepted(
    remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    global_file = tmp_path / "ssh_known_hosts"
    global_file.write_text("# the cluster's keys\n" + _host_key_line(remote))
    alias = _alias(remote, tmp_path, monkeypatch, known_hosts="",
                   lines=(f"GlobalKnownHostsFile {tmp_path / 'missing'} {global_file}",))
    cli("ls", "--host", alias)
    assert (tmp_path / f"{alias}_known_hosts").read_text() == ""  # known already: nothing added


def test_a_changed_host_key_in_the_global_file_is_refused(
    remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = keygen(tmp_path / "impostor")
    kind, blob = Path(str(impostor) + ".pub").read_text().split()[:2]
    global_file = tmp_path / "ssh_known_hosts"
    global_file.write_text(f"[{remote.server.host}]:{remote.server.port} {kind} {blob}\n")
    alias = _alias(remote, tmp_path, monkeypatch, known_hosts="",
                   lines=(f"GlobalKnownHostsFile {global_file}", "StrictHostKeyChecking accept-new"))
    assert "CHANGED" in cli("ls", "--host", alias, exit_code=5).stderr
    assert (tmp_path / f"{alias}_known_hosts").read_text() == ""


def test_global_known_hosts_defaults_to_etc_ssh_and_dev_null_disables_it(tmp_path: Path) -> None:
    from tbctl.hosts.paramiko.config import resolve

    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host plain\n  HostName 10.231.0.1\nHost isolated\n  GlobalKnownHostsFile /dev/null\n")
    assert resolve("plain", config_path=cfg).global_known_hosts_files == (
        "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert resolve("isolated", config_path=cfg).global_known_hosts_files == ("/dev/null",)  # never a file


def test_hash_known_hosts_writes_a_new_key_hashed(
    remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = _alias(remote, tmp_path, monkeypatch, known_hosts="",
                   lines=("HashKnownHosts yes", "StrictHostKeyChecking accept-new"))
    known = tmp_path / f"{alias}_known_hosts"
    cli("ls", "--host", alias)
    written = known.read_text()
    name, kind, blob = written.split()
    assert name.startswith("|1|") and remote.server.host not in written, written
    assert (kind, blob) == tuple(remote.server.host_key_pub.read_text().split()[:2])
    lookup = subprocess.run(["ssh-keygen", "-F", f"[{remote.server.host}]:{remote.server.port}", "-f", str(known)],
                            capture_output=True, text=True)
    assert lookup.returncode == 0, "OpenSSH must find the hashed entry too"
    cli("ls", "--host", alias)
    assert known.read_text() == written  # the hashed entry is recognised: not added twice


class _Typist:
    """A prompter that types one passphrase, as a person at a terminal would."""

    interactive = True

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def secret(self, prompt: str) -> str:
        self.asked.append(prompt)
        return self.answer

    ask = secret


def test_a_jump_host_key_that_needed_its_passphrase_makes_the_connection_interactive(
    netns_remote: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tbctl.hosts.paramiko.host import SSHHost
    from tests.support.remote import VIA_JUMP_ALIAS

    jump = netns_remote.jump
    typist = _Typist("hop phrase")
    with locked_key_for(jump, tmp_path / "locked_hop", "hop phrase") as key:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(netns_remote.ssh_config.read_text().replace(f"IdentityFile {jump.client_key}",
                                                                   f"IdentityFile {key}"))
        monkeypatch.setenv("TBCTL_SSH_CONFIG", str(cfg))
        with SSHHost(VIA_JUMP_ALIAS, prompter=typist).connect() as host:
            assert len(typist.asked) == 1 and str(key) in typist.asked[0]
            assert host.interactive_auth and str(key) in host.asked_for and "jump host" in host.asked_for
