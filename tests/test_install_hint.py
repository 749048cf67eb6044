"""When no tensorboard is found, the hint names the fix for the way tbctl was installed."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper

REPO = Path(__file__).resolve().parent.parent


def _venv_running_this_tbctl(prefix: Path) -> Path:
    """A venv at `prefix` whose python imports this checkout and its dependencies (no network, no pip)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    python = prefix / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "tbctl_under_test.pth").write_text(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    return python


def _up_without_tensorboard(reaper: ProcessReaper, python: Path, logdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH="/usr/bin:/bin")  # no venv's bin: there is no tensorboard to find
    proc = reaper.popen([str(python), "-m", "tbctl", "up", str(logdir)], env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("kind", ["pipx", "venv"])
def test_no_tensorboard_hint_names_the_fix_for_how_tbctl_was_installed(
    reaper: ProcessReaper, tmp_path: Path, logdir: Path, kind: str
) -> None:
    prefix = tmp_path / ("home/.local/share/pipx/venvs/tbctl" if kind == "pipx" else "env")
    python = _venv_running_this_tbctl(prefix)
    if subprocess.run(["/bin/sh", "-c", "PATH=/usr/bin:/bin command -v tensorboard"], capture_output=True).returncode == 0:
        pytest.skip("a tensorboard on the system PATH would be found")
    result = _up_without_tensorboard(reaper, python, logdir)
    assert result.returncode == 4, result.stderr
    hint = [line for line in result.stderr.splitlines() if line.startswith("hint: ")]
    assert len(hint) == 1, result.stderr
    if kind == "pipx":
        assert "pipx inject tbctl tensorboard" in hint[0]
    else:
        assert f"{python} -m pip install tensorboard" in hint[0] and "pipx" not in hint[0]
    assert "--tensorboard PATH" in hint[0]


def test_remote_no_tensorboard_hint_is_about_the_remote(ssh_env, cli: Cli, tmp_path: Path) -> None:
    env = tmp_path / "env"  # a python there, no tensorboard (the remote shares this filesystem)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    err = cli("up", "--host", ssh_env.alias, str(tmp_path), "--env", str(env), exit_code=4).stderr
    hint = [line for line in err.splitlines() if line.startswith("hint: ")]
    assert len(hint) == 1 and "--env DIR" in hint[0] and "--tensorboard PATH" in hint[0], err
    assert "pipx" not in hint[0] and sys.executable not in hint[0]
