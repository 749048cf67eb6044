"""Everything a command runs with, made in one place and injected rather than global: its streams and flags,
its settings, how it reaches hosts, the browser it hands URLs to, and the clock. `main()` makes the real
one; a test makes its own (FakeHosts, a fake browser, settings of its own) and runs any command in-process
with it, with no sshd, TensorBoard or subprocess (tests/support/cli_env.py).

Progress ("connecting to gpu1…", "starting TensorBoard on gpu1:6006", "waiting for it to answer") goes to
stderr: inside `with env.status():`, when stdout and stderr are a terminal, it is one rich status line that
each step replaces and that disappears when the block ends; otherwise (a pipe, a log file, TERM=dumb) each
step is a plain line, so logs stay readable. `--quiet` shows neither; `NO_COLOR` drops the colours.

Every message, result line and status text goes out through `visible()`: it may quote another process,
user or host, so its control characters are shown, never sent, and rich never reads it as markup.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

from tbctl.cli.browser import browse
from tbctl.cli.visible import visible
from tbctl.config import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

    from tbctl.core.host_opener import HostOpener


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    json: bool = False
    quiet: bool = False
    debug: bool = False
    ssh: str | None = None  # --ssh: the SSH backend asked for on the command line
    # The process environment the settings (TBCTL_*, the config file's place) are read from, once, when a
    # command first needs them; a test gives its own.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    hosts: HostOpener | None = None  # how commands reach machines; None: SSH as --ssh and the settings say
    browser: Callable[[str], bool] = browse  # hands a URL to a browser; whether one took it
    clock: Callable[[], float] = time.time  # the wall clock, for ages ("up 5 min")
    _status_depth: int = field(default=0, init=False, repr=False)
    _status: Any = field(default=None, init=False, repr=False)  # (rich Live, its Spinner) while one is shown

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.environ)

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def no_color(self) -> bool:
        return "NO_COLOR" in os.environ  # https://no-color.org: present at all, whatever its value

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(file=self.stdout, no_color=self.no_color, highlight=False)

    @cached_property
    def err_console(self) -> Console:
        from rich.console import Console

        return Console(file=self.stderr, no_color=self.no_color, highlight=False, force_terminal=True)

    @property
    def live_progress(self) -> bool:
        """Whether progress shows as one live status line: someone watches a terminal that can redraw a line
        (stderr, where it is drawn, and stdout: `url=$(tbctl up)` in a script gets plain lines)."""
        return (not self.quiet and _isatty(self.stderr) and _isatty(self.stdout)
                and os.environ.get("TERM", "") != "dumb")

    def result_line(self, text: str) -> None:
        """What the command did, on stdout (not in --json mode, where stdout is JSON only)."""
        if not self.json:
            self.stdout.write(visible(text, keep="\n") + "\n")

    # --- progress ---

    @contextlib.contextmanager
    def status(self, text: str = "") -> Iterator[Callable[[str], None]]:
        """A block of slow steps. Yields `progress`, which core functions take as their callback; the
        status line (on a terminal) is cleared when the block ends, however it ends."""
        self._status_depth += 1
        try:
            if text:
                self.progress(text)
            yield self.progress
        finally:
            self._status_depth -= 1
            if self._status_depth == 0:
                self._stop_status()

    def progress(self, text: str) -> None:
        """One step of a slow operation: replaces the status line on a terminal, else a plain line."""
        if self.quiet:
            return
        text = visible(text)  # one line: a newline in an squeue reason would break the status line
        if self._status is not None:
            from rich.text import Text

            live, spinner = self._status
            spinner.update(text=Text(text))  # a str would be parsed as markup: `[/oops]` in a reason crashed
            live.refresh()  # draw now: a step shorter than one refresh period would otherwise never show
        elif self._status_depth and self.live_progress:
            from rich.live import Live
            from rich.spinner import Spinner
            from rich.text import Text

            spinner = Spinner("dots", text=Text(text), style="status.spinner")
            live = Live(spinner, console=self.err_console, transient=True, refresh_per_second=12.5,
                        redirect_stdout=False, redirect_stderr=False)
            live.start(refresh=True)
            self._status = (live, spinner)
        else:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Take the status line away while someone is asked something (a passphrase, a host key), and
        bring it back after."""
        status = self._status
        if status is None:
            yield
            return
        status[0].stop()
        try:
            yield
        finally:
            if self._status is status:
                status[0].start(refresh=True)

    def _stop_status(self) -> None:
        status, self._status = self._status, None
        if status is not None:
            status[0].stop()  # transient: the line is erased, the cursor left where the line began

    def _message(self, text: str) -> None:
        text = visible(text, keep="\n")
        # While a status line is live, print above it through its console so neither garbles the other.
        if self._status is not None:
            self.err_console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stderr.write(text + "\n")

    # --- messages ---

    def info(self, text: str) -> None:
        if not self.quiet:
            self._message(text)

    notice = info

    def warn(self, text: str) -> None:
        self._message(f"warning: {text}")

    def error(self, text: str, hint: str | None = None) -> None:
        self._stop_status()  # an error ends the command: no spinner left under it
        self.stderr.write("tbctl: " + visible(text, keep="\n") + "\n")
        if hint:
            self.stderr.write("hint: " + visible(hint, keep="\n") + "\n")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
