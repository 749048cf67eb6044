"""TensorBoard's command line as `ps` and psutil show it on Linux, macOS and Windows.

The macOS and Windows lines below have the shapes those systems' process tables give (psutil's `cmdline()`),
written out here since neither system runs here: framework Pythons (python.org, Homebrew, Xcode) re-exec
themselves as `…/Python.app/Contents/MacOS/Python`, and Windows has `.exe`, backslashes, `pythonw` and the
`py` launcher. A real TensorBoard with the framework argv[0] runs in the last test."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tbctl import probe
from tbctl.core.up import short_command
from tests.conftest import Cli
from tests.support.procs import MACOS_FRAMEWORK_PYTHON, ProcessReaper, start_plain_tensorboard

FRAMEWORK_PYTHON = MACOS_FRAMEWORK_PYTHON
HOMEBREW_PYTHON = ("/opt/homebrew/Cellar/python@3.12/3.12.7_1/Frameworks/Python.framework/Versions/3.12/Resources/"
                   "Python.app/Contents/MacOS/Python")

TENSORBOARD_LINES = [
    # Linux
    ["/venv/bin/python3", "/venv/bin/tensorboard", "--logdir", "runs"],
    ["/venv/bin/tensorboard", "serve", "--logdir=runs"],
    ["python", "-m", "tensorboard.main", "--logdir", "runs"],
    ["python3", "-u", "-m", "tensorboard", "--logdir", "runs"],
    ["/usr/bin/python3.12", "/home/me/.local/bin/tensorboard", "--logdir", "runs"],
    ["python3.13t", "-X", "importtime", "-m", "tensorboard", "--logdir", "runs"],
    ["python3", "-W", "ignore", "/venv/bin/tensorboard", "--logdir", "runs"],
    # macOS
    [FRAMEWORK_PYTHON, "/Users/me/venv/bin/tensorboard", "--logdir", "runs"],
    [HOMEBREW_PYTHON, "/Users/me/venv/bin/tensorboard", "serve", "--logdir", "runs"],
    [FRAMEWORK_PYTHON, "-m", "tensorboard.main", "--logdir", "runs"],
    ["/Users/me/miniconda3/envs/tb/bin/python3.11", "/Users/me/miniconda3/envs/tb/bin/tensorboard", "--logdir", "runs"],
    # Windows
    ["C:\\Users\\me\\venv\\Scripts\\tensorboard.exe", "--logdir", "runs"],
    ["C:\\Users\\me\\venv\\Scripts\\python.exe", "C:\\Users\\me\\venv\\Scripts\\tensorboard.exe", "--logdir", "runs"],
    ["C:\\Users\\me\\AppData\\Local\\Programs\\Python\\Python312\\python.exe", "-m", "tensorboard", "--logdir", "runs"],
    ["C:\\Users\\me\\venv\\Scripts\\pythonw.exe", "-m", "tensorboard.main", "--logdir=runs"],
    ["C:\\WINDOWS\\py.exe", "-3.12", "-m", "tensorboard", "--logdir", "runs"],
    ["py", "-m", "tensorboard", "serve", "--logdir", "runs"],
    ["C:\\Users\\me\\venv\\Scripts\\TensorBoard.EXE", "--logdir", "runs"],
]

NOT_TENSORBOARD = [
    ["/venv/lib/python3.11/site-packages/tensorboard_data_server/bin/server", "--port=0", "--die-after-stdin"],
    ["C:\\venv\\Lib\\site-packages\\tensorboard_data_server\\bin\\server.exe", "--port=0", "--die-after-stdin"],
    ["python", "-c", "import tensorboard; print('tensorboard')"],
    [FRAMEWORK_PYTHON, "-c", "import tensorboard"],
    [FRAMEWORK_PYTHON, "/Users/me/train.py", "--logdir", "runs"],
    ["C:\\Windows\\py.exe", "-m", "tensorboardX"],
    ["vim", "tensorboard"],
    ["pytest", "-m", "tensorboard"],
    [],
]


@pytest.mark.parametrize("cmdline", TENSORBOARD_LINES, ids=lambda c: " ".join(c)[:70])
def test_every_real_tensorboard_command_line_is_recognised(cmdline: list[str]) -> None:
    args = probe.tensorboard_args(cmdline)
    assert args is not None and probe.flag_value(args, "logdir") == "runs" and "serve" not in args


@pytest.mark.parametrize("cmdline", NOT_TENSORBOARD, ids=lambda c: " ".join(c)[:70] or "empty")
def test_lookalikes_are_not_tensorboard(cmdline: list[str]) -> None:
    assert probe.tensorboard_args(cmdline) is None


@pytest.mark.parametrize("cmdline, shown", [
    ([FRAMEWORK_PYTHON, "/Users/me/serve.py", "8000"], "serve.py 8000"),
    (["C:\\Python312\\python.exe", "C:\\work\\serve.py", "8000"], "serve.py 8000"),
    (["C:\\tools\\nginx.exe", "-g", "daemon off;"], "nginx.exe -g daemon off;"),
])
def test_a_holder_is_named_by_its_program_on_every_platform(cmdline: list[str], shown: str) -> None:
    assert short_command(cmdline) == shown


@pytest.fixture(params=["proc", "psutil"])
def local_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The local probe's two backends: /proc (Linux) and psutil (what macOS and Windows use)."""
    if request.param == "psutil":
        monkeypatch.setenv("TBCTL_PROBE_PSUTIL", "1")
    else:
        monkeypatch.delenv("TBCTL_PROBE_PSUTIL", raising=False)
    return str(request.param)


@pytest.mark.unprivileged
def test_a_tensorboard_run_by_macos_framework_python_is_listed_reused_and_stopped(
        cli: Cli, reaper: ProcessReaper, logdir: Path, port: int, local_backend: str) -> None:
    """A real TensorBoard whose argv[0] is the framework `Python`, as `ps` shows it on macOS."""
    tb = start_plain_tensorboard(reaper, logdir, port, macos_framework_argv0=True)
    assert psutil.Process(tb.pid).cmdline()[0] == MACOS_FRAMEWORK_PYTHON
    rows = [r for r in cli("ls", "--json").json()["instances"] if r["pid"] == tb.pid]
    assert [(r["status"], r["port"], r["logdir"]) for r in rows] == [("serving", port, str(logdir))]
    again = cli("up", str(logdir), "--json").json()
    assert again["reused"] is True and again["instance"]["pid"] == tb.pid
    result = cli("down", str(port))
    assert f"stopped pid {tb.pid}" in result.stdout
    assert tb.wait(timeout=10) == 0
