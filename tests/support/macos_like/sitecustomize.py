"""macOS' rules on this Linux machine, for the macOS-like test layer (.ci/run): with this directory on
PYTHONPATH and TBCTL_TEST_MACOS_LIKE=1, every Python the layer starts (pytest, `python -m tbctl`, the
background forwarder) loads it at start-up.

This is the one stand-in the suite uses, for rules no real process here can follow:
- `psutil.net_connections()` is psutil's own macOS implementation (psutil/_psosx.py), which walks every pid
  and asks each process for its sockets: so, as on macOS, it raises AccessDenied for anyone but root, at the
  first process of another user (on Linux too, another user's /proc/PID/fd is unreadable);
- there is no `os.pidfd_open` (macOS has no pidfds).
Nothing in tbctl/ knows of it. psutil is patched when something imports it, so a command that never does
keeps its start-up as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

ENABLE_VAR = "TBCTL_TEST_MACOS_LIKE"


def macos_net_connections(psutil: ModuleType) -> Any:
    """psutil's `_psosx.net_connections`, line for line, over this machine's per-process sockets."""
    from psutil._ntuples import sconn

    def net_connections(kind: str = "inet") -> list:
        # Note (psutil's): on macOS this will fail with AccessDenied unless the process is owned by root.
        ret = []
        for pid in psutil.pids():
            try:
                cons = psutil.Process(pid).net_connections(kind)
            except psutil.NoSuchProcess:
                continue
            else:
                if cons:
                    for c in cons:
                        ret.append(sconn(*(list(c) + [pid])))
        return ret

    return net_connections


class _PatchPsutilOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "psutil":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            module.net_connections = macos_net_connections(module)  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    if hasattr(os, "pidfd_open"):
        del os.pidfd_open
    if "psutil" in sys.modules:
        sys.modules["psutil"].net_connections = macos_net_connections(sys.modules["psutil"])
    else:
        sys.meta_path.insert(0, _PatchPsutilOnImport())


if os.environ.get(ENABLE_VAR) == "1":
    install()
