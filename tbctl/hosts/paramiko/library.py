"""paramiko, imported the way tbctl's SSH modules need it: `from tbctl.hosts.paramiko.library import paramiko`.

paramiko.config imports `invoke` (40-110 ms here, more than the rest of an SSH command's own imports) for
one thing only: ssh_config's `Match exec`. Unless the ssh_config in use has such a line, invoke is marked
absent before paramiko is first imported.
"""

from __future__ import annotations

import os
import re
import sys

_MATCH_EXEC = re.compile(rb"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


def _skip_invoke_unless_needed() -> None:
    if "invoke" in sys.modules or "paramiko" in sys.modules:
        return
    path = os.environ.get("TBCTL_SSH_CONFIG") or os.path.expanduser("~/.ssh/config")
    try:
        with open(path, "rb") as f:
            if _MATCH_EXEC.search(f.read()):
                return
    except OSError:
        pass
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` now raises ImportError


_skip_invoke_unless_needed()

import paramiko  # noqa: E402

__all__ = ["paramiko"]
