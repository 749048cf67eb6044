"""Errors that carry data. `cli/app.py` is the only place that turns them into a message and an exit code."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbctl.models import PortHolder


class ExitCode(enum.IntEnum):
    """tbctl's exit status, each with the meaning the README's table gives it (a test keeps the two equal)."""

    meaning: str

    def __new__(cls, code: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    OK = 0, "ok"
    ERROR = 1, "other error"
    USAGE = 2, "usage: a bad port, option or path"
    PORT_BUSY = 3, "port busy, or could not be freed"
    NOT_FOUND = 4, ("not found: no such instance, no tensorboard or python3 on the host, nothing listening; "
                    "a Slurm job that is unknown, pending or not running")
    SSH = 5, "SSH: unreachable, refused, timed out, authentication, host key"
    TENSORBOARD_FAILED = 6, "TensorBoard failed to start or did not answer in time"
    INTERRUPTED = 130, "interrupted"


class TbctlError(Exception):
    """An error a user can act on: one line of message, an optional hint, an exit code."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TbctlError):
    exit_code = ExitCode.USAGE


class PortBusy(TbctlError):
    """A port is held and could not (or may not) be freed."""

    exit_code = ExitCode.PORT_BUSY

    def __init__(self, port: int, holders: Sequence[PortHolder], message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.port = port
        self.holders = tuple(holders)


class NotFound(TbctlError):
    exit_code = ExitCode.NOT_FOUND


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
    exit_code = ExitCode.SSH


class AuthFailed(SSHError):
    """The server turned down every credential ssh had (or would have had to ask a person for one): only a
    person can change that, so a reconnect loop gives up on it."""


class Unreachable(SSHError):
    """No SSH server answered: unknown name, refused, timed out, no route."""


class HostKeyRejected(SSHError):
    def __init__(self, host: str, fingerprint: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.fingerprint = fingerprint


class TensorBoardFailed(TbctlError):
    """TensorBoard exited or never became ready; carries the tail of its log."""

    exit_code = ExitCode.TENSORBOARD_FAILED

    def __init__(self, message: str, *, log_tail: str = "", log_path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail
        self.log_path = log_path


class ProbeError(TbctlError):
    """The probe on a host failed in a way that is not the user's fault (a bug or a broken host): which
    host, which operation, and the type of the exception the probe raised there ("" when it never answered)."""

    def __init__(self, message: str, *, host: str, op: str, remote_type: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.op = op
        self.remote_type = remote_type
