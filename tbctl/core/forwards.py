"""Detached forwards: what `ls` shows of them (tunnel health and TensorBoard health, separately) and how
`down` ends them. The background forwarders themselves live in tbctl/daemon.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tbctl import daemon
from tbctl.core.expose import PRIVATE_LOCAL_BASE, choose_local_port, require_listener, verify_http
from tbctl.errors import SSHError
from tbctl.hosts.base import Host
from tbctl.models import ForwardInfo, TensorBoardInstance
from tbctl.records import ForwarderStatus, ForwardRecord
from tbctl.state import StateStore


def list_forwards(store: StateStore) -> list[ForwardInfo]:
    """Every detached forward, from the records and the forwarders' own status files. A status file
    whose process is gone (killed, machine rebooted) is reported as stale, never as up."""
    statuses = {s.host: s for s in store.forwarder_statuses()}
    out: list[ForwardInfo] = []
    seen: set[tuple[str, int]] = set()
    for host, status in statuses.items():
        running = daemon.is_running(status)
        link = status.link
        for row in status.forwards:
            seen.add((host, row.forward.local_port))
            out.append(_info(row.forward, status, tunnel=(link.state if link else "down") if running else "stale",
                             since=link.since if link else None, attempts=link.attempts if link else 0,
                             error=row.error or (link.error if link and link.state != "up" else ""),
                             tensorboard=row.tensorboard if running else "unknown",
                             via=link.via if link and running else ""))
    for rec in store.forwards():
        if (rec.host, rec.local_port) not in seen:  # recorded, but no forwarder reports it
            known = statuses.get(rec.host)
            state = "stale" if known is not None and not daemon.is_running(known) else "down"
            out.append(_info(rec, known, tunnel=state, since=None, attempts=0,
                             error="" if state == "stale" else "no forwarder is serving it", tensorboard="unknown"))
    return sorted(out, key=lambda f: (f.host, f.local_port))


def _info(rec: ForwardRecord, status: ForwarderStatus | None, *, tunnel: str, since: float | None, attempts: int,
          error: str, tensorboard: str, via: str = "") -> ForwardInfo:
    return ForwardInfo(
        host=rec.host, local_port=rec.local_port, remote_port=rec.remote_port,
        instance_pid=rec.instance_pid, logdir=rec.logdir, tunnel=tunnel,  # type: ignore[arg-type]
        tensorboard=tensorboard, since=since, attempts=attempts, error=error,  # type: ignore[arg-type]
        forwarder_pid=status.pid if status else None, stop_instance=rec.stop_instance,
        path_prefix=rec.path_prefix, via=via, remote_socket=rec.remote_socket,
    )


def add_forward(store: StateStore, *, host: str, local_port: int, remote_port: int, instance_pid: int | None,
                instance_create_time: float | None, logdir: str | None, path_prefix: str,
                stop_instance: bool, instance_start_ticks: int | None = None, remote_socket: str | None = None) -> None:
    store.add_forward(ForwardRecord(
        host=host, local_port=local_port, remote_port=remote_port, instance_pid=instance_pid,
        instance_create_time=instance_create_time, instance_start_ticks=instance_start_ticks,
        logdir=logdir, path_prefix=path_prefix, stop_instance=stop_instance, remote_socket=remote_socket,
    ))


def end_forwards(store: StateStore, match: Callable[[ForwardRecord], bool]) -> list[ForwardRecord]:
    """Remove matching forward records (their forwarder closes them within a second and exits when it has
    none left); a forwarder that is stale, or left with nothing to serve, is cleaned up here. Each host's
    check-then-stop runs under the lock `--detach` takes to add a forward, so a forward added meanwhile
    keeps its forwarder."""
    removed = store.remove_forwards(match)
    retire_idle_forwarders(store)
    return removed


def retire_idle_forwarders(store: StateStore) -> None:
    """Stop each background forwarder left with nothing to serve (no forward, no pull), and forget the
    status of one whose process is gone."""
    for status in store.forwarder_statuses():
        host = status.host
        with store.lock(f"forwarder-{host}"):
            if not daemon.is_running(status):
                store.remove_forwarder_status(host)  # a record that outlived its process
            elif not daemon.has_work(store, host):
                daemon.stop(status)
                store.remove_forwarder_status(host)


def detach_warning(host: Host) -> str:
    """What the user should know before a forward goes to the background ("" when nothing), or SSHError when
    it cannot: a forwarder that opens its own connection cannot type a passphrase, password or 2FA answer.
    Asked before anything is started, so a refusal leaves nothing behind."""
    if not host.interactive_auth:
        return ""
    if not host.shared_connection:
        raise SSHError(
            f"--detach needs key or agent authentication to {host.name}: a background forwarder cannot type a "
            "passphrase, password or 2FA answer when it reconnects",
            hint="load your key into ssh-agent (ssh-add), or run without --detach",
        )
    return (f"the background forward rides this SSH connection to {host.name}, which needed a person's answer: "
            "if the connection drops, run the command again to reconnect")


def live_forward(store: StateStore, host: str, remote_port: int, remote_socket: str | None = None) -> ForwardInfo | None:
    """A background forward to `host`:`remote_port` (or to its unix socket `remote_socket`) that its forwarder
    keeps up (or is re-making), if any: what a second `--detach` or an `up` of the same instance reuses
    rather than opening another port."""
    return next((f for f in list_forwards(store) if f.host == host and f.remote_port == remote_port
                 and f.remote_socket == remote_socket and f.tunnel in ("up", "reconnecting")), None)


def reusing_note(forward: ForwardInfo) -> str:
    return f"reusing the background forward to {forward.host}:{forward.remote_end} on 127.0.0.1:{forward.local_port}"


@dataclass(frozen=True)
class Detached:
    local_port: int
    warning: str = ""
    reused: ForwardInfo | None = None  # the live background forward used instead of a new one


def detach_forward(host: Host, local: Host, store: StateStore, *, backend: str, remote_port: int,
                   local_port: int | None, instance: TensorBoardInstance | None, stop_instance: bool,
                   check_path: str | None, connect_timeout: float | None = None,
                   env_prefix: str | None = None, route: tuple[str, str] | None = None,
                   remote_socket: str | None = None) -> Detached:
    """Hand a forward to the host's background forwarder and verify it answers. `route` (spec, jump): the
    host is reached through a jump host (a job's compute node through its login node). `remote_socket`: to a
    private instance's unix socket (remote_port is then 0)."""
    warning = detach_warning(host)
    existing = live_forward(store, host.name, remote_port, remote_socket)
    if existing is not None and local_port in (None, existing.local_port):
        return Detached(existing.local_port, warning, reused=existing)
    if check_path is None:
        require_listener(host, remote_port)
    port = choose_local_port(local, remote_port or PRIVATE_LOCAL_BASE, local_port)
    add_forward(store, host=host.name, local_port=port, remote_port=remote_port,
                instance_pid=instance.pid if instance else None,
                instance_create_time=instance.create_time if instance else None,
                instance_start_ticks=instance.start_ticks if instance else None,
                logdir=instance.logdir if instance else None,
                path_prefix=instance.path_prefix if instance else "", stop_instance=stop_instance,
                remote_socket=remote_socket)
    try:
        forwarder = daemon.ensure_running(store, host.name, backend=backend, connect_timeout=connect_timeout,
                                          env_prefix=env_prefix, route=route)
        if forwarder.backend and forwarder.backend != backend:
            # one forwarder per host: starting another over the other backend would hold the same host twice
            warning = "; ".join(filter(None, [warning, (
                f"the forward joins the background forwarder that serves {host.name} over {forwarder.backend}, "
                f"not {backend}: it keeps that backend until its last forward ends")]))
        daemon.wait_listening(store, host.name, port)
        if check_path is not None:
            verify_http(local, port, check_path, what=f"{host.name}:{remote_socket or remote_port}")
    except BaseException:
        end_forwards(store, lambda r: r.host == host.name and r.local_port == port)
        raise
    return Detached(port, warning)
