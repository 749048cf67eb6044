"""A real browser for end-to-end tests: headless Chromium loads a URL tbctl printed and reports what the
TensorBoard scalars dashboard shows (runs listed, a chart per tag, the curves drawn), with a screenshot kept
in test-artifacts/.

Chromium is driven over its DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in
NUL on file descriptors 3 and 4), with the standard library only. `--dump-dom` is not enough here: the
scalars dashboard is built of Polymer elements whose content lives in shadow roots, which it does not print.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ProcessReaper

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RUNS = {"lr_0.1", "lr_0.01"}
TAGS = {"loss", "accuracy"}
STEPS = 50  # points per curve in the example logdir
RENDER_TIMEOUT = 60.0

# What the page shows, read through every shadow root: the run selector's names, and per scalar card its tag
# and how many drawn lines have at least most of the steps as points (a run's curve, raw or smoothed).
PAGE_FACTS = """
(() => {
  const texts = new Set();
  const cards = [];
  const walk = (root, visit) => {
    const w = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = w.currentNode; n; n = w.nextNode()) {
      visit(n);
      if (n.shadowRoot) walk(n.shadowRoot, visit);
    }
  };
  walk(document, (n) => {
    if (n.nodeType === Node.TEXT_NODE) { const t = n.textContent.trim(); if (t && t.length < 80) texts.add(t); }
    else if (n.localName === 'tf-scalar-card') {
      let curves = 0;
      walk(n.shadowRoot || n, (e) => {
        if (e.localName === 'path' && (e.getAttribute('d') || '').split('L').length >= MIN_POINTS) curves++;
      });
      cards.push({tag: n.tag, curves});
    }
  });
  return {texts: [...texts], cards, hash: location.hash, title: document.title};
})()
""".replace("MIN_POINTS", str(STEPS - 10))


def chromium_or_skip() -> str:
    """The Chromium here; where there is none, the test is skipped, saying how to get one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")


class DevTools:
    """A headless Chromium and a DevTools session on its first page, over the debugging pipe."""

    def __init__(self, reaper: ProcessReaper, chromium: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipes_as_fd_3_and_4() -> None:
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-proxy-server", "--hide-scrollbars", "--window-size=1280,900",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.stderr_path = profile.parent / "chromium-stderr.txt"
        with open(self.stderr_path, "wb") as err:
            self.proc = reaper.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                     pass_fds=(3, 4), preexec_fn=pipes_as_fd_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:  # anything else is an event nobody asked for
                    assert "error" not in reply, f"{method}: {reply['error']}"
                    return dict(reply["result"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium closed the pipe:\n{self.stderr_path.read_text(errors='replace')[-2000:]}")
            self._buffer += chunk

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        answer = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
            self.proc.wait(timeout=10)
        except (OSError, EOFError, TimeoutError, subprocess.TimeoutExpired):
            pass  # the reaper ends it by pid
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)


def _rendered(facts: dict[str, Any]) -> bool:
    cards = {c["tag"]: c["curves"] for c in facts["cards"]}
    return RUNS <= set(facts["texts"]) and set(cards) == TAGS and all(n >= 2 * len(RUNS) for n in cards.values())


def render_scalars(reaper: ProcessReaper, url: str, shot_name: str) -> tuple[dict[str, Any], bytes]:
    """Load `url`'s scalars dashboard in headless Chromium until the example runs' curves are drawn (or time
    runs out); what the page shows, and a screenshot (kept in test-artifacts/)."""
    chromium = chromium_or_skip()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{shot_name}.png"
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tbctl-chromium-") as tmp:
        browser = DevTools(reaper, chromium, Path(tmp) / "profile")
        try:
            browser.page("Page.enable")
            browser.page("Emulation.setDeviceMetricsOverride",
                         {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            browser.page("Page.navigate", {"url": url + "#scalars"})
            deadline = time.monotonic() + RENDER_TIMEOUT
            facts = browser.evaluate(PAGE_FACTS)
            while not _rendered(facts) and time.monotonic() < deadline:
                time.sleep(0.25)
                facts = browser.evaluate(PAGE_FACTS)
            time.sleep(0.5)  # let the last frame paint before the screenshot
            png = base64.b64decode(browser.page("Page.captureScreenshot", {"format": "png"})["data"])
            shot.write_bytes(png)
            (ARTIFACTS / f"{shot_name}.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
        finally:
            browser.close()
    return facts, png


def assert_scalars_rendered(facts: dict[str, Any], png: bytes) -> None:
    assert facts["title"] == "TensorBoard" and facts["hash"] == "#scalars", facts
    assert RUNS <= set(facts["texts"]), f"runs not listed: {sorted(facts['texts'])[:80]}"
    assert {c["tag"] for c in facts["cards"]} == TAGS, facts["cards"]
    assert all(c["curves"] >= 2 * len(RUNS) for c in facts["cards"]), f"curves not drawn: {facts['cards']}"
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a blank page compresses to a few KB
