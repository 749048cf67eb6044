"""`%tbctl`: the IPython magic (`%load_ext tbctl`). `%tbctl up [LOGDIR] [--host H] [--port P] …` shows the
dashboard inline and returns its `Dashboard`; `%tbctl ls` and `%tbctl down …` print what the commands print.

Each verb's words are parsed by the command's own parser (the same options, defaults and checks), plus
tbctl's global `--ssh` (before the verb or among its options) and `--notebook-url` for `up`. The browser showing the notebook may not be on the machine running the kernel:
behind JupyterHub or with TensorBoard's `TENSORBOARD_PROXY_URL` (e.g. `/proxy/%PORT%/`) the frame goes
through jupyter-server-proxy, a URL relative to the Jupyter server; in a kernel reached over SSH with no
proxy, the magic prints the `tbctl tunnel` line to run where the browser is.
"""

from __future__ import annotations

import html
import os
import shlex
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbctl.api import Dashboard
    from tbctl.cli.environment import Environment

FRAME_HEIGHT = 800  # pixels: the scalars dashboard with a few charts, as TensorBoard's own magic shows it


def register(ipython: Any) -> None:
    ipython.register_magic_function(tbctl_magic, magic_kind="line", magic_name="tbctl")


def url_mode(asked: str, env: Mapping[str, str]) -> str:
    """How the notebook's browser reaches the kernel's machine. `auto`: through the Jupyter server's proxy
    when one is announced (JupyterHub, TENSORBOARD_PROXY_URL), as a tunnel to print when the kernel runs
    in an SSH session (the browser is elsewhere), else directly (browser and kernel on one machine)."""
    if asked != "auto":
        return asked
    if env.get("TENSORBOARD_PROXY_URL") or env.get("JUPYTERHUB_SERVICE_PREFIX"):
        return "proxy"
    if env.get("SSH_CONNECTION"):
        return "tunnel"
    return "direct"


def proxied_url(port: int, path_prefix: str, env: Mapping[str, str]) -> str:
    """The dashboard through jupyter-server-proxy, relative to the Jupyter server: TENSORBOARD_PROXY_URL with
    %PORT% replaced (TensorBoard's own notebook convention), else JupyterHub's single-user server prefix
    followed by `proxy/PORT/`."""
    template = env.get("TENSORBOARD_PROXY_URL")
    if template:
        base = template.replace("%PORT%", str(port))
    else:
        base = env.get("JUPYTERHUB_SERVICE_PREFIX", "/").rstrip("/") + f"/proxy/{port}/"
    base = base if base.endswith("/") else base + "/"
    prefix = path_prefix.strip("/")
    return base + (prefix + "/" if prefix else "")


def tunnel_line(port: int) -> str:
    """What to run on the machine with the browser: the kernel's port on the same local port, so the frame's
    URL works there as it is."""
    return f"tbctl tunnel {socket.gethostname()} {port} --local-port {port}"


def frame(dashboard: Dashboard, mode: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(the frame's URL, a line to print first or "")."""
    port = dashboard.local_port
    assert port is not None
    if mode == "proxy":
        return proxied_url(port, dashboard.instance.path_prefix, env), ""
    if mode == "tunnel":
        return dashboard.url, f"the browser is elsewhere: run this there, then reload:\n  {tunnel_line(port)}"
    return dashboard.url, ""


def frame_html(url: str, dashboard: Dashboard) -> str:
    link = html.escape(url, quote=True)
    what = html.escape(f"TensorBoard pid {dashboard.pid} on {dashboard.host} serving {dashboard.logdir}"
                       + (" (reused)" if dashboard.reused else ""))
    return (f'<div><a href="{link}" target="_blank" rel="noopener">{link}</a> &middot; {what}</div>'
            f'<iframe src="{link}" width="100%" height="{FRAME_HEIGHT}" frameborder="0"></iframe>')


def _parse(verb: str, words: list[str], extra: list[Any]) -> dict[str, Any] | None:
    """The verb's own command parses `words` (None when it printed its help)."""
    import importlib

    from tbctl.cli.app import COMMANDS, ClickUsageError

    module, attribute = COMMANDS[verb].split(":")
    command = getattr(importlib.import_module(module), attribute)
    parser = type(command)(name=command.name, params=[*command.params, *extra], help=command.help,
                           context_settings=command.context_settings,
                           rich_markup_mode=getattr(command, "rich_markup_mode", None))
    try:
        return dict(parser.make_context(f"%tbctl {verb}", words).params)
    except ClickUsageError:
        raise
    except Exception as exc:  # click's Exit after --help: it printed the help
        if type(exc).__name__ == "Exit":
            return None
        raise


def _notebook_url_option() -> Any:
    from typer.core import TyperOption

    from tbctl.config import NOTEBOOK_URLS

    return TyperOption(param_decls=["--notebook-url"], default=None, metavar="|".join(NOTEBOOK_URLS),
                       help="How the browser reaches the dashboard (default: the notebook_url setting).")


def _ssh_option() -> Any:
    from typer.core import TyperOption

    return TyperOption(param_decls=["--ssh"], default=None, metavar="openssh|paramiko",
                       help="SSH client for remote hosts, as tbctl's global --ssh (default: the ssh setting).")


def _global_ssh(words: list[str]) -> tuple[str | None, list[str]]:
    """`--ssh X` or `--ssh=X` before the verb, where the command line has it (`tbctl --ssh X up …`)."""
    if words[:1] == ["--ssh"] and len(words) > 1:
        return words[1], words[2:]
    if words and words[0].startswith("--ssh="):
        return words[0].split("=", 1)[1], words[1:]
    return None, words


def run(line: str, env: Environment, *, environ: Mapping[str, str] = os.environ) -> Any:
    """`%tbctl LINE`: what the cell returns (up: the Dashboard; ls and down print their tables)."""
    from tbctl.errors import UsageError

    ssh, words = _global_ssh(shlex.split(line))
    if not words or words[0] not in ("up", "ls", "down"):
        raise UsageError("use %tbctl up [LOGDIR] [OPTIONS], %tbctl ls or %tbctl down [PORT|PID|LOGDIR|--all]",
                         hint="each takes the options of the tbctl command of that name (--help lists them)")
    verb, words = words[0], words[1:]
    if verb == "up":
        return _up(words, env, environ, ssh)
    from tbctl import api
    from tbctl.cli import render

    params = _parse(verb, words, [_ssh_option()])
    if params is None:
        return None
    ssh = params["ssh"] or ssh
    if verb == "ls":
        listing = api.ls(params["hosts"] or None, all_hosts=params["all_hosts"],
                         connect_timeout=params["connect_timeout"], ssh=ssh)
        render.instances_table(env, listing.instances, errors=listing.errors, show_host=listing.elsewhere)
        render.forwards_table(env, listing.forwards)
        return None  # the table says it all; tbctl.ls() returns the records
    ended = api.down(params["target"], host=params["host_spec"], all=params["all_instances"], force=params["force"],
                     timeout=params["timeout"], connect_timeout=params["connect_timeout"], job=params["job"], ssh=ssh)
    for warning in ended.warnings:
        env.warn(warning)
    render.stop_outcomes(env, ended.outcomes, closed_forwards=ended.closed_forwards)
    return None


def _up(words: list[str], env: Environment, environ: Mapping[str, str], ssh: str | None) -> Dashboard | None:
    from IPython.display import HTML, display

    from tbctl import api
    from tbctl.cli.up import request_of

    params = _parse("up", words, [_notebook_url_option(), _ssh_option()])
    if params is None:
        return None
    if params["open_browser"] is not None or params["json_output"]:
        from tbctl.errors import UsageError

        raise UsageError("--open/--no-open and --json do not apply in a notebook: the dashboard shows in the cell",
                         hint="the returned Dashboard has the record (.result)")
    if params.get("pull") or params.get("pulls"):  # a pull polls as long as it runs; a cell returns
        from tbctl.errors import UsageError

        raise UsageError("--pull and --pulls do not apply in a notebook: a pull polls for as long as it runs",
                         hint="run `tbctl up --pull HOST:LOGDIR --detach` in a terminal")
    mode = url_mode(params["notebook_url"] or env.settings.notebook_url, environ)
    if mode not in ("direct", "proxy", "tunnel"):
        from tbctl.errors import UsageError

        raise UsageError(f"--notebook-url {mode!r} is not a way to reach the dashboard",
                         hint="use auto, direct, proxy or tunnel")
    dashboard = api.serve_request(request_of(params), ssh=params["ssh"] or ssh, messages=env.info)
    for warning in dashboard.result.warnings:
        env.warn(warning)
    url, note = frame(dashboard, mode, environ)
    if note:
        env.info(note)
    display(HTML(frame_html(url, dashboard)))
    return dashboard


def tbctl_magic(line: str) -> Any:
    """%tbctl [--ssh openssh|paramiko] up [LOGDIR] [--host H] [--port P] [--new] [--detach] [--notebook-url MODE] …
    | ls | down …"""
    import sys

    from tbctl.cli.app import ClickUsageError, show_error
    from tbctl.cli.environment import Environment
    from tbctl.errors import TbctlError

    env = Environment(stdout=sys.stdout, stderr=sys.stderr)
    try:
        return run(line, env)
    except TbctlError as exc:  # a user's error as the command prints it, without a traceback
        show_error(env, exc)
    except ClickUsageError as exc:
        env.error(exc.format_message(), "see '%tbctl " + (line.split() or ["up"])[0] + " --help'")
    return None
