"""The SSH connections tbctl keeps open between commands (its own ControlMasters), listed and closed.
A user's own ControlMaster is never among them: tbctl rides it and leaves it alone."""

from __future__ import annotations

from pathlib import Path

from tbctl.errors import NotFound
from tbctl.hosts.openssh.masters import KeptConnection, close_kept_connections, kept_connections

__all__ = ["KeptConnection", "close", "list_kept"]


def list_kept(state_dir: Path) -> list[KeptConnection]:
    return kept_connections(state_dir)


def close(state_dir: Path, host: str | None) -> list[KeptConnection]:
    """Close tbctl's connections to `host` (None: all of them). Naming a host with none is exit 4."""
    closed = close_kept_connections(state_dir, host)
    if host is not None and not closed:
        raise NotFound(f"tbctl keeps no SSH connection to {host}", hint="`tbctl connections` lists them")
    return closed
