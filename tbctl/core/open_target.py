"""`open`: which TensorBoard to open, and its URL here — a forward's local port, or the one running."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.models import ForwardInfo
    from tbctl.state import StateStore


@dataclass(frozen=True)
class OpenTarget:
    url: str
    host: str
    pid: int | None
    port: int | None  # the TensorBoard's own port (on its host)
    logdir: str | None


def find_target(store: StateStore, target: str | None, host_spec: str | None, *,
                connect: Callable[[], Host]) -> OpenTarget:
    """The TensorBoard `open TARGET` names (the only one running when TARGET is None); `connect` opens its
    host, which a forward's local port spares."""
    from tbctl.core.forwards import list_forwards

    forwards = list_forwards(store)
    chosen = by_forward_port(forwards, target, host_spec)
    if chosen is not None:
        return chosen
    with connect() as host:
        return openable(host, store, forwards, target)


def by_forward_port(forwards: Sequence[ForwardInfo], target: str | None, host_spec: str | None) -> OpenTarget | None:
    """`open 16006`: the local end of a live detached forward names the TensorBoard behind it (no need to
    connect to its host)."""
    if target is None or not target.isdigit():
        return None
    for f in forwards:
        if f.local_port == int(target) and f.tunnel in ("up", "reconnecting") and host_spec in (None, f.host):
            return OpenTarget(url=f.url, host=f.host, pid=f.instance_pid, port=f.remote_port or None,  # 0: private
                              logdir=f.logdir)
    return None


def openable(host: Host, store: StateStore, forwards: Sequence[ForwardInfo], target: str | None) -> OpenTarget:
    from tbctl.core.instances import list_instances, select, with_forwards
    from tbctl.errors import NotFound, UsageError

    instances = [i for i in with_forwards(list_instances(host, store), forwards) if i.may_answer]
    if target is not None:
        chosen = select(host, instances, target)
    elif not instances:
        raise NotFound(f"no TensorBoard running on {host.name}", hint="`tbctl up LOGDIR` starts one")
    elif len(instances) > 1:
        ports = ", ".join(str(i.port) for i in instances)
        raise UsageError(f"{len(instances)} TensorBoards are running on {host.name} (ports {ports}); name one",
                         hint="tbctl open PORT")
    else:
        chosen = instances
    inst = chosen[0]
    if inst.url is None and inst.socket is not None:
        raise NotFound(f"the private TensorBoard pid {inst.pid} on {host.name} has no forward to this machine",
                       hint=f"`tbctl up --host {host.name} --private {inst.logdir or 'LOGDIR'} --open` forwards it "
                            "and opens it")
    if inst.url is None:
        raise NotFound(
            f"TensorBoard pid {inst.pid} on {host.name}:{inst.port} has no forward to this machine",
            hint=f"`tbctl tunnel {host.name} {inst.port} --open` forwards it and opens it",
        )
    return OpenTarget(url=inst.url, host=inst.host, pid=inst.pid, port=inst.port, logdir=inst.logdir)

