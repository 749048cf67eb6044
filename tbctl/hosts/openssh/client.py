"""The system's OpenSSH client: whether there is one tbctl can use, and which version."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

MIN_OPENSSH = (7, 6)  # ProxyJump (7.3), `-O forward`/`-O cancel`, RemoteCommand (7.6)
NO_MULTIPLEXING = "Windows' OpenSSH cannot multiplex connections"  # it has no ControlMaster

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
