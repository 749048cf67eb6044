"""The OpenSSH backend as a user's own setup exercises it, against the real sshd: Include'd aliases, Match
blocks, IdentityAgent, the user's own ControlMaster (ridden, never stopped), tbctl's own master (reused,
listed, closed), option injection, and TCP_NODELAY on the server's end of a forward."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, alive, wait_until
from tests.support.schemas import CONNECTIONS, conforms


@pytest.fixture
def openssh(remote_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The remote over the OpenSSH backend only: paramiko has no Include, IdentityAgent or ControlMaster."""
    monkeypatch.setenv("TBCTL_SSH", "openssh")
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(remote_server.ssh_config))
    return remote_server


def _logins(remote: Any) -> int:
    """Authentications sshd has accepted so far: each new SSH connection to it logs one."""
    return remote.server.log.read_text(errors="replace").count("Accepted publickey")


def _base_block(remote: Any, name: str, *, identity: bool = True) -> str:
    s = remote.server
    lines = [f"Host {name}", f"  HostName {s.host}", f"  Port {s.port}", f"  User {s.user}",
             f"  UserKnownHostsFile {s.known_hosts}", "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes",
             "  BatchMode yes", "  ConnectTimeout 5"]
    if identity:
        lines += [f"  IdentityFile {s.client_key}", "  IdentitiesOnly yes"]
    return "\n".join(lines) + "\n"


def _use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(text)
    cfg.chmod(0o600)
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(cfg))
    return cfg


def test_an_alias_that_lives_only_in_an_included_file(openssh: Any, cli: Cli, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    included = tmp_path / "config.d"
    included.mkdir()
    (included / "gpu.conf").write_text(_base_block(openssh, "gpuinc"))
    _use_config(tmp_path, monkeypatch, f"Include {included}/*.conf\n")
    rows = cli("ls", "--host", "gpuinc", "--json").json()
    assert rows["errors"] == []
    from tbctl.cli.completion import complete_hosts

    assert "gpuinc" in complete_hosts("gpu")  # TAB reads Include'd files too (without running ssh)


def test_a_match_host_block_supplies_user_and_identity(remote: Any, cli: Cli, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    s = remote.server
    _use_config(tmp_path, monkeypatch, (
        f"Host tbmatched\n  HostName {s.host}\n  Port {s.port}\n"
        f"Match host {s.host}\n  User {s.user}\n  IdentityFile {s.client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {s.known_hosts}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"))
    assert cli("ls", "--host", "tbmatched", "--json").json()["errors"] == []


def test_the_users_own_controlmaster_is_ridden_and_left_running(openssh: Any, cli: Cli, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import tempfile

    control = Path(tempfile.mkdtemp(prefix="tbcm"))  # short: a socket path must fit in 108 bytes
    request_cleanup = shutil.rmtree
    cfg = _use_config(tmp_path, monkeypatch, _base_block(openssh, "tbmine")
                      + f"  ControlMaster auto\n  ControlPath {control}/%C\n  ControlPersist yes\n")
    ssh = ["ssh", "-F", str(cfg)]
    subprocess.run([*ssh, "-M", "-N", "-f", "--", "tbmine"], check=True, timeout=30, stdin=subprocess.DEVNULL)
    try:
        check = subprocess.run([*ssh, "-O", "check", "--", "tbmine"], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0, check.stderr
        before = _logins(openssh)
        cli("ls", "--host", "tbmine")
        cli("ls", "--host", "tbmine")
        assert _logins(openssh) == before, "tbctl must ride the user's master: no new login"
        assert cli("connections", "--json").json()["connections"] == []  # none of tbctl's own
        after = subprocess.run([*ssh, "-O", "check", "--", "tbmine"], capture_output=True, text=True, timeout=10)
        assert after.returncode == 0 and after.stderr == check.stderr, "the user's master must outlive tbctl"
    finally:
        subprocess.run([*ssh, "-O", "exit", "--", "tbmine"], capture_output=True, timeout=10)
        request_cleanup(control, ignore_errors=True)


def test_tbctls_own_master_is_reused_by_the_next_command_and_closed_by_disconnect(
    openssh: Any, cli: Cli
) -> None:
    before = _logins(openssh)
    cli("ls", "--host", openssh.alias)
    assert _logins(openssh) == before + 1
    listed = cli("connections", "--json").json()
    conforms(listed, CONNECTIONS)
    kept = listed["connections"]
    assert [c["host"] for c in kept] == [openssh.alias] and psutil.pid_exists(kept[0]["pid"])
    assert openssh.alias in cli("connections").stdout
    cli("ls", "--host", openssh.alias)
    cli("free-port", "--host", openssh.alias, "1", "--dry-run")
    assert _logins(openssh) == before + 1, "the next commands ride the master the first one left"
    closed = cli("disconnect", openssh.alias, "--json").json()["connections"]
    assert [c["pid"] for c in closed] == [kept[0]["pid"]]
    assert wait_until(lambda: not psutil.pid_exists(kept[0]["pid"]), 10)
    assert not os.path.exists(kept[0]["control_path"])
    assert cli("connections", "--json").json()["connections"] == []
    cli("disconnect", openssh.alias, exit_code=4)  # nothing left to close: said, not silent


def test_ssh_persist_0_closes_the_master_with_the_command(openssh: Any, cli: Cli,
                                                         monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    monkeypatch.setenv("TBCTL_SSH_PERSIST", "0")
    cli("ls", "--host", openssh.alias)
    masters = [p for p in psutil.process_iter(["cmdline"]) if str(state_dir) in " ".join(p.info["cmdline"] or [])
               or any(a.startswith("/tmp/tbctl-ssh-") for a in p.info["cmdline"] or [])]
    from tbctl.hosts.openssh.masters import kept_connections

    assert wait_until(lambda: not kept_connections(state_dir), 5), "told to stop when the command ended"
    assert wait_until(lambda: not any(alive(p) for p in masters), 5)


def test_an_agent_key_named_in_no_identityfile_through_identityagent(
    openssh: Any, cli: Cli, reaper: ProcessReaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "agent_only"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sock = tmp_path / "agent.sock"
    agent = reaper.popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(sock.exists, 10), "ssh-agent did not start"
    subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), check=True,
                   capture_output=True, timeout=10)
    key.unlink()  # only the agent has it now
    authorized = Path(openssh.server.workdir) / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + Path(str(key) + ".pub").read_text())
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only IdentityAgent may point at the agent
    try:
        _use_config(tmp_path, monkeypatch, _base_block(openssh, "tbagent", identity=False)
                    + f"  IdentityAgent {sock}\n  IdentityFile none\n")
        assert cli("ls", "--host", "tbagent", "--json").json()["errors"] == []
    finally:
        authorized.write_text(original)
    assert agent.poll() is None


@pytest.mark.parametrize("argv", [
    ["ls", "--host=-oProxyCommand=touch {marker}"],
    ["tunnel", "--", "-oProxyCommand=touch {marker}", "6006"],
    ["up", "--host", "-oProxyCommand=touch {marker}", "runs"],
])
def test_a_host_that_starts_with_a_dash_is_refused_and_runs_nothing(
    argv: list[str], ssh_env: Any, cli: Cli, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    result = cli(*[a.format(marker=marker) for a in argv], exit_code=2)
    assert "not a host" in result.stderr or "must not start with" in result.stderr, result.stderr
    time.sleep(0.5)  # a ProxyCommand, had one run, would have touched it by now
    assert not marker.exists()


_PIDFD_GETFD = 438  # the same syscall number on every Linux architecture (the generic table)


def _nodelay_of_sshd_sockets(remote: Any) -> list[int]:
    """TCP_NODELAY of every socket the remote's sshd session processes hold on its port, read from the
    sockets themselves: each is duplicated out of sshd with pidfd_getfd (root may do that)."""
    libc = ctypes.CDLL(None, use_errno=True)
    values = []
    for proc in psutil.Process(remote.server.pid).children(recursive=True):
        try:
            fds = [int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd")
                   if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:")]
            pidfd = os.pidfd_open(proc.pid)
        except (OSError, psutil.Error):
            continue
        try:
            for fd in fds:
                dup = libc.syscall(_PIDFD_GETFD, pidfd, fd, 0)
                if dup < 0:
                    continue
                with socket.socket(fileno=dup) as sock:
                    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                        continue
                    if sock.getsockname()[1] == remote.server.port:
                        values.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            os.close(pidfd)
    return values


def test_sshd_has_nagle_off_on_the_connection_that_carries_the_forward(
    openssh: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path
) -> None:
    """sshd turns TCP_NODELAY on only once a session runs on a connection; without it a TensorBoard reply
    written in two sends waits ~40 ms for a delayed ACK. The probe's exec is that session."""
    from tests.support.foreground import Foreground
    from tests.support.procs import TENSORBOARD

    fg = Foreground(reaper, state_dir, "up", "--host", openssh.alias, str(logdir), "--tensorboard", TENSORBOARD)
    reaper.adopt(fg.pid_from_stderr())
    values = _nodelay_of_sshd_sockets(openssh)
    assert values and all(v != 0 for v in values), values
    assert fg.interrupt() == 0, fg.stderr


def test_a_killed_master_is_replaced_and_its_socket_reused(openssh: Any, cli: Cli) -> None:
    """SIGKILL leaves the socket file behind; `ssh -M` on it would run without listening. tbctl clears it."""
    cli("ls", "--host", openssh.alias)
    kept = cli("connections", "--json").json()["connections"]
    os.kill(kept[0]["pid"], signal.SIGKILL)
    assert wait_until(lambda: not alive(kept[0]["pid"]), 5)
    assert os.path.exists(kept[0]["control_path"])
    cli("ls", "--host", openssh.alias)
    again = cli("connections", "--json").json()["connections"]
    assert [c["control_path"] for c in again] == [kept[0]["control_path"]] and again[0]["pid"] != kept[0]["pid"]


def test_config_show_says_which_backend_and_why(ssh_backend: str, cli: Cli) -> None:
    view = cli("config", "show", "--json").json()
    assert view["ssh_in_effect"] == ssh_backend and "TBCTL_SSH" in view["ssh_reason"]
    view = json.loads(cli("--ssh", "paramiko", "config", "show", "--json").stdout)
    assert view["ssh_in_effect"] == "paramiko" and "--ssh" in view["ssh_reason"]


ODD_BLOCKS = {  # what real ssh_configs carry for a host; none of it may get in the way of tbctl's own use
    "a RemoteCommand with a forced tty": "  RemoteCommand tmux new -A -s main\n  RequestTTY force\n",
    "a LocalForward that must succeed": "  LocalForward 127.0.0.1:{free} 127.0.0.1:8888\n  ExitOnForwardFailure yes\n",
    "debug logging": "  LogLevel DEBUG3\n",
    "a tunnel-only block (ssh -f -N as config)": "  ForkAfterAuthentication yes\n  StdinNull yes\n  SessionType none\n",
    "a LocalCommand": "  PermitLocalCommand yes\n  LocalCommand touch {marker}\n",
    "agent forwarding and compression": "  ForwardAgent yes\n  Compression yes\n  ServerAliveInterval 30\n",
}


@pytest.mark.parametrize("block", list(ODD_BLOCKS))
def test_odd_but_real_host_blocks_do_not_get_in_the_way(block: str, openssh: Any, cli: Cli, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.procs import free_port

    marker = tmp_path / "LOCALCOMMAND_RAN"
    extra = ODD_BLOCKS[block].format(free=free_port(), marker=marker)
    _use_config(tmp_path, monkeypatch, _base_block(openssh, "tbodd") + extra)
    assert cli("ls", "--host", "tbodd", "--json").json()["errors"] == []
    assert cli("ls", "--host", "tbodd", "--json").json()["errors"] == []  # and again, riding the master
    assert not marker.exists(), "tbctl's hidden master must not run the user's LocalCommand"


def _users_forwards_block(openssh: Any, name: str, *, local: int, dynamic: int, remote_port: int) -> str:
    """A host block as people write it for their own sessions: forwards that must all succeed."""
    return (_base_block(openssh, name) + f"  LocalForward 127.0.0.1:{local} 127.0.0.1:8888\n"
            f"  DynamicForward 127.0.0.1:{dynamic}\n  RemoteForward 127.0.0.1:{remote_port} 127.0.0.1:22\n"
            "  ExitOnForwardFailure yes\n")


def _up_and_tunnel(reaper: ProcessReaper, state_dir: Path, cli: Cli, alias: str, logdir: Path,
                   check: Callable[[], None]) -> None:
    """`ls --host`, `up --host` (held in the foreground), then `tunnel` to what it started; `check` runs while
    each one holds its forward."""
    from tests.support.foreground import Foreground
    from tests.support.procs import TENSORBOARD, free_port, http_get

    assert cli("ls", "--host", alias, "--json").json()["errors"] == []
    check()
    up = Foreground(reaper, state_dir, "up", "--host", alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--keep", "--new")
    pid = up.pid_from_stderr()
    reaper.adopt(pid)
    assert http_get(up.url + "data/logdir")[0] == 200
    check()
    port = next(r["port"] for r in cli("ls", "--host", alias, "--json").json()["instances"] if r["pid"] == pid)
    assert up.interrupt() == 0, up.stderr
    tun = Foreground(reaper, state_dir, "tunnel", alias, str(port), "--local-port", str(free_port()))
    assert http_get(tun.url + "data/logdir")[0] == 200
    check()
    assert tun.interrupt() == 0, tun.stderr
    cli("down", str(pid), "--host", alias)


def test_a_users_forward_to_a_busy_port_is_in_no_commands_way(
    openssh: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ExitOnForwardFailure, a forward of the user's whose port is taken here would fail every ssh
    that asks for it: tbctl never asks for the user's forwards, and the port's holder is left alone."""
    from tests.support.procs import free_port

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        _use_config(tmp_path, monkeypatch, _users_forwards_block(openssh, "tbfwdbusy", local=busy,
                                                                 dynamic=free_port(), remote_port=free_port()))

        def holder_untouched() -> None:
            with socket.create_connection(("127.0.0.1", busy), timeout=5):
                conn, _ = holder.accept()
                conn.close()

        _up_and_tunnel(reaper, state_dir, cli, "tbfwdbusy", logdir, holder_untouched)
    finally:
        holder.close()


def test_a_users_forwards_are_never_opened_by_tbctl(
    openssh: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same block with its ports free: tbctl's master (which persists) must not hold the user's
    LocalForward, DynamicForward or RemoteForward."""
    from tests.support.procs import free_port, port_free

    local, dynamic, remote_port = free_port(), free_port(), free_port()
    _use_config(tmp_path, monkeypatch, _users_forwards_block(openssh, "tbfwdfree", local=local, dynamic=dynamic,
                                                             remote_port=remote_port))

    def none_opened() -> None:
        assert port_free(local) and port_free(dynamic), "tbctl opened the user's LocalForward/DynamicForward"
        assert remote_port not in [p for _, p, _ in openssh.listeners()], "tbctl opened the user's RemoteForward"

    _up_and_tunnel(reaper, state_dir, cli, "tbfwdfree", logdir, none_opened)
    none_opened()


def _logging_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An `ssh` first on PATH that logs each invocation (its pid and argv) and runs the real one; with
    SLOW_PROBE_EXIT set, a probe's ssh (`-T`) lingers 30 s after its channel closed."""
    import shutil

    real = shutil.which("ssh")
    assert real is not None
    bin_dir, log = tmp_path / "ssh-bin", tmp_path / "ssh-calls.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\necho "$$ $*" >> {log}\n'
                       f'case " $* " in *" -T "*) if [ -n "$SLOW_PROBE_EXIT" ]; then {real} "$@"; s=$?; '
                       f'sleep 30; exit $s; fi;; esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return wrapper, log


def _tbctl(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "tbctl", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_ssh_version_is_asked_once_per_client_binary_across_commands(
    openssh: Any, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ssh -V` is a process start; its answer is kept in the state dir for that binary, and a warm `ls
    --host` then runs three ssh: `-G`, one `-O check` and the probe."""
    wrapper, log = _logging_ssh(tmp_path, monkeypatch)

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    for _ in range(3):
        assert _tbctl("ls", "--host", openssh.alias).returncode == 0
    assert sum(" -V" in c for c in calls()) == 1, calls()
    log.write_text("")
    assert _tbctl("ls", "--host", openssh.alias).returncode == 0
    warm = [c.split(" ", 1)[1] for c in calls()]
    assert len(warm) == 3 and " -G " in f" {warm[0]} " and "-O check" in warm[1] and " -T " in warm[2], warm
    wrapper.write_text(wrapper.read_text() + "# another build of ssh\n")
    assert _tbctl("ls", "--host", openssh.alias).returncode == 0
    assert sum(" -V" in c for c in calls()) == 1, "a changed binary is asked again"


def test_ls_host_answers_without_waiting_for_the_probe_to_exit(
    openssh: Any, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing is printed and the command ends; the probe's ssh ends by itself with its channel."""
    _, log = _logging_ssh(tmp_path, monkeypatch)
    monkeypatch.setenv("SLOW_PROBE_EXIT", "1")
    res = _tbctl("ls", "--host", openssh.alias, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["errors"] == [], res.stderr
    probe_pid = next(int(c.split()[0]) for c in log.read_text().splitlines() if " -T " in f" {c} ")
    try:
        assert psutil.pid_exists(probe_pid) and psutil.Process(probe_pid).status() != psutil.STATUS_ZOMBIE, \
            "tbctl waited for (or killed) the probe's ssh before it ended"
    finally:
        with __import__("contextlib").suppress(psutil.NoSuchProcess):
            for proc in [psutil.Process(probe_pid), *psutil.Process(probe_pid).children(recursive=True)]:
                proc.kill()


def test_on_a_terminal_the_connection_opens_while_importing_and_a_prompt_falls_back(
    openssh: Any, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early connection never asks (BatchMode), so it may start on a terminal too. When it fails where
    a person could answer (here: a login the server refuses), the CLI connects as on a terminal, asking;
    without a terminal that failure is the command's."""
    import io
    import pty
    import sys

    from tbctl.config import load_settings
    from tbctl.errors import AuthFailed
    from tbctl.hosts import preconnect

    def key(spec: str) -> Any:
        per_host = load_settings().for_host(spec)
        return preconnect.EarlyKey(spec, "openssh", per_host.connect_timeout, per_host.env, per_host.ssh_persist)

    leader, follower = pty.openpty()
    with os.fdopen(leader, "rb") as _, os.fdopen(follower, "r") as tty:
        assert tty.isatty()
        monkeypatch.setattr(sys, "stdin", tty)
        preconnect.start(["ls", "--host", openssh.alias])
        host = preconnect.take(key(openssh.alias))
        assert host is not None, "not opened early on a terminal"
        try:
            assert host.call("ping") == {}
        finally:
            host.close()
        _use_config(tmp_path, monkeypatch, openssh.ssh_config.read_text() + "\n"
                    + _base_block(openssh, "tbrefused").replace(f"User {openssh.server.user}", "User tbnosuchuser"))
        preconnect.start(["ls", "--host", "tbrefused"])
        assert preconnect.take(key("tbrefused")) is None, "a person could answer: the CLI asks"
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    preconnect.start(["ls", "--host", "tbrefused"])
    with pytest.raises(AuthFailed):
        preconnect.take(key("tbrefused"))
