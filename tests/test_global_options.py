"""tbctl's own options (`--quiet`, `--debug`, `--json`, …) work after the command as well as before it,
never reach past a literal `--`, and a value-taking one does not hide the command's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, http_get
from tbctl.cli.app import GLOBAL_OPTIONS, GlobalOption, app, command_index, hoist_global_options

# The table with a value-taking option that also has a short name: the rules must hold for it too.
WITH_VALUE = (*(o for o in GLOBAL_OPTIONS if "--ssh" not in o.names), GlobalOption(("--ssh", "-S"), takes_value=True))


def test_the_table_is_the_root_commands_options() -> None:
    """GLOBAL_OPTIONS is read before click parses; it must name exactly the options of `tbctl` itself."""
    root = typer.main.get_command(app)
    declared = {tuple(sorted(p.opts + p.secondary_opts)): not p.is_flag  # type: ignore[attr-defined]
                for p in root.params if p.param_type_name == "option"}
    assert declared == {tuple(sorted(o.names)): o.takes_value for o in GLOBAL_OPTIONS}


@pytest.mark.parametrize(("args", "index"), [
    (["ls"], 0),
    (["-q", "--debug", "ls", "-q"], 2),
    (["--ssh", "gpu1", "ls"], 2),  # the value is not the command
    (["--ssh=gpu1", "ls"], 1),
    (["-Sgpu1", "ls"], 1),
    (["--help"], None),
    ([], None),
    (["--", "ls"], None),
])
def test_the_command_name_skips_global_options_and_their_values(args: list[str], index: int | None) -> None:
    assert command_index(args, options=WITH_VALUE) == index


@pytest.mark.parametrize(("args", "hoisted"), [
    (["up", "-q", "runs"], ["-q", "up", "runs"]),
    (["up", "runs", "--debug", "--quiet"], ["--debug", "--quiet", "up", "runs"]),
    (["ls", "--ssh", "gpu1", "-H", "x"], ["--ssh", "gpu1", "ls", "-H", "x"]),
    (["ls", "--ssh=gpu1"], ["--ssh=gpu1", "ls"]),
    (["-q", "config", "show", "--debug"], ["-q", "--debug", "config", "show"]),
    # after `--` everything is TensorBoard's
    (["up", "runs", "--", "--samples_per_plugin", "x", "-q"], ["up", "runs", "--", "--samples_per_plugin", "x", "-q"]),
    (["up", "-q", "runs", "--", "--debug"], ["-q", "up", "runs", "--", "--debug"]),
    # the value of a command's own option stays that option's, however it looks
    (["up", "--tensorboard", "--debug", "runs"], ["up", "--tensorboard", "--debug", "runs"]),
    (["up", "--logdir=-q"], ["up", "--logdir=-q"]),
    # a command's own option of the same name is its own (every command declares --json)
    (["ls", "--json"], ["ls", "--json"]),
    # a value-taking global option without its value: alone, so click names what is missing
    (["ls", "--ssh"], ["--ssh"]),
    (["up", "-q", "runs", "--ssh", "--", "x"], ["-q", "--ssh"]),
])
def test_global_options_after_the_command_move_before_it(args: list[str], hoisted: list[str]) -> None:
    root = typer.main.get_command(app)
    assert hoist_global_options(root, args, options=WITH_VALUE) == hoisted


def test_ssh_and_its_value_after_the_command(cli: Cli) -> None:
    assert "instances" in cli("ls", "--json", "--ssh", "paramiko").json()
    assert "instances" in cli("ls", "--ssh=paramiko", "--json").json()
    assert cli("ls", "--ssh", exit_code=2).stderr.startswith("tbctl: Option '--ssh' requires an argument")


def test_quiet_and_debug_after_the_command(cli: Cli) -> None:
    assert "no such file yet" in cli("config", "path").stderr
    assert cli("config", "path", "-q").stderr == ""
    assert cli("config", "-q", "path").stderr == ""
    assert cli("config", "path", "--quiet").stderr == ""
    assert "Traceback" not in cli("free-port", "abc", exit_code=2).stderr
    assert "Traceback" in cli("free-port", "abc", "--debug", exit_code=2).stderr
    assert "Traceback" in cli("free-port", "--debug", "abc", exit_code=2).stderr


def test_url_from_a_quiet_up_after_the_command(reaper: ProcessReaper, cli: Cli, logdir: Path, port: int) -> None:
    """The README's `url=$(tbctl up -q runs)`, in a real shell with the installed console script."""
    tbctl = str(Path(sys.executable).parent / "tbctl")
    script = 'url=$("$0" up -q "$1" --port "$2") && printf "%s" "$url"'
    done = subprocess.run(["bash", "-c", script, tbctl, str(logdir), str(port)], capture_output=True, text=True,
                          timeout=120)
    for inst in cli("ls", "--json").json()["instances"]:  # reaped by pid whatever the assertions say
        if inst["logdir"] == str(logdir):
            reaper.adopt(inst["pid"], inst["create_time"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"http://127.0.0.1:{port}/" and done.stderr == ""
    assert http_get(done.stdout + "data/logdir", timeout=5)[0] == 200
    cli("down", str(port), "-q")
