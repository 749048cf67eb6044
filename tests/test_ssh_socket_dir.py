"""Where tbctl keeps its ControlMaster sockets, attacked by another user of the same machine: a directory
planted where tbctl used to put it, one put back in place of tbctl's own, and records that name other
files and other ssh options. Nothing planted runs and nothing outside tbctl's own directory is deleted.
The attacker is a real second Unix user (the suite runs as root and acts as that user with setpriv)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.procs import wait_until

PLANTER = "tbctl-sshsec-planter"  # the user that plants; made once, shared by concurrent runs


def _planter() -> pwd.struct_passwd:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
        pytest.skip("needs root (to act as another user) with setpriv and useradd")
    for _ in range(20):
        try:
            return pwd.getpwnam(PLANTER)
        except KeyError:
            pass
        res = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PLANTER],
                             capture_output=True, text=True, timeout=30)
        if res.returncode not in (0, 9, 10):  # 9: made meanwhile by another run; 10: /etc/passwd busy
            pytest.fail(f"useradd {PLANTER}: {res.stderr}")
        time.sleep(0.2)
    return pwd.getpwnam(PLANTER)


def _as_planter(*argv: str) -> None:
    user = _planter()
    subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--", *argv],
                   check=True, timeout=30, cwd="/")


def _plant(directory: Path, marker: Path, victim: Path) -> None:
    """As the other user: `directory` with an ssh config whose Match exec touches `marker`, and a record that
    names that config as its destination and `victim` as its socket (the attack the issue reproduced)."""
    evil_cfg = directory / "evilcfg"
    record = {"host": "x", "control_path": str(victim), "created_at": time.time(), "persist": 600, "pid": 1,
              "destination": ["-F", str(evil_cfg)], "host_arg": "x"}
    script = (
        "import json, os, sys\n"
        "d, cfg, rec = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "os.makedirs(d, exist_ok=True)\n"
        "os.chmod(d, 0o777)\n"
        "open(cfg, 'w').write(sys.argv[4])\n"
        "for name in ('0123456789abcdef.json', 'planted.json'):\n"
        "    open(os.path.join(d, name), 'w').write(rec)\n"
        "open(os.path.join(d, '0123456789abcdef'), 'w').close()\n"
    )
    _as_planter(sys.executable, "-c", script, str(directory), str(evil_cfg), json.dumps(record),
                f'Match exec "touch {marker}"\n  User x\n')


def _old_predictable_dir(state_dir: Path) -> Path:
    """The name tbctl used to give its socket dir under /tmp when the state dir is deep: anyone can compute it."""
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"tbctl-ssh-{os.getuid()}-{tag}"


@pytest.fixture
def deep_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dir too deep for a socket path: tbctl keeps its sockets under the temp dir instead."""
    path = tmp_path / ("deep-state-" + "d" * 80)
    monkeypatch.setenv("TBCTL_STATE_DIR", str(path))
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    return path


@pytest.fixture
def drop_box() -> Any:
    """A directory the other user may write in (pytest's tmp dirs are 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="tbctl-plant-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_planted_socket_dir_at_the_predictable_name_runs_nothing_and_deletes_nothing(
    cli: Cli, deep_state: Path, victim: Path, drop_box: Path
) -> None:
    planted = _old_predictable_dir(deep_state)
    marker = drop_box / "MARKER"
    try:
        _plant(planted, marker, victim)
        assert planted.stat().st_uid == _planter().pw_uid
        listed = cli("connections", "--json").json()["connections"]
        cli("disconnect", "--all")
        cli("disconnect", "x", exit_code=4)
        time.sleep(0.3)
        assert listed == []
        assert not marker.exists(), "a command from a planted ssh config ran as the victim"
        assert victim.read_text() == "keep me", "a planted record's control_path was deleted"
    finally:
        shutil.rmtree(planted, ignore_errors=True)


def test_a_planted_socket_dir_does_not_block_ls_host(
    openssh_remote: Any, cli: Cli, deep_state: Path, victim: Path, drop_box: Path
) -> None:
    planted = _old_predictable_dir(deep_state)
    marker = drop_box / "MARKER"
    try:
        _plant(planted, marker, victim)
        assert cli("ls", "--host", openssh_remote.alias, "--json").json()["errors"] == []
        kept = cli("connections", "--json").json()["connections"]
        assert [c["host"] for c in kept] == [openssh_remote.alias]
        socket_dir = Path(kept[0]["control_path"]).parent
        assert socket_dir != planted
        info = os.lstat(socket_dir)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
        assert not marker.exists() and victim.read_text() == "keep me"
    finally:
        shutil.rmtree(planted, ignore_errors=True)


@pytest.mark.parametrize("replacement", ["directory", "symlink"])
def test_the_socket_dir_put_back_by_another_user_is_not_used(
    replacement: str, openssh_remote: Any, cli: Cli, deep_state: Path, victim: Path, drop_box: Path
) -> None:
    """tbctl's own socket dir vanished (a /tmp cleaner) and another user made one of that name, which they
    could read in /tmp's listing: tbctl neither reads it nor keeps sockets in it, and makes another."""
    cli("ls", "--host", openssh_remote.alias)
    [kept] = cli("connections", "--json").json()["connections"]
    ours = Path(kept["control_path"]).parent
    cli("disconnect", "--all")
    assert wait_until(lambda: not psutil.pid_exists(kept["pid"]), 10)  # it removes its socket as it exits
    shutil.rmtree(ours)
    marker = drop_box / "MARKER"
    if replacement == "directory":
        _plant(ours, marker, victim)
    else:
        _plant(drop_box / "theirs", marker, victim)
        _as_planter("ln", "-s", str(drop_box / "theirs"), str(ours))
    try:
        assert cli("connections", "--json").json()["connections"] == []
        cli("disconnect", "--all")
        assert not marker.exists() and victim.read_text() == "keep me"
        assert cli("ls", "--host", openssh_remote.alias, "--json").json()["errors"] == []
        kept = cli("connections", "--json").json()["connections"]
        assert len(kept) == 1 and Path(kept[0]["control_path"]).parent != ours
        assert not marker.exists() and victim.read_text() == "keep me"
    finally:
        if ours.is_symlink() or ours.is_file():
            ours.unlink()
        shutil.rmtree(ours, ignore_errors=True)


def test_a_record_in_tbctls_own_dir_names_no_ssh_option_and_no_file_outside(
    openssh_remote: Any, cli: Cli, state_dir: Path, victim: Path, tmp_path: Path
) -> None:
    """Even a record in tbctl's own directory (an older tbctl's, or one edited) gives ssh no option and
    names no file to delete: ssh's arguments come from the host spec, the socket is the record's own name."""
    cli("ls", "--host", openssh_remote.alias)
    kept = cli("connections", "--json").json()["connections"]
    socket_dir = Path(kept[0]["control_path"]).parent
    marker = tmp_path / "MARKER"
    evil_cfg = tmp_path / "evilcfg"
    evil_cfg.write_text(f'Match exec "touch {marker}"\n  User x\n')
    record = {"host": "x", "control_path": str(victim), "created_at": time.time(), "persist": 600, "pid": 1,
              "destination": ["-F", str(evil_cfg)], "host_arg": "x"}
    (socket_dir / "fedcba9876543210.json").write_text(json.dumps(record))
    (socket_dir / "fedcba9876543210").write_text("")
    listed = cli("connections", "--json").json()["connections"]
    assert [c["host"] for c in listed] == [openssh_remote.alias]
    assert not marker.exists() and victim.read_text() == "keep me"
    assert not (socket_dir / "fedcba9876543210.json").exists(), "a dead master's record is cleaned, in our dir"


@pytest.fixture
def openssh_remote(remote_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TBCTL_SSH", "openssh")
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(remote_server.ssh_config))
    return remote_server


# --- the socket path fits the platform's sun_path ---------------------------------------------------------
# macOS cannot run here: these compute the socket dir under darwin's rule (a 104-byte sun_path) in real
# directories whose paths are as long as macOS's own: the per-user TMPDIR /var/folders/xx/<30 chars>/T and
# platformdirs' state dir ~/Library/Application Support/tbctl (with its space).

MAC_TMPDIR = "/var/folders/xx/" + "k" * 30 + "/T"


def _real_dir_as_long_as(model: str, root: Path, tail: str = "") -> Path:
    """A real directory under `root` whose path has as many bytes as `model` and ends in `tail`."""
    pad = len(model) - len(str(root)) - 1 - len(tail)
    assert pad > 0, (model, root)
    path = root / (("p" * pad) + tail)
    path.mkdir(parents=True, exist_ok=True)
    assert len(str(path)) == len(model)
    return path


@pytest.fixture
def short_root() -> Any:
    path = Path(tempfile.mkdtemp(prefix="m", dir="/tmp"))  # short: models of short paths fit under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _mac_state_dir(root: Path, user: str) -> Path:
    return _real_dir_as_long_as(f"/Users/{user}/Library/Application Support/tbctl", root,
                                "/Library/Application Support/tbctl")


def _bindable(path: Path) -> bool:
    """Whether ssh's first bind (PATH.<16 random chars>) works here: a real socket of that length."""
    import socket

    probe = str(path) + ".0123456789abcdef"
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.bind(probe)
        except OSError:
            return False
    os.unlink(probe)
    return True


@pytest.mark.parametrize("user", ["jane.doe.lab", "a.very-long.user-name.of.a.lab"])
def test_darwin_socket_paths_fit_104_bytes(user: str, short_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tbctl.hosts.openssh.masters import SOCKET_NAME_LENGTH, control_dir, socket_fits

    tmpdir = _real_dir_as_long_as(MAC_TMPDIR, short_root / "t", "/T")
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    state = _mac_state_dir(short_root, user)
    directory = control_dir(state, platform="darwin")
    assert directory is not None
    socket_path = directory / ("f" * SOCKET_NAME_LENGTH)
    assert len(os.fsencode(str(socket_path))) + 17 + 1 <= 104, socket_path
    assert _bindable(socket_path)
    if socket_fits(state / "ssh", "darwin"):
        assert directory == state / "ssh"
    else:
        assert directory.parent == tmpdir, "the per-user TMPDIR when a socket fits there"
        assert control_dir(state, platform="darwin") == directory, "remembered, not made anew"
    assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700


def test_a_state_dir_that_fits_linux_but_not_darwin(short_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path is judged by the platform tbctl runs on: 108 bytes on Linux, 104 on macOS."""
    from tbctl.hosts.openssh.masters import control_dir, socket_fits

    monkeypatch.setattr(tempfile, "tempdir", str(short_root))
    model = "/x" * 1 + "y" * (108 - 17 - 1 - 17 - 2 - 4 - 2)  # `<state>/ssh/<16>` plus 17 plus NUL: 106 bytes
    state = _real_dir_as_long_as(model, short_root)
    assert socket_fits(state / "ssh", "linux") and not socket_fits(state / "ssh", "darwin")
    assert control_dir(state, platform="linux") == state / "ssh"
    elsewhere = control_dir(state, platform="darwin")
    assert elsewhere is not None and elsewhere.parent == short_root


def test_a_deep_state_dir_and_a_deep_tmpdir_fall_back_to_tmp(short_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tbctl.hosts.openssh.masters import SOCKET_NAME_LENGTH, control_dir

    deep_tmp = _real_dir_as_long_as("/" + "t" * 95, short_root)
    monkeypatch.setattr(tempfile, "tempdir", str(deep_tmp))
    state = _real_dir_as_long_as("/" + "s" * 120, short_root)
    for platform in ("darwin", "linux"):
        directory = control_dir(state, platform=platform)
        assert directory is not None and directory.parent == Path("/tmp"), directory
        assert len(str(directory / ("f" * SOCKET_NAME_LENGTH))) + 17 + 1 <= 104
        shutil.rmtree(directory)
