"""What a failed `ssh` means. Under BatchMode every failure is exit 255; only stderr tells them apart, and
the user must get one line that says what to do, never "ssh exited 255"."""

from __future__ import annotations

import os
import re
import subprocess
from typing import TYPE_CHECKING

from tbctl.errors import AuthFailed, HostKeyRejected, SSHError, Unreachable

if TYPE_CHECKING:
    from tbctl.hosts.openssh.host import OpenSSHHost

_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/]+)")
_SERVER_KEY = re.compile(r"Server host key: (\S+) (SHA256:[A-Za-z0-9+/]+)")


class UnknownHostKey(HostKeyRejected):
    pass


class HostKeyChanged(HostKeyRejected):
    pass


def failure(stderr: str, host: OpenSSHHost, *, fingerprint: bool = True) -> SSHError:
    """The error a failed connection attempt stands for, from what ssh printed."""
    r = host.resolved
    name, display = r.known_hosts_name, f"{r.user}@{r.hostname}:{r.port}"
    text = stderr.strip()
    said = _last_line(text)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested strict" in text:
        found = _FINGERPRINT.search(text.split("sent by the remote host is", 1)[-1])
        fp = found.group(1) if found else ""
        return HostKeyChanged(
            host.name, fp, f"the host key of {name} has CHANGED (now {fp or 'unknown'}); refusing to connect",
            hint=f"if the server was really reinstalled, remove the old key: ssh-keygen -R '{name}'")
    if "Host key verification failed" in text or "host key is known for" in text:
        key_type, fp = server_host_key(host) if fingerprint else ("", "")
        shown = f"{key_type} {fp}".strip() or "(ssh-keyscan shows it)"
        return UnknownHostKey(
            host.name, fp, f"unknown host key for {name}: {shown}",
            hint=f"verify the fingerprint, then accept it once with `ssh {host.name}` "
                 "or set `StrictHostKeyChecking accept-new` for this host")
    if any(s in text for s in ("Permission denied", "Too many authentication failures", "No more authentication")):
        tried = [f"{f} (needs a passphrase; no terminal to ask)" if _encrypted(f) else f
                 for f in r.identity_files if os.path.exists(os.path.expanduser(f))]
        return AuthFailed(
            f"authentication as {r.user} on {r.hostname} failed (tried: {', '.join(tried) or 'agent keys only'}; "
            f"ssh said: {said})",
            hint=f"check that `ssh {host.name}` works; without a terminal tbctl cannot ask for a passphrase, "
                 "password or 2FA code (ssh-add loads a key into the agent)")
    if "Could not resolve hostname" in text:
        return Unreachable(f"cannot resolve host {r.hostname!r}",
                           hint=f"is {host.name!r} a Host in your ssh config or a DNS name? "
                                f"(`ssh -G {host.name}` shows what ssh uses)")
    if "Connection refused" in text:
        return Unreachable(f"{display} refused the connection", hint="is sshd running on that port?")
    if "timed out" in text.lower():
        return Unreachable(f"connecting to {display} timed out after {host.connect_timeout:g} s",
                           hint="is the host up and reachable? --connect-timeout sets the limit")
    if "No route to host" in text or "Network is unreachable" in text:
        return Unreachable(f"cannot connect to {display}: {said}")
    return SSHError(f"ssh to {host.name} failed: {said or 'it printed nothing'}",
                    hint=f"`ssh {host.name} true` shows the same problem in full")


def server_host_key(host: OpenSSHHost) -> tuple[str, str]:
    """(key type, SHA256 fingerprint) the server offers, from one more handshake that can accept nothing:
    ssh prints the key at -v before it checks it, and no known_hosts file is in play to be written."""
    argv = host.ssh_argv("-v", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
                         "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "UpdateHostKeys=no",
                         "-o", "ClearAllForwardings=yes",
                         "-o", f"ConnectTimeout={max(1, round(host.connect_timeout))}", command=["true"])
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=host.connect_timeout * 2 + 10)
    except (OSError, subprocess.TimeoutExpired):
        return "", ""
    found = _SERVER_KEY.findall(res.stderr)
    return found[-1] if found else ("", "")


def _encrypted(path: str) -> bool:
    """Whether a private key file needs a passphrase (so BatchMode skipped it without a word)."""
    import base64
    import struct

    try:
        text = open(os.path.expanduser(path), encoding="ascii", errors="replace").read(64 * 1024)
    except OSError:
        return False
    if "ENCRYPTED" in text:  # PEM: "Proc-Type: 4,ENCRYPTED" or "BEGIN ENCRYPTED PRIVATE KEY"
        return True
    body = "".join(ln for ln in text.splitlines() if ln and not ln.startswith("-----"))
    try:
        blob = base64.b64decode(body)
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"  # then the cipher's name, "none" for a key without a passphrase
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    (length,) = struct.unpack(">I", blob[len(magic):len(magic) + 4])
    return blob[len(magic) + 4:len(magic) + 4 + length] != b"none"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("debug", "@@@"))]
    return lines[-1] if lines else ""
