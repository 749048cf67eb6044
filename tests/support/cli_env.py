"""tbctl's commands run in this process against FakeHosts (tests/support/fake_host.py), a fake browser and
settings of the test's own, through the Environment the CLI is built around (tbctl/cli/environment.py):
no sshd, TensorBoard or subprocess, so each case costs milliseconds. What the command decides (which
TensorBoard, which exit code, what it prints, whether the browser is handed the URL) is what these test;
the real hand-over ($BROWSER in a process of its own) and real processes stay in the slower files.

    tbctl = InProcess(FakeHosts(local, gpu1), tmp_path)
    started(local, tbctl.store)
    assert tbctl("down", "6006").exit_code == 0
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tbctl.cli.app import app
from tbctl.cli.environment import Environment
from tbctl.state import StateStore
from tests.support.fake_host import FAKE_EPOCH, FakeHosts

FAKE_NOW = FAKE_EPOCH + 10**6  # the fake hosts' clock (their scans say the same `now`)


@dataclass
class FakeBrowser:
    """A browser that takes every URL (or, with `present=False`, a machine with none): what it was given."""

    present: bool = True
    opened: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bool:
        if self.present:
            self.opened.append(url)
        return self.present


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class InProcess:
    """`tbctl ARGS` in this process with an Environment of FakeHosts, a FakeBrowser and settings read from
    `environ` (a TBCTL_STATE_DIR and a TBCTL_CONFIG under `tmp_path`, never the real ones). `store` is the
    state the commands read and write."""

    def __init__(self, hosts: FakeHosts, tmp_path: Path, *, browser: FakeBrowser | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.hosts = hosts
        self.browser = browser if browser is not None else FakeBrowser()
        self.config_file = tmp_path / "config.toml"
        self.environ: dict[str, str] = {"TBCTL_STATE_DIR": str(tmp_path / "state"),
                                        "TBCTL_CONFIG": str(self.config_file), **(environ or {})}
        self.store = StateStore(Path(self.environ["TBCTL_STATE_DIR"]))

    def __call__(self, *args: str, exit_code: int = 0, stdin: str = "", tty: bool = False) -> Run:
        out, err = io.StringIO(), io.StringIO()
        entry = _Terminal(stdin) if tty else io.StringIO(stdin)
        env = Environment(stdout=out, stderr=err, stdin=entry, hosts=self.hosts, browser=self.browser,
                          environ=self.environ, clock=lambda: FAKE_NOW)
        result = CliRunner().invoke(app, list(args), obj=env, catch_exceptions=False)
        run = Run(int(result.exit_code), result.stdout + out.getvalue(), result.stderr + err.getvalue())
        assert run.exit_code == exit_code, (f"tbctl {' '.join(args)} exited {run.exit_code}, expected {exit_code}\n"
                                            f"--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}")
        return run


class _Terminal(io.StringIO):
    """stdin that is a terminal (someone may be asked)."""

    def isatty(self) -> bool:
        return True
