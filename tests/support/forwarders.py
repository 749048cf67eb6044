"""tbctl's background forwarders (`--detach`) as a test meets them: the status file each one writes, and
owning them, so the reaper stops them by pid with the test even when it fails half way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.procs import ProcessReaper


def forwarder_status(state_dir: Path, host: str) -> dict[str, Any]:
    """The status file the forwarder for `host` writes under the state dir (pid, create_time, link, forwards)."""
    return dict(json.loads((state_dir / "forwarders" / f"{host}.json").read_text()))


def adopt_forwarder(reaper: ProcessReaper, state_dir: Path, host: str) -> int:
    """Own the forwarder for `host`; its pid."""
    status = forwarder_status(state_dir, host)
    reaper.adopt(status["pid"], status.get("create_time"))
    return int(status["pid"])


def adopt_forwarders(reaper: ProcessReaper, state_dir: Path) -> None:
    """Own every forwarder that has written its status file."""
    for path in sorted((state_dir / "forwarders").glob("*.json")):
        adopt_forwarder(reaper, state_dir, path.stem)
