"""Which SSH client carries a remote host: the system OpenSSH client (the default where it can multiplex)
or tbctl's own paramiko one (for machines with no usable OpenSSH client)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbctl.errors import UsageError

if TYPE_CHECKING:
    from tbctl.hosts.base import Host

BACKENDS = ("openssh", "paramiko")
MIN_OPENSSH = (7, 6)  # ProxyJump (7.3), `-O forward`/`-O cancel`, RemoteCommand (7.6)
NO_MULTIPLEXING = "Windows' OpenSSH cannot multiplex connections"  # it has no ControlMaster


@dataclass(frozen=True)
class BackendChoice:
    name: str  # openssh | paramiko
    reason: str  # why, for `tbctl config show`


_client_lock = threading.Lock()
_client: tuple[tuple[int, int] | None, str] | None = None
CLIENT_CACHE = "ssh-client.json"  # in the state dir: what `ssh -V` said, and of which binary


def openssh_client() -> tuple[tuple[int, int] | None, str]:
    """(version, what was found) of `ssh` on PATH, or (None, why it cannot be used). Asked once per process
    (however many hosts' threads ask at once) and remembered across runs for the same binary (its path,
    inode, size and mtime): `ssh -V` is a process start on every command otherwise."""
    global _client
    with _client_lock:
        if _client is None:
            _client = _ask_openssh_client()
        return _client


def forget_openssh_client() -> None:
    """Ask again on the next call (this process's answer only; the one kept for the binary stays)."""
    global _client
    with _client_lock:
        _client = None


def _ask_openssh_client() -> tuple[tuple[int, int] | None, str]:
    if sys.platform == "win32":
        return None, NO_MULTIPLEXING
    path = shutil.which("ssh")
    if path is None:
        return None, "no ssh on PATH"
    binary = _binary_identity(path)
    said = _remembered_version(binary)
    if said is None:
        try:
            res = subprocess.run([path, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"`ssh -V` failed: {exc}"
        said = (res.stderr or res.stdout).strip()
        _remember_version(binary, said)
    found = re.match(r"OpenSSH_(\d+)\.(\d+)", said)
    if not found:
        return None, f"{path} is not OpenSSH ({said[:60] or 'no version'})"
    version = (int(found.group(1)), int(found.group(2)))
    if version < MIN_OPENSSH:
        return None, f"{said.split(',')[0]} is older than OpenSSH {MIN_OPENSSH[0]}.{MIN_OPENSSH[1]}"
    return version, said.split(",")[0]


def _binary_identity(path: str) -> str:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return ""
    return f"{real}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _client_cache() -> Path:
    from tbctl.config import state_dir_path

    return state_dir_path() / CLIENT_CACHE


def _remembered_version(binary: str) -> str | None:
    if not binary:
        return None
    try:
        cached = json.loads(_client_cache().read_text())
    except (OSError, ValueError):
        return None
    if isinstance(cached, dict) and cached.get("binary") == binary and isinstance(cached.get("said"), str):
        return str(cached["said"])
    return None


def _remember_version(binary: str, said: str) -> None:
    """Best effort: a state dir that cannot be written only costs the next command one `ssh -V`."""
    if not binary:
        return
    path = _client_cache()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{CLIENT_CACHE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps({"binary": binary, "said": said}))
        os.replace(tmp, path)
    except OSError:
        pass


def choose(requested: str | None, source: str = "default") -> BackendChoice:
    """`requested` (from --ssh, TBCTL_SSH or the config file, named by `source`), else the best available."""
    if requested is not None:
        if requested not in BACKENDS:
            raise UsageError(f"unknown SSH backend {requested!r} ({source})", hint="use openssh or paramiko")
        if requested == "openssh" and sys.platform == "win32":
            what = "--ssh openssh" if source == "--ssh" else f"ssh = openssh ({source})"
            raise UsageError(f"{what} cannot work on Windows: {NO_MULTIPLEXING}",
                             hint="leave it unset: paramiko, tbctl's own SSH client, is the default there")
        return BackendChoice(requested, f"set by {source}")
    version, found = openssh_client()
    if version is not None:
        return BackendChoice("openssh", f"{found} on PATH")
    return BackendChoice("paramiko", f"{found}; using tbctl's own SSH client")


def open_ssh_host(spec: str, *, backend: str, state_dir: Path, terminal: Any = None, connect_timeout: float | None,
                  env_prefix: str | None, persist: float, jump: str | None = None) -> Host:
    """An unconnected Host for `spec` over `backend` (paramiko is imported only when it is the one).
    With `jump`, the host is reached through that one as a jump host (ProxyJump, the user's own config for
    the jump applies) and is named `JUMP/SPEC` in tbctl's records: a compute node behind a login node."""
    if backend == "openssh":
        from tbctl.hosts.openssh import OpenSSHHost

        return OpenSSHHost(spec, state_dir=state_dir, terminal=terminal, connect_timeout=connect_timeout,
                           env_prefix=env_prefix, persist=persist, config_file=ssh_config_override(), jump=jump)
    from dataclasses import replace

    from tbctl.hosts.ssh import SSHHost
    from tbctl.hosts.ssh_config import parse_spec, resolve

    target = None
    if jump is not None:
        parse_spec(jump)  # refuses a jump host that would read as an option
        target = replace(resolve(spec, connect_timeout=connect_timeout), proxy_jump=(jump,), proxy_command=None)
    host = SSHHost(spec, prompter=terminal, connect_timeout=connect_timeout, env_prefix=env_prefix, target=target)
    if jump is not None:
        host.name = jumped_name(jump, spec)
    return host


def jumped_name(jump: str, spec: str) -> str:
    """What tbctl calls a host reached through a jump host (records, `ls`, the forwarder's files)."""
    return f"{jump}/{spec}"


def ssh_config_override() -> str | None:
    """TBCTL_SSH_CONFIG is `ssh -F`: that file instead of ~/.ssh/config (and of /etc/ssh/ssh_config)."""
    value = os.environ.get("TBCTL_SSH_CONFIG")
    return os.path.expanduser(value) if value else None
