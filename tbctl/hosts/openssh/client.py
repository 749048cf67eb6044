"""The system's OpenSSH client: whether there is one tbctl can use, and which version."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys

MIN_OPENSSH = (7, 6)  # ProxyJump (7.3), `-O forward`/`-O cancel`, RemoteCommand (7.6)
NO_MULTIPLEXING = "Windows' OpenSSH cannot multiplex connections"  # it has no ControlMaster


@functools.lru_cache(maxsize=1)
def openssh_client() -> tuple[tuple[int, int] | None, str]:
    """(version, what was found) of `ssh` on PATH, or (None, why it cannot be used)."""
    if sys.platform == "win32":
        return None, NO_MULTIPLEXING
    path = shutil.which("ssh")
    if path is None:
        return None, "no ssh on PATH"
    try:
        res = subprocess.run([path, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`ssh -V` failed: {exc}"
    said = (res.stderr or res.stdout).strip()
    found = re.match(r"OpenSSH_(\d+)\.(\d+)", said)
    if not found:
        return None, f"{path} is not OpenSSH ({said[:60] or 'no version'})"
    version = (int(found.group(1)), int(found.group(2)))
    if version < MIN_OPENSSH:
        return None, f"{said.split(',')[0]} is older than OpenSSH {MIN_OPENSSH[0]}.{MIN_OPENSSH[1]}"
    return version, said.split(",")[0]
