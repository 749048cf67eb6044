"""This machine: the probe runs in this process (the /proc backend on Linux, psutil elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbctl import probe
from tbctl.hosts.base import Host
from tbctl.models import LOCAL_HOST_NAME


class LocalHost(Host):
    name = LOCAL_HOST_NAME

    def __init__(self, state_dir: Path) -> None:
        self._log_dir = str(state_dir / "logs")
        self._probe = probe.Probe()

    def call(self, op: str, **args: Any) -> Any:
        return self._probe.handle(op, args)

    @property
    def log_dir(self) -> str:
        return self._log_dir

    @property
    def user(self) -> str:
        return self._probe.user()
