"""What `ssh HOST` would use under paramiko: `[user@]host[:port]` on the command line merged with ~/.ssh/config
(paramiko's SSHConfig parser, so Host patterns, Match and %-tokens behave as OpenSSH documents them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tbctl.errors import SSHError
from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT, parse_spec, ssh_config_path

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")
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


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on")


def resolve(spec: str, *, connect_timeout: float | None = None, config_path: Path | None = None) -> SSHTarget:
    from tbctl.hosts.paramiko.library import enable_match_exec, paramiko

    user, host, port = parse_spec(spec)
    path = config_path or ssh_config_path()
    config = paramiko.SSHConfig()
    if path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(path))
        except Exception as exc:  # paramiko raises several types for a malformed file
            raise SSHError(f"cannot read {path}: {exc}") from exc
    try:
        options = config.lookup(host)
    except ImportError:  # a `Match exec` line, which paramiko runs with invoke, skipped when none was seen at start
        try:
            enable_match_exec()
        except ImportError:
            raise SSHError(f"{path} has a `Match exec` line, and the paramiko backend needs invoke to run it",
                           hint="pip install invoke, or use --ssh openssh") from None
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


def _local_user() -> str:
    import getpass

    return getpass.getuser()
