"""The README's "From Python and notebooks" section, run as written: its Python blocks in this process (the
`gpu1` ones against the test sshd, named gpu1 in the test's ssh_config, on both backends), its notebook
block cell by cell in a real kernel. A change to the section is a change to what these tests run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from examples.make_example_logdir import write_example_logdir
from tests.conftest import tensorboard_pids_for
from tests.support.procs import TENSORBOARD, ProcessReaper, wait_until
from tests.support.notebook import browser_beside_the_kernel, frame_url, notebook, stream

README = Path(__file__).resolve().parents[1] / "README.md"
REMOTE = 'host="gpu1"'


@pytest.fixture(autouse=True)
def _browser_beside_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    browser_beside_the_kernel(monkeypatch)


def section() -> str:
    text = README.read_text()
    start = text.index("## From Python and notebooks\n")
    return text[start:text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.S)


def _run(code: list[str], reaper: ProcessReaper, logdir: Path) -> str:
    """Each block in turn in one namespace, printing into the returned text; whatever TensorBoard serves
    `logdir` afterwards is the test's to reap (none should)."""
    out = io.StringIO()
    namespace: dict[str, Any] = {}
    try:
        with contextlib.redirect_stdout(out):
            for block in code:
                exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (the README's own examples)
    finally:
        for pid in tensorboard_pids_for(logdir):
            reaper.adopt(pid)
    return out.getvalue()


def test_the_section_has_python_and_notebook_examples() -> None:
    assert len(blocks("python")) >= 3 and any(REMOTE in b for b in blocks("python")) and len(blocks("ipython")) == 1


def test_the_python_examples_here(reaper: ProcessReaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_example_logdir(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    said = _run([b for b in blocks("python") if REMOTE not in b], reaper, tmp_path / "runs")
    lines = said.splitlines()
    assert lines[0].startswith("http://127.0.0.1:") and lines[0].endswith(" False"), said
    assert any(line.endswith(f"{tmp_path / 'runs'} serving") for line in lines), said
    assert "tensorboard" in lines[-2] and "--logdir" in lines[-2], said  # the holder's command line
    assert lines[-1].startswith("no TensorBoard matching 'no/such/logdir' on localhost / ") and lines[-1].endswith(
        "/ exit code 4"), said
    assert wait_until(lambda: not tensorboard_pids_for(tmp_path / "runs"), 10), "the examples leave nothing running"


def test_the_python_examples_on_gpu1(ssh_env: Any, reaper: ProcessReaper, tmp_path: Path, no_config_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu1 is the test sshd; its `runs` is the remote HOME's, served by this venv's TensorBoard."""
    config = tmp_path / "ssh_config"
    config.write_text(re.sub(rf"^Host {ssh_env.alias}$", f"Host gpu1 {ssh_env.alias}",
                             ssh_env.ssh_config.read_text(), flags=re.M))
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(config))
    no_config_file.write_text(f'[hosts.gpu1]\ntensorboard = "{TENSORBOARD}"\n')
    runs = ssh_env.home / "runs"
    if not runs.exists():  # the remote's HOME outlives a test: one logdir for both backends
        write_example_logdir(runs)
    import tbctl

    said = _run(["import tbctl\n", *(b for b in blocks("python") if REMOTE in b)], reaper, runs)
    lines = said.splitlines()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ -> gpu1 \d+", lines[0]), said
    assert re.fullmatch(r"\['http://127\.0\.0\.1:\d+/'\]", lines[1]), said
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ -> gpu1 /\S+/tb\.sock", lines[2]), said  # private: a socket
    assert not tbctl.ls().forwards
    assert wait_until(lambda: not tensorboard_pids_for(runs), 10), "the examples leave nothing running"


def test_the_notebook_example(reaper: ProcessReaper, tmp_path: Path) -> None:
    write_example_logdir(tmp_path / "runs")
    cells = blocks("ipython")[0].strip().splitlines()
    with notebook(reaper, tmp_path) as nb:
        outputs = [nb.run(cell) for cell in cells]
        for pid in tensorboard_pids_for(tmp_path / "runs"):
            reaper.adopt(pid)
    assert frame_url(outputs[1]).startswith("http://127.0.0.1:")
    assert str(tmp_path / "runs") in stream(outputs[2], "stdout")
    assert stream(outputs[3], "stdout").startswith("stopped pid ")
    assert not tensorboard_pids_for(tmp_path / "runs")
