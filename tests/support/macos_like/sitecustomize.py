"""macOS' rules on this Linux machine, for the macOS-like test layer (.ci/run): with this directory on
PYTHONPATH and TBCTL_TEST_MACOS_LIKE=1, every Python the layer starts (pytest, `python -m tbctl`, the
background forwarder) loads it at start-up.

This is the one stand-in the suite uses, for rules no real process here can follow:
- `psutil.net_connections()` is psutil's own macOS implementation (psutil/_psosx.py), which walks every pid
  and asks each process for its sockets: so, as on macOS, it raises AccessDenied for anyone but root, at the
  first process of another user (on Linux too, another user's /proc/PID/fd is unreadable);
- there is no `os.pidfd_open` (macOS has no pidfds);
- the ControlPath budget is darwin's: `sun_path_size()` of tbctl's OpenSSH masters answers for "darwin"
  (104 bytes, where Linux has 108), wherever that function lives.
Nothing in tbctl/ knows of it. A module is patched when something imports it, so a command that never
imports psutil keeps its start-up as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

ENABLE_VAR = "TBCTL_TEST_MACOS_LIKE"
# The tests' own view of this machine's sockets (tests/support/procs.py) stays Linux's: psutil keeps its
# real net_connections() under this name.
LINUX_NET_CONNECTIONS = "_tbctl_test_linux_net_connections"


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


def darwin_sun_path(masters: ModuleType) -> None:
    size = getattr(masters, "sun_path_size", None)
    if size is not None:
        masters.sun_path_size = lambda platform="darwin": size("darwin")  # type: ignore[attr-defined]


PATCHES = {
    "psutil": lambda module: (setattr(module, LINUX_NET_CONNECTIONS, module.net_connections),
                              setattr(module, "net_connections", macos_net_connections(module)))
    if not hasattr(module, LINUX_NET_CONNECTIONS) else None,
    "tbctl.hosts.openssh.masters": darwin_sun_path,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs PATCHES[name] on a module right after it is first imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Once per process, though tests import this module again under its package name."""
    if any(type(finder).__name__ == _PatchOnImport.__name__ for finder in sys.meta_path):
        return
    if hasattr(os, "pidfd_open"):
        del os.pidfd_open
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())


if os.environ.get(ENABLE_VAR) == "1":
    install()
