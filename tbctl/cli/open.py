"""`tbctl open`: a running TensorBoard in the browser."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tbctl.cli import render
from tbctl.cli.completion import complete_targets
from tbctl.cli.options import ConnectTimeoutOption, HostOption, JsonOption, command_env, verb_app
from tbctl.cli.session import browse, connect, store_of

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.models import ForwardInfo
    from tbctl.state import StateStore

verb = verb_app()


@dataclass(frozen=True)
class OpenTarget:
    url: str
    host: str
    pid: int | None
    port: int | None  # the TensorBoard's own port (on its host)
    logdir: str | None


@verb.command("open")
def open_url(
    ctx: typer.Context,
    target: Annotated[Optional[str], typer.Argument(metavar="[PORT|PID|LOGDIR]", show_default=False, autocompletion=complete_targets)] = None,
    host_spec: HostOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Open a running TensorBoard in the browser (the only one, or TARGET); print its URL when there is no
    browser. A remote one opens through its forward (`tbctl up --host H --detach` or `tbctl tunnel`); the
    local port of a forward names it too."""
    from tbctl.core.forwards import list_forwards

    env = command_env(ctx, json_output)
    store = store_of(env)
    forwards = list_forwards(store)
    chosen = _by_forward_port(forwards, target, host_spec)
    if chosen is None:
        with connect(env, host_spec, connect_timeout=connect_timeout) as host:
            chosen = _openable(host, store, forwards, target)
    opened = browse(chosen.url)
    if env.json:
        render.print_json(env, {"url": chosen.url, "opened": opened, "host": chosen.host, "pid": chosen.pid,
                                "port": chosen.port, "logdir": chosen.logdir})
        return
    env.stdout.write(chosen.url + "\n")
    if opened:
        env.info(f"opened {chosen.url} in the browser")
    else:
        env.info("no browser available here; open the URL above yourself")


def _by_forward_port(forwards: Sequence[ForwardInfo], target: str | None, host_spec: str | None) -> OpenTarget | None:
    """`open 16006`: the local end of a live detached forward names the TensorBoard behind it (no need to
    connect to its host)."""
    if target is None or not target.isdigit():
        return None
    for f in forwards:
        if f.local_port == int(target) and f.tunnel in ("up", "reconnecting") and host_spec in (None, f.host):
            return OpenTarget(url=f.url, host=f.host, pid=f.instance_pid, port=f.remote_port, logdir=f.logdir)
    return None


def _openable(host: Host, store: StateStore, forwards: Sequence[ForwardInfo], target: str | None) -> OpenTarget:
    from tbctl.core.instances import list_instances, select, with_forwards
    from tbctl.errors import NotFound, UsageError

    instances = [i for i in with_forwards(list_instances(host, store), forwards) if i.status in ("serving", "starting")]
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
    if inst.url is None:
        raise NotFound(
            f"TensorBoard pid {inst.pid} on {host.name}:{inst.port} has no forward to this machine",
            hint=f"`tbctl tunnel {host.name} {inst.port} --open` forwards it and opens it",
        )
    return OpenTarget(url=inst.url, host=inst.host, pid=inst.pid, port=inst.port, logdir=inst.logdir)


command = typer.main.get_command(verb)
