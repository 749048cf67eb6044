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


def _skip_invoke_unless_needed() -> bool:
    """Whether invoke was marked absent for paramiko's first import."""
    if "invoke" in sys.modules or "paramiko" in sys.modules:
        return False
    path = os.environ.get("TBCTL_SSH_CONFIG") or os.path.expanduser("~/.ssh/config")
    try:
        with open(path, "rb") as f:
            if _MATCH_EXEC.search(f.read()):
                return False
    except OSError:
        pass
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` now raises ImportError
    return True


_marked_absent = _skip_invoke_unless_needed()

import paramiko  # noqa: E402

if _marked_absent and "invoke" in sys.modules and sys.modules["invoke"] is None:
    # paramiko.config has noted invoke as missing; the process that imported tbctl (a notebook, a script)
    # can still import invoke for itself.
    del sys.modules["invoke"]


def enable_match_exec() -> None:
    """Give paramiko invoke after all, for a `Match exec` line the check above did not see: in a config
    this process reads later (one edited while a notebook runs, or another one named since). ImportError
    when invoke is not installed."""
    import invoke
    import paramiko.config

    paramiko.config.invoke = invoke  # type: ignore[attr-defined]


__all__ = ["enable_match_exec", "paramiko"]
