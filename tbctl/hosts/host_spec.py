"""A host as the user names it, whichever SSH backend reaches it: `[user@]host[:port]` and its checks,
the aliases in ssh_config (for completion and `ls --all-hosts`), the ssh_config file in use, and what tbctl
calls a host reached through a jump host."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tbctl.errors import UsageError

DEFAULT_CONNECT_TIMEOUT = 10.0

# What a host spec may hold: a name of letters, digits, `.`, `-` and `_` (or an IPv6 literal in brackets,
# with a zone), an optional `user@` of the same characters, an optional `:port`. Nothing a shell would read:
# paramiko runs `Match exec` through a shell with %h filled in, and ssh_config's tokens reach ProxyCommand.
_NAME = r"[A-Za-z0-9._-]+"
_SPEC = re.compile(rf"^(?:(?P<user>{_NAME})@)?(?P<host>{_NAME}|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\])"
                   r"(?::(?P<port>[0-9]+))?$")
_HOST_NAME = re.compile(rf"^{_NAME}$")
SPEC_HINT = "use an ssh_config alias or [user@]host[:port] (letters, digits, '.', '-', '_'; IPv6 in [brackets])"


def parse_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (IPv6 literals in brackets) → (user, host, port); UsageError for anything else,
    before any SSH backend sees it."""
    if spec.strip().startswith("-"):  # `ssh -oProxyCommand=…` would run it: option injection
        raise UsageError(f"{spec!r} is not a host: a host must not start with '-'", hint=SPEC_HINT)
    match = _SPEC.match(spec.strip())
    if not match:
        raise UsageError(f"{spec!r} is not a host", hint=SPEC_HINT)
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"port {port} in {spec!r} is out of range")
    return match["user"], match["host"].strip("[]"), port


def is_host_name(text: str) -> bool:
    """Whether `text` is a bare host name tbctl may hand to ssh (letters, digits, `.`, `-`, `_`; no leading
    `-`): what a remote's answer naming a host (a Slurm node) must be."""
    return bool(_HOST_NAME.match(text)) and not text.startswith("-")


def ssh_config_path() -> Path:
    """`TBCTL_SSH_CONFIG` (like `ssh -F`), else ~/.ssh/config."""
    override = os.environ.get("TBCTL_SSH_CONFIG")
    return Path(override).expanduser() if override else Path("~/.ssh/config").expanduser()


def config_aliases(path: Path | None = None) -> list[str]:
    """Concrete Host names in ssh_config and the files it Includes (no patterns): for completion and
    `ls --all-hosts`. Read as text, never by running ssh (TAB must stay instant)."""
    names: list[str] = []
    _collect_aliases(path or ssh_config_path(), names, set())
    return list(dict.fromkeys(names))


def _collect_aliases(path: Path, names: list[str], seen: set[Path], depth: int = 0) -> None:
    import glob
    import shlex

    if depth > 16 or path in seen:  # OpenSSH's own Include depth limit; and no loops
        return
    seen.add(path)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        try:
            words = shlex.split(line.strip().replace("=", " ", 1), comments=True)
        except ValueError:
            continue
        if len(words) >= 2 and words[0].lower() == "host":
            names.extend(w for w in words[1:] if not any(c in w for c in "*?!"))
        elif len(words) >= 2 and words[0].lower() == "include":
            for pattern in words[1:]:
                # a relative Include is relative to ~/.ssh, as OpenSSH reads a user config (even under -F)
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for found in sorted(glob.glob(pattern)):
                    _collect_aliases(Path(found), names, seen, depth + 1)


def jumped_name(jump: str, spec: str) -> str:
    """What tbctl calls a host reached through a jump host (records, `ls`, the forwarder's files)."""
    return f"{jump}/{spec}"


def ssh_config_override() -> str | None:
    """TBCTL_SSH_CONFIG is `ssh -F`: that file instead of ~/.ssh/config (and of /etc/ssh/ssh_config)."""
    value = os.environ.get("TBCTL_SSH_CONFIG")
    return os.path.expanduser(value) if value else None
