"""`tbctl config path|show`: where the config file is and what tbctl makes of it."""

from __future__ import annotations

from typing import Any

import typer

from tbctl.cli import render
from tbctl.cli.options import JsonOption, command_env, verb_app

config_app = verb_app(
    name="config",
    no_args_is_help=True,
    help="Where the config file is and what tbctl makes of it (defaults < file < TBCTL_* environment < flags).",
)


@config_app.command("path")
def config_path_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print the path of the config file (TBCTL_CONFIG, else the user config dir), existing or not."""
    from tbctl.config import config_path

    env = command_env(ctx, json_output)
    path = config_path(env.environ)
    if env.json:
        render.print_json(env, {"path": str(path), "exists": path.is_file()})
    else:
        env.stdout.write(f"{path}\n")
        if not path.is_file():
            env.info("(no such file yet: tbctl uses its defaults)")


@config_app.command("show")
def config_show(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print the settings in effect, each with where it came from (default, file or environment)."""
    from tbctl.cli.hosts import ssh_reach
    from tbctl.config import settings_as_dict, top_level_rows

    env = command_env(ctx, json_output)
    view = settings_as_dict(env.settings)
    backend = ssh_reach(env).backend_choice(None)
    view |= {"ssh_in_effect": backend.name, "ssh_reason": backend.reason}
    if env.json:
        render.print_json(env, view)
        return
    status = "" if view["config_loaded"] else "  (not found)"
    out = [f"# config file: {view['config_file']}{status}", f"# state dir: {view['state_dir']}"]
    out.append(f"# SSH backend in effect: {backend.name} ({backend.reason})")
    for row in top_level_rows(env.settings):
        line = f"{row.key} = {_toml(row.value)}" if row.value not in (None, []) else f"# {row.key} (not set)"
        out.append(f"{line:<48} # {row.source}")
    for name, section in view["hosts"].items():
        out.append(f"\n[hosts.{_toml_key(name)}]")
        out.extend(f"{key} = {_toml(value)}" for key, value in section.items() if value not in (None, []))
    env.stdout.write("\n".join(out) + "\n")


def _toml(value: Any) -> str:
    import json

    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)  # strings, numbers and lists of strings are the same in TOML


def _toml_key(name: str) -> str:
    import json
    import re

    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


command = typer.main.get_command(config_app)
