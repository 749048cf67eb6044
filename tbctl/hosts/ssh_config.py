"""What `ssh HOST` would use: `[user@]host[:port]` on the command line merged with ~/.ssh/config
(paramiko's SSHConfig parser, so Host patterns, Match and %-tokens behave as OpenSSH documents them)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tbctl.errors import SSHError, UsageError

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE = 15  # seconds; OpenSSH's default is none, which lets a dead link go unnoticed for minutes
DEFAULT_KEEPALIVE_COUNT = 3  # OpenSSH's ServerAliveCountMax default
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")  # where clusters put keys


@dataclass(frozen=True)
class SSHTarget:
    name: str  # what the user typed: the alias tbctl shows and records
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: tuple[str, ...]
    proxy_command: str | None
    server_alive_interval: int
    strict_host_key_checking: str  # yes | no | accept-new | ask
    known_hosts_files: tuple[str, ...]
    host_key_alias: str | None
    connect_timeout: float
    server_alive_interval_set: bool = False  # whether ssh_config gave ServerAliveInterval
    server_alive_count_max: int = DEFAULT_KEEPALIVE_COUNT  # unanswered pings before the link counts as dead
    global_known_hosts_files: tuple[str, ...] = DEFAULT_GLOBAL_KNOWN_HOSTS  # read, never written
    hash_known_hosts: bool = False  # HashKnownHosts: a key we add is written as |1|salt|hash

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts line carries for this server (OpenSSH's `[host]:port` form off port 22)."""
        host = self.host_key_alias or self.hostname
        return host if self.port == 22 else f"[{host}]:{self.port}"

    @property
    def display(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


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


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on")


def resolve(spec: str, *, connect_timeout: float | None = None, config_path: Path | None = None) -> SSHTarget:
    from tbctl.hosts.paramiko_import import paramiko

    user, host, port = parse_spec(spec)
    path = config_path or ssh_config_path()
    config = paramiko.SSHConfig()
    if path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(path))
        except Exception as exc:  # paramiko raises several types for a malformed file
            raise SSHError(f"cannot read {path}: {exc}") from exc
    options = config.lookup(host)
    hostname = options.get("hostname", host)
    try:
        final_port = port or int(options.get("port", 22))
    except ValueError:
        raise SSHError(f"bad Port in {path} for {host}: {options.get('port')!r}") from None
    final_user = user or options.get("user") or _local_user()
    identity_files = tuple(os.path.expanduser(f) for f in options.get("identityfile", []))
    jump = options.get("proxyjump")
    hops = tuple(h.strip() for h in jump.split(",")) if jump and jump.lower() != "none" else ()
    proxy_command = options.get("proxycommand")
    if proxy_command and proxy_command.lower() == "none":
        proxy_command = None
    known = options.get("userknownhostsfile")
    known_files = tuple(os.path.expanduser(f) for f in known.split()) if known else (
        os.path.expanduser("~/.ssh/known_hosts"),
    )
    global_known = options.get("globalknownhostsfile")
    global_files = DEFAULT_GLOBAL_KNOWN_HOSTS if global_known is None else tuple(
        os.path.expanduser(f) for f in global_known.split() if f.lower() != "none")
    timeout = connect_timeout
    if timeout is None:
        timeout = float(options["connecttimeout"]) if options.get("connecttimeout", "").isdigit() else DEFAULT_CONNECT_TIMEOUT
    alive = options.get("serveraliveinterval", "")
    count = options.get("serveralivecountmax", "")
    return SSHTarget(
        name=spec,
        hostname=hostname,
        port=final_port,
        user=final_user,
        identity_files=identity_files,
        identities_only=_yes(options.get("identitiesonly")),
        proxy_jump=hops,
        proxy_command=proxy_command,
        server_alive_interval=int(alive) if alive.isdigit() else DEFAULT_KEEPALIVE,
        strict_host_key_checking=(options.get("stricthostkeychecking") or "ask").lower(),
        known_hosts_files=known_files,
        host_key_alias=options.get("hostkeyalias"),
        connect_timeout=timeout,
        server_alive_interval_set=alive.isdigit(),
        server_alive_count_max=max(1, int(count)) if count.isdigit() else DEFAULT_KEEPALIVE_COUNT,
        global_known_hosts_files=global_files,
        hash_known_hosts=_yes(options.get("hashknownhosts")),
    )


def default_identity_files() -> list[str]:
    return [str(p) for name in DEFAULT_IDENTITIES if (p := Path("~/.ssh").expanduser() / name).is_file()]


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


def _local_user() -> str:
    import getpass

    return getpass.getuser()
