"""The psutil that pyproject allows has every call tbctl makes of it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

# psutil 6.0 renamed Process.connections() to net_connections(); 5.9 has only the old name, and tbctl (the
# probe's psutil backend) calls the new one.
NET_CONNECTIONS_SINCE = (6, 0)


def _psutil_floor() -> tuple[int, ...]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"psutil\b", d))
    found = re.search(r">=\s*([\d.]+)", spec)
    assert found, f"psutil has no lower bound in pyproject: {spec!r}"
    return tuple(int(n) for n in (found.group(1) + ".0").split(".")[:2])


def test_the_lowest_psutil_allowed_has_process_net_connections() -> None:
    assert "net_connections(" in (ROOT / "tbctl" / "probe.py").read_text()
    assert _psutil_floor() >= NET_CONNECTIONS_SINCE
