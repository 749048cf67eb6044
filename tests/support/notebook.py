"""A real IPython kernel for tests of the `%tbctl` magic: nbclient runs one cell at a time in it, and the
functions below read what a cell showed (the frame's URL, its result, its streams)."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ProcessReaper

CELL_TIMEOUT = 120  # seconds a cell may take (a kernel's first `up` imports tbctl and starts TensorBoard)
IFRAME = re.compile(r'<iframe src="([^"]+)"')


def browser_beside_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell says about proxies and SSH, a kernel started next starts as if the
    browser were on this machine; a test that wants otherwise says so."""
    for name in ("TENSORBOARD_PROXY_URL", "JUPYTERHUB_SERVICE_PREFIX", "SSH_CONNECTION", "TBCTL_NOTEBOOK_URL"):
        monkeypatch.delenv(name, raising=False)


class Notebook:
    """A running kernel; `run(source)` executes one more cell and returns its outputs."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cells = 0

    def run(self, source: str) -> list[dict[str, Any]]:
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.client.nb.cells.append(cell)
        self.client.execute_cell(cell, self.cells)
        self.cells += 1
        return list(cell.outputs)


@contextlib.contextmanager
def notebook(reaper: ProcessReaper, cwd: Path) -> Iterator[Notebook]:
    """A python3 kernel (this interpreter's, with tbctl installed) started in `cwd` with this test's
    environment, shut down and reaped when the block ends."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    client = nbclient.NotebookClient(nbformat.v4.new_notebook(), timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}}, allow_errors=False)
    with client.setup_kernel():
        reaper.adopt(client.km.provisioner.pid)
        yield Notebook(client)


def frame_url(outputs: list[dict[str, Any]]) -> str:
    shown = [o["data"]["text/html"] for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1, outputs
    found = IFRAME.search(shown[0])
    assert found, shown
    link = html.unescape(found.group(1))
    assert f'<a href="{found.group(1)}"' in shown[0]  # a link beside the frame, to open it in a tab
    return link


def result_of(outputs: list[dict[str, Any]]) -> str:
    return next(o["data"]["text/plain"] for o in outputs if o["output_type"] == "execute_result")


def stream(outputs: list[dict[str, Any]], name: str) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == name)
