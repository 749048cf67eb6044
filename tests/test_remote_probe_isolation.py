"""The probe on a remote host imports nothing from the remote user's home: `python3 -c` would put the
session's cwd (the home) first on sys.path, so a `struct.py` or a `tbctl/` there would run inside the probe.
Against the real test sshd, over each SSH backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli

# modules the probe imports (stdlib ones not loaded at start-up), and tbctl's own package name
PLANTED = ("struct", "json", "pwd", "socket", "stat", "signal", "tbctl_probe")


@pytest.fixture
def home_with_modules(ssh_env: Any) -> Iterator[tuple[Path, Path]]:
    """The remote home with a module of each name that leaves a marker when imported, and a `tbctl/`
    package; sessions start in that home (as a real user's do: sshd's cwd is the passwd home, which the
    test sshd keeps pointing at the real one, so the home's .bashrc moves there). Removed afterwards."""
    home: Path = ssh_env.home
    markers = home / "imported"
    markers.mkdir(exist_ok=True)
    planted = [home / f"{name}.py" for name in PLANTED] + [home / "tbctl"]
    for name in PLANTED:
        (home / f"{name}.py").write_text(f"open({str(markers / name)!r}, 'w').close()\n")
    (home / "tbctl").mkdir(exist_ok=True)
    (home / "tbctl" / "__init__.py").write_text(f"open({str(markers / 'tbctl')!r}, 'w').close()\n")
    bashrc = home / ".bashrc"
    before = bashrc.read_text() if bashrc.exists() else None
    bashrc.write_text((before or "") + f'\ncd {str(home)!r}\n')
    try:
        yield home, markers
    finally:
        if before is None:
            bashrc.unlink()
        else:
            bashrc.write_text(before)
        for path in planted:
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        for child in markers.iterdir():
            child.unlink()
        markers.rmdir()


def test_modules_in_the_remote_home_are_not_imported_by_the_probe(home_with_modules: tuple[Path, Path],
                                                                  ssh_env: Any, cli: Cli) -> None:
    _, markers = home_with_modules
    listed = cli("ls", "--host", ssh_env.alias, "--json").json()
    assert listed["errors"] == []
    assert sorted(p.name for p in markers.iterdir()) == [], "the probe imported modules from the remote home"
