"""What tbctl refuses over SSH, and how: host keys, auth, unreachable hosts, missing tools, hostile input."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.procs import TENSORBOARD, ProcessReaper, free_port, wait_until
from tests.support.ssh_keys import keygen, locked_key


def _alias_config(remote: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, known_hosts: str,
                  strict: str = "yes", identity: Path | None = None, name: str = "tbvariant") -> str:
    """An ssh_config alias for the remote's sshd with its own known_hosts, policy and key."""
    server = remote.server
    kh = tmp_path / f"{name}_known_hosts"
    kh.write_text(known_hosts)
    cfg = tmp_path / f"{name}_ssh_config"
    cfg.write_text(
        f"Host {name}\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {identity or server.client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {kh}\n  StrictHostKeyChecking {strict}\n  NumberOfPasswordPrompts 1\n"
    )
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(cfg))
    return name


def _fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_unknown_host_key_without_a_tty_is_refused_with_its_fingerprint(
    remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts="", strict="ask")
    result = cli("ls", "--host", alias, exit_code=5)
    assert "unknown host key" in result.stderr
    assert _fingerprint(remote.server.host_key_pub) in result.stderr
    assert "accept-new" in result.stderr  # how to accept it
    assert (tmp_path / "tbvariant_known_hosts").read_text() == ""


def test_accept_new_adds_an_unknown_key_once(remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts="", strict="accept-new")
    cli("ls", "--host", alias)
    kh = (tmp_path / "tbvariant_known_hosts").read_text()
    assert remote.server.host_key_pub.read_text().split()[1] in kh
    cli("ls", "--host", alias)
    assert (tmp_path / "tbvariant_known_hosts").read_text() == kh  # known now: not added twice


def test_a_changed_host_key_is_always_refused(remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = keygen(tmp_path / "impostor")
    name = f"[{remote.server.host}]:{remote.server.port}"
    line = f"{name} {' '.join(Path(str(other) + '.pub').read_text().split()[:2])}\n"
    for strict in ("yes", "accept-new", "no"):
        alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts=line, strict=strict)
        result = cli("ls", "--host", alias, exit_code=5)
        assert "CHANGED" in result.stderr and "ssh-keygen -R" in result.stderr


def test_a_key_the_server_does_not_accept(remote: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = keygen(tmp_path / "stranger")
    alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts=remote.server.known_hosts.read_text(),
                          identity=stranger)
    result = cli("ls", "--host", alias, exit_code=5)
    assert "authentication" in result.stderr and str(stranger) in result.stderr
    assert "Traceback" not in result.stderr


def _no_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty ssh_config (`ssh -F` of a missing file is an error, as it is for ssh itself)."""
    empty = tmp_path / "empty_ssh_config"
    empty.write_text("")
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(empty))


def test_an_unreachable_address_fails_within_the_connect_timeout(
    ssh_backend: str, cli: Cli, reaper: ProcessReaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loopback listener whose accept queue is full: the kernel drops further SYNs, as a firewall would."""
    port = free_port()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", port))
    blackhole.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the queue (backlog 0 still admits one or two)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        _no_ssh_config(tmp_path, monkeypatch)
        started = time.monotonic()
        result = cli("ls", "--host", f"root@127.0.0.1:{port}", "--connect-timeout", "1", exit_code=5)
        elapsed = time.monotonic() - started
    finally:
        for s in fillers:
            s.close()
        blackhole.close()
    assert "timed out after 1 s" in result.stderr
    assert elapsed < 5


def test_refused_and_unresolvable_hosts(ssh_backend: str, cli: Cli, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ssh_config(tmp_path, monkeypatch)
    assert "refused" in cli("ls", "--host", f"127.0.0.1:{free_port()}", exit_code=5).stderr
    result = cli("ls", "--host", "no-such-host.invalid", "--connect-timeout", "3", exit_code=5)
    assert "cannot resolve host" in result.stderr and "ssh config" in result.stderr


def test_no_tensorboard_on_the_remote_is_exit_4_naming_what_was_searched(ssh_env: Any, cli: Cli, logdir: Path) -> None:
    result = cli("up", "--host", ssh_env.alias, str(logdir), "--env", "/nonexistent-env", exit_code=4)
    assert "/nonexistent-env/bin/python" in result.stderr  # no python there even
    from tbctl.hosts.paramiko.host import SSHHost

    with SSHHost(ssh_env.alias).connect() as host:
        found = host.call("find_tensorboard", explicit=None, env_prefix=None, login_shell=True)
    if found["path"]:
        pytest.skip(f"the remote has a tensorboard on its PATH ({found['path']})")
    result = cli("up", "--host", ssh_env.alias, str(logdir), exit_code=4)
    assert "no tensorboard executable found" in result.stderr and "PATH" in result.stderr


HOSTILE = ["with space", "it's", "$(touch {marker})", "; touch {marker}", "`touch {marker}`",
           "line\ntouch {marker}", "日本語 ログ", "-- --bind_all"]


def test_hostile_logdir_names_execute_nothing(ssh_env: Any, cli: Cli, reaper: ProcessReaper, tmp_path: Path,
                                              state_dir: Path) -> None:
    from tests.support.foreground import Foreground

    marker = tmp_path / "MARKER"
    base = tmp_path / "hostile"
    base.mkdir()
    for i, template in enumerate(HOSTILE):
        logdir = base / template.format(marker=marker)
        logdir.mkdir(parents=True, exist_ok=True)
        fg = Foreground(reaper, state_dir, "up", "--host", ssh_env.alias, "--logdir", str(logdir),
                        "--tensorboard", TENSORBOARD, "--port", str(6600 + i))
        pid = fg.pid_from_stderr()
        reaper.adopt(pid)
        rows = cli("ls", "--host", ssh_env.alias, "--json").json()["instances"]
        assert [r["logdir"] for r in rows if r["pid"] == pid] == [str(logdir)]
        assert fg.interrupt() == 0, fg.stderr
        assert wait_until(lambda: not any(r["pid"] == pid for r in cli("ls", "--host", ssh_env.alias, "--json").json()["instances"]), 10)
    assert not marker.exists(), "a logdir name was executed by a shell"


def test_on_a_terminal_an_unknown_host_key_is_asked_about_with_its_fingerprint(
    remote: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    import os

    from tests.support.terminal import run_on_pty

    alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts="", strict="ask")
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    rc, screen = run_on_pty(["ls", "--host", alias], [(b"(yes/no/[fingerprint])? ", b"no\n")], env=env)
    assert rc == 5 and _fingerprint(remote.server.host_key_pub) in screen, screen
    assert (tmp_path / "tbvariant_known_hosts").read_text() == ""
    rc, screen = run_on_pty(["ls", "--host", alias], [(b"(yes/no/[fingerprint])? ", b"yes\n")], env=env)
    assert rc == 0, screen
    assert remote.server.host_key_pub.read_text().split()[1] in (tmp_path / "tbvariant_known_hosts").read_text()


def test_a_key_with_a_passphrase_is_asked_for_on_a_terminal_and_refused_without_one(
    remote: Any, ssh_backend: str, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    remote_backend = ssh_backend
    import os

    from tests.support.terminal import run_on_pty

    with locked_key(remote.server, tmp_path / "locked", "s3cret phrase") as key:
        alias = _alias_config(remote, tmp_path, monkeypatch, known_hosts=remote.server.known_hosts.read_text(),
                              identity=key)
        result = cli("ls", "--host", alias, exit_code=5)
        assert "needs a passphrase; no terminal to ask" in result.stderr
        env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
        rc, screen = run_on_pty(["ls", "--host", alias], [(b"Enter passphrase for key", b"s3cret phrase\n")], env=env)
        assert rc == 0, screen
        cli("disconnect", "--all")  # else the next command rides the connection that one left (OpenSSH)
        rc, screen = run_on_pty(["ls", "--host", alias], [(b"Enter passphrase for key", b"wrong\n")], env=env)
        # paramiko says so; ssh asks again (NumberOfPasswordPrompts 1 in the config stops it) and then fails
        assert rc == 5 and ("wrong passphrase" in screen if remote_backend == "paramiko" else "authentication" in screen), screen
