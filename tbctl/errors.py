"""Errors that carry data. `cli/app.py` is the only place that turns them into a message and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbctl.models import PortHolder

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PORT_BUSY = 3
EXIT_NOT_FOUND = 4
EXIT_SSH = 5
EXIT_TENSORBOARD_FAILED = 6
EXIT_INTERRUPTED = 130


class TbctlError(Exception):
    """An error a user can act on: one line of message, an optional hint, an exit code."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TbctlError):
    exit_code = EXIT_USAGE


class PortBusy(TbctlError):
    """A port is held and could not (or may not) be freed."""

    exit_code = EXIT_PORT_BUSY

    def __init__(self, port: int, holders: Sequence[PortHolder], message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.port = port
        self.holders = tuple(holders)


class NotFound(TbctlError):
    exit_code = EXIT_NOT_FOUND


class TensorBoardNotFound(NotFound):
    def __init__(self, host: str, searched: Sequence[str]) -> None:
        where = ", ".join(searched) if searched else "nothing"
        super().__init__(f"no tensorboard executable found on {host} (searched: {where})", hint=_install_hint(host))
        self.host = host
        self.searched = tuple(searched)


def _install_hint(host: str) -> str:
    """The fix that applies where tensorboard was looked for: on a remote, there; here, the environment
    tbctl runs in — a pipx venv (`pipx install .` leaves tensorboard out) takes `pipx inject`."""
    from tbctl.models import LOCAL_HOST_NAME

    if host != LOCAL_HOST_NAME:
        return (f"install it on {host} (pip install tensorboard), take it from a venv or conda prefix there "
                "with --env DIR, or point at it with --tensorboard PATH")
    prefix = os.path.normpath(sys.prefix)
    if f"{os.sep}pipx{os.sep}venvs{os.sep}" in prefix + os.sep:
        return (f"tbctl runs from a pipx venv: pipx inject {os.path.basename(prefix)} tensorboard; "
                "or point at one with --tensorboard PATH")
    return (f"install it into the environment tbctl runs in ({prefix}): {sys.executable} -m pip install "
            "tensorboard; or point at one with --tensorboard PATH")


class InstanceNotFound(NotFound):
    def __init__(self, host: str, target: str) -> None:
        super().__init__(
            f"no TensorBoard matching {target!r} on {host}",
            hint="`tbctl ls` lists the running instances",
        )
        self.host = host
        self.target = target


class SSHError(TbctlError):
    exit_code = EXIT_SSH


class HostKeyRejected(SSHError):
    def __init__(self, host: str, fingerprint: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.fingerprint = fingerprint


class TensorBoardFailed(TbctlError):
    """TensorBoard exited or never became ready; carries the tail of its log."""

    exit_code = EXIT_TENSORBOARD_FAILED

    def __init__(self, message: str, *, log_tail: str = "", log_path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail
        self.log_path = log_path


class ProbeError(TbctlError):
    """The probe on a host failed in a way that is not the user's fault (a bug or a broken host)."""
