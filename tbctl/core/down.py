"""`down`: stop TensorBoards by port, pid or logdir (or all of this user's), and clean what they leave."""

from __future__ import annotations

from tbctl.core.instances import list_instances, select
from tbctl.core.stopping import terminate
from tbctl.errors import UsageError
from tbctl.hosts.base import Host
from tbctl.models import StopOutcome, TensorBoardInstance
from tbctl.state import StateStore


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


def stop_instances(
    host: Host, store: StateStore, chosen: list[TensorBoardInstance], *, force: bool, timeout: float
) -> list[StopOutcome]:
    results: list[StopOutcome] = []
    live: list[TensorBoardInstance] = []
    for inst in chosen:
        if inst.status == "stale" or inst.pid is None:
            removed = inst.info_file is not None and host.remove_info_file(inst.info_file)
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
        # TensorBoard removes its info file on SIGTERM, not on SIGKILL: clean up after a forced kill.
        if outcome in ("killed", "gone") and inst.info_file is not None:
            removed = host.remove_info_file(inst.info_file)
        results.append(StopOutcome(inst, outcome, info_file_removed=removed))
    store.remove(host.name, {r.instance.pid for r in results if r.instance.pid is not None and r.outcome not in ("denied", "survived", "protected")})
    return results
