"""End to end with a real browser: headless Chromium loads the URL `tbctl up --host` prints (a TensorBoard
on the remote, reached only through tbctl's forward) and the scalars dashboard of the example logdir renders:
both runs listed, a chart per tag, each drawing both runs' curves (tests/support/chromium.py drives it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.chromium import assert_scalars_rendered, chromium_or_skip, render_scalars
from tests.support.foreground import Foreground
from tests.support.procs import TENSORBOARD, ProcessReaper


def test_chromium_renders_the_scalars_dashboard_through_the_forward(ssh_env: Any, reaper: ProcessReaper,
                                                                    state_dir: Path, logdir: Path) -> None:
    chromium_or_skip()
    fg = Foreground(reaper, state_dir, "up", "--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD,
                    "--port", "6700")
    reaper.adopt(fg.pid_from_stderr())
    facts, png = render_scalars(reaper, fg.url, "browser-scalars")
    assert_scalars_rendered(facts, png)
    assert fg.interrupt() == 0, fg.stderr
