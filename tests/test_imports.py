"""What each path imports: start-up time is a feature (bench/cli_latency measures it; this pins the rules)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _imported(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_local_commands_never_import_paramiko(state_dir: Path) -> None:
    code = ("import sys\nsys.argv = ['tbctl', 'ls', '--json']\nfrom tbctl.cli.app import app\n"
            "try:\n    app(prog_name='tbctl')\nexcept SystemExit:\n    pass\n"
            "print('paramiko' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), cwd=REPO, timeout=60)
    assert out.stderr.strip().endswith("False"), out.stderr


@pytest.mark.skipif(importlib.util.find_spec("invoke") is None, reason="invoke is not installed here")
@pytest.mark.parametrize(("config", "expected"), [
    ("Host gpu1\n  HostName 10.0.0.1\n", "False"),
    ("Match exec \"test -e /tmp\"\n  User someone\n", "True"),
])
def test_invoke_is_imported_only_for_match_exec(tmp_path: Path, config: str, expected: str) -> None:
    """paramiko imports invoke only to run `Match exec`; without one in the ssh_config, tbctl skips it."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(config)
    env = dict(os.environ, TBCTL_SSH_CONFIG=str(ssh_config))
    code = ("import sys, tbctl.hosts.paramiko.host\nfrom tbctl.hosts.paramiko.config import resolve\nresolve('gpu1')\n"
            "print(sys.modules.get('invoke') is not None)")
    assert _imported(code, env) == expected


@pytest.mark.skipif(importlib.util.find_spec("invoke") is None, reason="invoke is not installed here")
def test_a_match_exec_seen_later_in_the_process_still_runs_and_invoke_stays_importable(tmp_path: Path) -> None:
    """invoke is skipped for paramiko's first import when the ssh_config has no `Match exec`. A long-lived
    process (a notebook using tbctl's API) must still be able to import invoke itself, and must still
    run a `Match exec` that appears in the config afterwards."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host gpu1\n  HostName 10.0.0.1\n")
    marker = tmp_path / "ran"
    env = dict(os.environ, TBCTL_SSH_CONFIG=str(ssh_config))
    code = (f"import pathlib\nfrom tbctl.hosts.paramiko.config import resolve\nprint(resolve('gpu1').user != 'someone')\n"
            f"import invoke\n"
            f"pathlib.Path({str(ssh_config)!r}).write_text('Match exec \"touch {marker}\"\\n  User someone\\n')\n"
            f"print(resolve('gpu1').user)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["True", "someone"], out.stderr
    assert marker.exists()


def test_each_command_still_runs_when_only_it_is_built(state_dir: Path) -> None:
    """A run builds only the command it invokes (typer would build all of them, ~25 ms): every command
    listed by `tbctl --help` must still parse and show its own help, and the list itself stays whole."""
    def tbctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tbctl", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=60)

    listing = tbctl("--help").stdout
    names = [line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert {"up", "ls", "down", "free-port", "tunnel", "logs", "open", "config"} <= set(names)
    for name in names:
        shown = tbctl(name, "--help")
        assert shown.returncode == 0 and f"Usage: tbctl {name} " in shown.stdout, (name, shown.stderr)
    assert "path" in tbctl("config", "--help").stdout
    unknown = tbctl("lss")
    assert unknown.returncode == 2 and "No such command 'lss'" in unknown.stderr


@pytest.mark.parametrize("argv", [["--help"], ["ls"]], ids=["help", "ls"])
def test_the_command_line_imports_no_ipython_and_no_jupyter(state_dir: Path, argv: list[str]) -> None:
    """The notebook magic's libraries are the magic's alone: a command never pays for them (nor needs them)."""
    code = (f"import sys\nsys.argv = ['tbctl', *{argv!r}]\nfrom tbctl.cli.app import app\n"
            "try:\n    app(prog_name='tbctl')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel', 'nbclient', "
            "'nbformat', 'jupyter_client', 'jupyter_core', 'jupyter_server', 'jupyter_server_proxy', 'tbctl')"
            " and (m.split('.')[0] != 'tbctl' or m in ('tbctl.api', 'tbctl.notebook'))), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), cwd=REPO,
                         timeout=60)
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr
