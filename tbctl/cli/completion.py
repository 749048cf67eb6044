"""TAB completion values. Runs on every TAB press: never imports paramiko, and reads only local files."""

from __future__ import annotations


def complete_hosts(incomplete: str) -> list[str]:
    """`--host`: Host aliases from ~/.ssh/config (no patterns)."""
    from tbctl.hosts.ssh_config import config_aliases

    return [a for a in config_aliases() if a.startswith(incomplete)]


def complete_targets(incomplete: str) -> list[str]:
    """`down`'s target: ports of the TensorBoards running here."""
    from tbctl.cli.environment import Environment
    from tbctl.core.instances import list_instances
    from tbctl.hosts.local import LocalHost
    from tbctl.state import StateStore

    settings = Environment().settings
    instances = list_instances(LocalHost(settings.state_dir), StateStore(settings.state_dir))
    ports = sorted({str(i.port) for i in instances if i.port is not None and i.status != "stale"})
    return [p for p in ports if p.startswith(incomplete)]
