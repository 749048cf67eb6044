"""Which SSH client carries a remote host: the system OpenSSH client (the default where it can multiplex)
or tbctl's own paramiko one (for machines with no usable OpenSSH client)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbctl.errors import UsageError
from tbctl.hosts.host_spec import jumped_name, ssh_config_override
from tbctl.hosts.openssh.client import NO_MULTIPLEXING, openssh_client

if TYPE_CHECKING:
    from tbctl.hosts.base import Host

BACKENDS = ("openssh", "paramiko")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # openssh | paramiko
    reason: str  # why, for `tbctl config show`


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
        from tbctl.hosts.openssh.host import OpenSSHHost

        return OpenSSHHost(spec, state_dir=state_dir, terminal=terminal, connect_timeout=connect_timeout,
                           env_prefix=env_prefix, persist=persist, config_file=ssh_config_override(), jump=jump)
    from dataclasses import replace

    from tbctl.hosts.paramiko.host import SSHHost
    from tbctl.hosts.host_spec import parse_spec
    from tbctl.hosts.paramiko.config import resolve

    target = None
    if jump is not None:
        parse_spec(jump)  # refuses a jump host that would read as an option
        target = replace(resolve(spec, connect_timeout=connect_timeout), proxy_jump=(jump,), proxy_command=None)
    host = SSHHost(spec, prompter=terminal, connect_timeout=connect_timeout, env_prefix=env_prefix, target=target)
    if jump is not None:
        host.name = jumped_name(jump, spec)
    return host
