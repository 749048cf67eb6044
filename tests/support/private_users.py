"""Two real unprivileged users on the remote machine, for `up --private`: A runs TensorBoard there, B tries
to reach it. They are this machine's users (the remote is a network namespace on the same kernel), made
idempotently with names no other test uses, and reached over an sshd of their own in the remote's
namespace: one that takes HOME from passwd (the suite's remote sshd sets one HOME for every session) and
reads an authorized_keys file those users may read (sshd reads it as the user logging in).

Their Python is the system one in a venv of its own whose .pth adds this test venv's site-packages (so
TensorBoard imports), since the test venv's own interpreter may live where other users cannot go."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.support.sshd import SshServer, restart_sshd, start_sshd, stop_sshd

USER_A, USER_B = "tbctl-private-a", "tbctl-private-b"
ALIAS_A, ALIAS_B = "tbpriv-a", "tbpriv-b"
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class PrivateUsers:
    server: SshServer
    ssh_config: Path
    shared: Path  # readable by both users: their venv, the authorized key
    tensorboard: str  # the users' tensorboard script
    logdir: Path  # user A's, in A's home
    netns: str

    def run_as(self, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """`argv` as `user` on the remote machine (in its namespace)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, "runuser", "-u", user, "--", *argv],
                              capture_output=True, text=True, timeout=60)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, timeout=60)


def ensure_user(name: str) -> Path:
    """The user `name` with a home of its own, made if missing; a concurrent run making it too is fine."""
    if subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], capture_output=True, text=True)
        if made.returncode not in (0, 9):  # 9: it exists (made meanwhile)
            raise RuntimeError(f"useradd {name}: {made.stderr.strip()}")
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)  # unlocked: UsePAM no refuses `!`
    home = Path(subprocess.run(["getent", "passwd", name], capture_output=True, text=True,
                               check=True).stdout.split(":")[5])
    if not home.is_dir():  # made by an earlier run, then removed
        home.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.chown(home, name, name)
    return home


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "creating users needs root"
    for tool in ("useradd", "runuser", "curl", SYSTEM_PYTHON):
        if not shutil.which(tool):
            return False, f"{tool} is not installed"
    return True, "ok"


def start_private_users(netns: str, listen: str, workdir: Path, write_logdir: object) -> PrivateUsers:
    home_a = ensure_user(USER_A)
    ensure_user(USER_B)
    shared = Path(f"/var/tmp/tbctl-private-test-{os.getpid()}")
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(mode=0o755)
    venv = shared / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    purelib = subprocess.run([str(venv / "bin" / "python3"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "tbctl_test_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    tensorboard = venv / "bin" / "tensorboard"
    tensorboard.write_text(f"#!{venv / 'bin' / 'python3'}\nimport sys\nfrom tensorboard.main import run_main\n"
                           "sys.exit(run_main())\n")
    tensorboard.chmod(0o755)
    server = start_sshd(workdir / "sshd", alias=ALIAS_A, netns=netns, listen=listen)
    try:
        keys = shared / "authorized_keys"
        keys.write_text(server.client_key.with_name(server.client_key.name + ".pub").read_text())
        keys.chmod(0o644)
        with open(server.sshd_config) as f:
            text = f.read()
        text = text.replace(f"AuthorizedKeysFile {workdir / 'sshd' / 'authorized_keys'}", f"AuthorizedKeysFile {keys}")
        server.sshd_config.write_text(text)
        server = restart_sshd(server)
        base = server.ssh_config.read_text()
        config = workdir / "ssh_config"
        config.write_text(base.replace(f"User {server.user}", f"User {USER_A}") + "\n"
                          + base.replace(f"Host {ALIAS_A}", f"Host {ALIAS_B}").replace(f"User {server.user}", f"User {USER_B}"))
        config.chmod(0o600)
        logdir = home_a / f"runs-{os.getpid()}"
        shutil.rmtree(logdir, ignore_errors=True)
        write_logdir(logdir)  # type: ignore[operator]
        subprocess.run(["chown", "-R", f"{USER_A}:{USER_A}", str(logdir)], check=True)
    except BaseException:
        stop_sshd(server)
        raise
    return PrivateUsers(server, config, shared, str(tensorboard), logdir, netns)


def stop_private_users(users: PrivateUsers) -> None:
    stop_sshd(users.server)
    shutil.rmtree(users.shared, ignore_errors=True)
    shutil.rmtree(users.logdir, ignore_errors=True)
    for name in (USER_A, USER_B):  # what tbctl left in their homes (logs, sockets' parent dirs)
        home = Path(os.path.expanduser(f"~{name}"))
        shutil.rmtree(home / ".cache" / "tbctl", ignore_errors=True)
