"""`tbctl up`: serve a logdir with TensorBoard, here or on an SSH host, forwarded to this machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tbctl.cli.environment import Environment
from tbctl.cli.options import ConnectTimeoutOption, EnvOption, HostOption, JsonOption, StartTimeoutOption, command_env, verb_app
from tbctl.cli.browser import OpenOption, open_in_browser, opens_browser
from tbctl.cli.hosts import flush_warnings, reach, store_of
from tbctl.cli.narrator import SessionNarrator
from tbctl.errors import UsageError

if TYPE_CHECKING:
    from tbctl.core.serve import ServeRequest
    from tbctl.models import UpResult
    from tbctl.state import StateStore

verb = verb_app()


def _split_logdir_and_extra(positional: list[str], logdir_option: str | None) -> tuple[str | None, list[str]]:
    """`up [LOGDIR] [-- TENSORBOARD FLAGS]`: click hands us everything positional after `--` too, so the
    LOGDIR is the first word before any flag-looking word."""
    words = list(positional)
    logdir = logdir_option
    if words and not words[0].startswith("-"):
        if logdir is not None:
            raise UsageError(f"two logdirs given: {logdir!r} and {words[0]!r}")
        logdir = words.pop(0)
    return logdir, words


@verb.command()
def up(
    ctx: typer.Context,
    args: Annotated[Optional[list[str]], typer.Argument(metavar="[LOGDIR] [-- TENSORBOARD_FLAGS...]", show_default=False)] = None,
    logdir_option: Annotated[Optional[str], typer.Option("--logdir", metavar="DIR", help="The logdir (default: runs).")] = None,
    port: Annotated[Optional[str], typer.Option("--port", "-p", metavar="PORT", help="Preferred port (default 6006; the next free one if taken).")] = None,
    host_spec: HostOption = None,
    local_port: Annotated[Optional[str], typer.Option("--local-port", metavar="PORT", help="Remote: the local end of the forward (default port+10000).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Remote: leave TensorBoard running when the forward closes.")] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Remote: forward in the background and return; `tbctl down` ends it.")] = False,
    timeout: StartTimeoutOption = None,
    open_browser: OpenOption = None,
    new: Annotated[bool, typer.Option("--new", help="Start another instance even if one serves this logdir.")] = False,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", metavar="PATH", help="Path of the tensorboard executable.")] = None,
    env_prefix: EnvOption = None,
    connect_timeout: ConnectTimeoutOption = None,
    job: Annotated[Optional[str], typer.Option("--job", metavar="JOB", help="Slurm: serve from inside this running job (ID or ARRAY_TASK), on its node.")] = None,
    job_name: Annotated[Optional[str], typer.Option("--job-name", metavar="NAME", help="Slurm: your newest running job of this name.")] = None,
    node: Annotated[Optional[str], typer.Option("--node", metavar="NODE", help="Slurm: which node of a multi-node job (default: its batch host).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Slurm: wait for a pending job to start.")] = False,
    bind_node_address: Annotated[bool, typer.Option("--bind-node-address", help="Slurm, where ssh to compute nodes is refused: bind the node's cluster address (everyone on that network can reach it) and forward from the login node.")] = False,
    pull: Annotated[Optional[list[str]], typer.Option("--pull", metavar="HOST:LOGDIR", help="Mirror LOGDIR from HOST (repeatable) and serve every mirror in one local TensorBoard, runs named HOST/RUN; nothing runs on the hosts but the polls.")] = None,
    pulls: Annotated[bool, typer.Option("--pulls", help="Pull the config file's `pull` list (with any --pull).")] = False,
    expose_to_network: Annotated[bool, typer.Option("--expose-to-network", help="Let TensorBoard listen beyond 127.0.0.1 (every interface, or the --host given after --): anyone who can reach the host can read the logdir.")] = False,
    private: Annotated[Optional[bool], typer.Option("--private/--no-private", help="Remote: serve on a unix socket only you can open, and on no TCP port: other users of the host cannot reach it (default: `private` in the config file, else no).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Serve LOGDIR with TensorBoard on a free port, verified ready; reuse one already serving it.

    With --host, TensorBoard runs on that machine and is forwarded to localhost:PORT+10000 until Ctrl-C
    (or, with --detach, by a background tbctl process until `tbctl down`). With --job (or --job-name),
    --host is the Slurm login node: TensorBoard runs as a step of that job on its node, forwarded through
    the login node; a relative LOGDIR is relative to the job's WorkDir."""
    from tbctl.core.serve import serve

    env = command_env(ctx, json_output)
    if pull or pulls:
        logdir, extra = _split_logdir_and_extra(args or [], logdir_option)
        if logdir is not None or host_spec is not None:
            raise UsageError("--pull serves the mirrors of the pulled logdirs here; give no LOGDIR and no --host with it")
        other = [flag for flag, given in (("--local-port", local_port), ("--keep", keep), ("--new", new),
                                          ("--env", env_prefix), ("--job", job), ("--job-name", job_name),
                                          ("--node", node), ("--wait", wait), ("--bind-node-address", bind_node_address),
                                          ("--expose-to-network", expose_to_network), ("--private", private)) if given]
        if other:
            raise UsageError(f"{other[0]} does not apply to --pull", hint="see 'tbctl up -h'")
        _pull(env, [*(env.settings.pull if pulls else ()), *(pull or ())], detach=detach, port=port,
              timeout=timeout, tensorboard=tensorboard, connect_timeout=connect_timeout, extra=extra,
              open_browser=open_browser)
        return
    request = request_of(ctx.params)
    store = store_of(env)
    with serve(request, env.settings, reach(env), store, SessionNarrator(env)) as session:
        _announce(env, store, session.result, open_browser=opens_browser(open_browser, env.settings, host_spec))
        if session.background_port is not None:
            job_id = session.result.instance.job
            ends_it = f"--job {job_id} --host {host_spec}" if request.in_job else str(session.background_port)
            env.info(f"forwarding in the background; `tbctl down {ends_it}` ends it")
        session.hold()


def _pull(env: Environment, specs: list[str], *, detach: bool, port: str | None,
          timeout: float | None, tensorboard: str | None, connect_timeout: float | None, extra: list[str],
          open_browser: bool | None) -> None:
    """`up --pull HOST:LOGDIR …`: mirror, serve here, and poll (in the foreground, or in the background)."""
    from tbctl.core.pull import PullRequest, pull_up

    request = PullRequest(specs=tuple(specs), detach=detach, port=port, timeout=timeout, tensorboard=tensorboard,
                          connect_timeout=connect_timeout, extra_args=tuple(extra))
    store = store_of(env)
    with pull_up(request, env.settings, reach(env), store, SessionNarrator(env)) as session:
        _announce(env, store, session.result, open_browser=opens_browser(open_browser, env.settings, None))
        if session.detached:
            env.info(f"pulling in the background; `tbctl down {session.result.instance.port}` ends it "
                     "(the mirror stays until `tbctl down --purge`)")
        session.hold()


def request_of(params: Mapping[str, Any]) -> ServeRequest:
    """core's request from `up`'s parsed parameters (the notebook's `%tbctl up` parses with this command too)."""
    from tbctl.core.serve import ServeRequest

    logdir, extra = _split_logdir_and_extra(list(params["args"] or []), params["logdir_option"])
    return ServeRequest(
        host=params["host_spec"], logdir=logdir, port=params["port"], local_port=params["local_port"],
        timeout=params["timeout"], new=params["new"], tensorboard=params["tensorboard"],
        env_prefix=params["env_prefix"], extra_args=tuple(extra), connect_timeout=params["connect_timeout"],
        keep=params["keep"], detach=params["detach"], job=params["job"], job_name=params["job_name"],
        node=params["node"], wait=params["wait"], bind_node_address=params["bind_node_address"],
        expose_to_network=params["expose_to_network"], private=params.get("private"))


def _announce(env: Environment, store: StateStore, result: UpResult, *, open_browser: bool) -> None:
    """What `up` prints once the URL answers (warnings, then the record), and the browser it opens."""
    from tbctl.cli import render  # only now: TensorBoard is already starting while rich is imported

    flush_warnings(env, store)
    for warning in result.warnings:
        env.warn(warning)
    if env.json:
        render.print_json(env, result)
    else:
        render.up_result(env, result)
    env.stdout.flush()
    if open_browser:
        open_in_browser(env, result.url)


command = typer.main.get_command(verb)
