"""Finding TensorBoards on a host and picking the ones a command names."""

from __future__ import annotations

from tbctl.config import parse_port
from tbctl.errors import InstanceNotFound, UsageError
from tbctl.hosts.base import Host
from tbctl.models import TensorBoardInstance
from tbctl.state import StateStore
from tbctl.tensorboard import classify


def list_instances(host: Host, store: StateStore) -> list[TensorBoardInstance]:
    """Every TensorBoard on `host`, ours or not, live or stale, sorted by port."""
    instances = classify(host.scan(), host=host.name, records=store.for_host(host.name))
    return sorted(instances, key=lambda i: (i.port is None, i.port or 0, i.pid or 0))


def select(host: Host, instances: list[TensorBoardInstance], target: str) -> list[TensorBoardInstance]:
    """Instances named by `target`: a port, else a pid, else a logdir (as the host resolves it)."""
    text = target.strip()
    if not text:
        raise UsageError("empty target", hint="give a port, a pid or a logdir")
    if text.isdigit():
        number = int(text)
        by_port = [i for i in instances if i.port == number]
        if by_port:
            return by_port
        by_pid = [i for i in instances if i.pid == number]
        if by_pid:
            return by_pid
        if number > 65535:
            raise InstanceNotFound(host.name, text)
        parse_port(number)  # 0 is not a port: a usage error, not "not found"
        raise InstanceNotFound(host.name, text)
    if text.lstrip("-").isdigit():
        raise UsageError(f"{text!r} is neither a port, a pid nor a logdir", hint="ports and pids are positive")
    resolved, _ = host.resolve_path(text)
    matches = [i for i in instances if i.logdir == resolved]
    if not matches:
        raise InstanceNotFound(host.name, text)
    return matches


def live_for_logdir(instances: list[TensorBoardInstance], logdir: str, user: str) -> TensorBoardInstance | None:
    """A serving instance of `user` for exactly this logdir, if any (what `up` reuses)."""
    for inst in instances:
        if inst.status == "serving" and inst.user == user and inst.logdir == logdir:
            return inst
    return None
