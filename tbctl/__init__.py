"""tbctl: start, find, forward and stop TensorBoard locally and over SSH.

From Python: `tbctl.up()`, `tbctl.ls()`, `tbctl.down()`, `tbctl.free_port()` (see `tbctl.api`); in IPython or
Jupyter: `%load_ext tbctl`, then `%tbctl up …`. `import tbctl` itself loads neither of them: each loads on
first use, so the command line (which imports this package first) pays nothing for them.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("Dashboard", "up", "ls", "down", "free_port")
__all__ = ["__version__", *_API, "load_ipython_extension"]

# Not `typing.TYPE_CHECKING`: importing typing would double what `import tbctl` costs. Type checkers
# take any constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tbctl.api import Dashboard, down, free_port, ls, up  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from tbctl import api

        return getattr(api, name)
    raise AttributeError(f"module 'tbctl' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext tbctl`: registers the `%tbctl` magic."""
    from tbctl.notebook import register

    register(ipython)
