"""`down`: stop TensorBoards by port, pid or logdir (or all of this user's), end the background forwards
that lead to them, and clean what they leave."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tbctl.core.forwards import end_forwards
from tbctl.core.instances import launched_as, list_instances, select
from tbctl.core.stopping import terminate
from tbctl.errors import TbctlError, UsageError
from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.records import ForwardRecord
from tbctl.state import StateStore

FAILED = ("denied", "survived", "protected")


@dataclass(frozen=True)
class DownResult:
    outcomes: list[StopOutcome]
    closed_forwards: list[ForwardRecord]  # the forwards ended
    warnings: list[str] = field(default_factory=list)


def down_with_forwards(
    opener: Callable[[str | None], Host], store: StateStore, target: str | None, *, host_spec: str | None,
    all_instances: bool, force: bool, timeout: float,
) -> DownResult:
    """`down LOCAL_PORT` of a detached forward ends that forward; `down --host H` alone every forward to H;
    otherwise the TensorBoards named on the host (`opener(host_spec)`), with the forwards to them, and with
    `--all` here, every forward. A TensorBoard tbctl started for an ended forward stops with it."""
    forwarded = {f.local_port for f in store.forwards()}
    outcomes: list[StopOutcome] = []
    if host_spec is None and target is not None and target.isdigit() and int(target) in forwarded:
        closed = end_forwards(store, lambda r: r.local_port == int(target))
    elif host_spec is not None and target is None and not all_instances:
        closed = end_forwards(store, lambda r: r.host == host_spec)
    else:
        with opener(host_spec) as host:
            outcomes = down(host, store, target, all_instances=all_instances, force=force, timeout=timeout)
            name = host.name
        gone = {o.instance.pid for o in outcomes if o.outcome in ("stopped", "killed", "gone", "cleaned")}
        everything = all_instances and host_spec is None  # everything of ours, here and behind every forward
        closed = end_forwards(store, lambda r: everything or (
            r.host == name and (all_instances or r.instance_pid in gone)))
    stopped = {(o.instance.host, o.instance.pid) for o in outcomes}  # a pid names a process on one host only
    more, warnings = _stop_forwarded_instances(opener, store, [r for r in closed if (r.host, r.instance_pid) not in stopped],
                                               force=force, timeout=timeout)
    return DownResult(outcomes + more, closed, warnings)


def _stop_forwarded_instances(opener: Callable[[str | None], Host], store: StateStore, closed: list[ForwardRecord],
                              *, force: bool, timeout: float) -> tuple[list[StopOutcome], list[str]]:
    """Stop the TensorBoards tbctl started for forwards that were just ended (not reused or kept ones):
    each the very process the forward was made for, by pid *and* start, never whatever has its pid now."""
    by_host: dict[str, list[tuple[int, float]]] = {}
    for rec in closed:
        if rec.stop_instance and rec.instance_pid is not None and rec.instance_create_time is not None:
            by_host.setdefault(rec.host, []).append((rec.instance_pid, rec.instance_create_time))
    outcomes: list[StopOutcome] = []
    warnings: list[str] = []
    for name, identities in by_host.items():
        try:
            with opener(name) as host:
                chosen = [i for i in list_instances(host, store) if i.status in ("serving", "starting")
                          and any(launched_as(i, pid, ct) for pid, ct in identities)]
                outcomes += stop_instances(host, store, chosen, force=force, timeout=timeout)
        except TbctlError as exc:
            warnings.append(f"could not stop the TensorBoard(s) tbctl started on {name}: {exc.message}")
    return outcomes, warnings


def down(
    host: Host, store: StateStore, target: str | None, *, all_instances: bool, force: bool, timeout: float
) -> list[StopOutcome]:
    if target is None and not all_instances:
        raise UsageError("say which TensorBoard to stop", hint="give a port, a pid or a logdir, or --all")
    if target is not None and all_instances:
        raise UsageError("give a target or --all, not both")
    instances = list_instances(host, store)
    if all_instances:
        chosen = [i for i in instances if i.user == host.user]
    else:
        assert target is not None
        chosen = select(host, instances, target)
    return stop_instances(host, store, chosen, force=force, timeout=timeout)


def _remove_socket(host: Host, inst: TensorBoardInstance) -> None:
    """A private instance's socket and directory: its launcher removes them when stopped, not when killed."""
    if inst.socket is not None and inst.user == host.user:
        host.call("remove_private_socket", path=inst.socket)


def stop_instances(
    host: Host, store: StateStore, chosen: list[TensorBoardInstance], *, force: bool, timeout: float
) -> list[StopOutcome]:
    results: list[StopOutcome] = []
    live: list[TensorBoardInstance] = []
    for inst in chosen:
        if inst.status in ("stale", "exited") or inst.pid is None:  # nothing to stop: clean what it left
            removed = inst.info_file is not None and host.remove_info_file(inst.info_file)
            _remove_socket(host, inst)
            results.append(StopOutcome(inst, "cleaned", info_file_removed=removed))
        elif inst.user != host.user and host.user != "root":
            results.append(StopOutcome(inst, "denied"))  # explained by the CLI; we do not try
        else:
            live.append(inst)
    outcomes = terminate(host, [(i.pid, i.create_time) for i in live if i.pid is not None], force=force, timeout=timeout)
    for inst in live:
        assert inst.pid is not None
        outcome = outcomes.get(inst.pid, "gone")
        removed = False
        # TensorBoard removes its info file on SIGTERM, not on SIGKILL nor on Windows' CTRL_BREAK (it has no
        # handler for it): clean up after any end (a file it removed itself is simply not there).
        if outcome in ("stopped", "killed", "gone") and inst.info_file is not None:
            removed = host.remove_info_file(inst.info_file)
        if outcome in ("stopped", "killed", "gone"):
            _remove_socket(host, inst)
        results.append(StopOutcome(inst, outcome, info_file_removed=removed))
    store.remove(host.name, {(r.instance.pid, r.instance.recorded_create_time) for r in results
                             if r.instance.pid is not None and r.outcome not in FAILED})
    return results
