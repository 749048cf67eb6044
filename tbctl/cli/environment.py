"""The streams and flags a command runs with, injected rather than global (so tests can give their own)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TextIO

from tbctl.config import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    json: bool = False
    quiet: bool = False
    debug: bool = False

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(file=self.stdout, no_color="NO_COLOR" in os.environ, highlight=False)

    def result_line(self, text: str) -> None:
        """What the command did, on stdout (not in --json mode, where stdout is JSON only)."""
        if not self.json:
            self.stdout.write(text + "\n")

    def info(self, text: str) -> None:
        if not self.quiet:
            self.stderr.write(text + "\n")

    notice = info

    def warn(self, text: str) -> None:
        self.stderr.write(f"warning: {text}\n")

    def error(self, text: str, hint: str | None = None) -> None:
        self.stderr.write(f"tbctl: {text}\n")
        if hint:
            self.stderr.write(f"hint: {hint}\n")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
