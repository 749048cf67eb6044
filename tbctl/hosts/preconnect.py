"""Opening the SSH connection while the command line is still importing (typer and rich take ~0.1-0.2 s
of every start). Only for the plain case that can be read off argv and the environment without the CLI:
one `--host` (or `tunnel HOST`), the OpenSSH backend, and no flag that changes how to connect (`--env`,
`--connect-timeout`, `--ssh`). The early attempt never asks anything (BatchMode), so it cannot prompt over
the imports. The CLI then takes the host if it was opened the way it would open it itself, and otherwise
opens its own; an error of the early attempt is the command's error, as it would have been a moment later,
except on a terminal when a person could answer it (a password, 2FA, a passphrase, an unknown host key):
the CLI then connects the way it does on a terminal, asking."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbctl.hosts.base import Host

COMMANDS_WITH_HOST = ("up", "ls", "down", "free-port", "logs", "open")
_BLOCKERS = ("--env", "--connect-timeout", "--ssh", "-h", "--help")


@dataclass(frozen=True)
class EarlyKey:
    """What the connection was opened for: the CLI takes it only when its own choice is the same."""

    spec: str
    backend: str
    connect_timeout: float | None
    env_prefix: str | None
    persist: float


class _Early:
    def __init__(self, key: EarlyKey, *, on_terminal: bool) -> None:
        self.key = key
        self.on_terminal = on_terminal
        self.host: Host | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


_early: _Early | None = None


def host_in(argv: Sequence[str]) -> str | None:
    """The one host a command line names, when it is the plain case; None otherwise."""
    words = list(argv)
    if "--" in words:
        words = words[:words.index("--")]
    if any(w == b or w.startswith(b + "=") for w in words for b in _BLOCKERS):
        return None
    command = next((w for w in words if not w.startswith("-")), None)
    if command == "tunnel":
        rest = [w for w in words[words.index("tunnel") + 1:] if not w.startswith("-")]
        return rest[0] if rest else None
    if command not in COMMANDS_WITH_HOST:
        return None
    hosts = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--host", "-H")]
    hosts += [w.split("=", 1)[1] for w in words if w.startswith("--host=")]
    return hosts[0] if len(hosts) == 1 and hosts[0] and not hosts[0].startswith("-") else None


def start(argv: Sequence[str]) -> None:
    """Begin connecting in a background thread, if argv is the plain case (see the module's doc)."""
    global _early
    spec = host_in(argv)
    if spec is None or sys.stdin is None or os.environ.get("_TBCTL_COMPLETE"):
        return
    try:
        from tbctl.config import load_settings
        from tbctl.hosts.backends import choose

        settings = load_settings()
        per_host = settings.for_host(spec)
        if choose(per_host.ssh).name != "openssh":
            return
    except Exception:  # a broken config file: the CLI reports it, in its own words
        return
    key = EarlyKey(spec, "openssh", per_host.connect_timeout, per_host.env, per_host.ssh_persist)
    early = _Early(key, on_terminal=_isatty(sys.stdin))
    _early = early

    def connect() -> None:
        try:
            from tbctl.hosts.backends import open_ssh_host

            host = open_ssh_host(spec, backend="openssh", state_dir=settings.state_dir, terminal=None,
                                 connect_timeout=key.connect_timeout, env_prefix=key.env_prefix,
                                 persist=key.persist)
            early.host = host.connect()
        except BaseException as exc:  # handed to the CLI, which raises it where it would have connected
            early.error = exc
        finally:
            early.done.set()

    threading.Thread(target=connect, name="tbctl-preconnect", daemon=True).start()


def take(key: EarlyKey) -> Host | None:
    """The host opened early for exactly `key` (its error raised here), or None."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    early.done.wait()
    if early.key != key:
        if early.host is not None:
            early.host.close()
        return None
    if early.error is not None:
        if early.on_terminal and _a_person_could_answer(early.error):
            return None
        raise early.error
    return early.host


def _a_person_could_answer(error: BaseException) -> bool:
    from tbctl.errors import AuthFailed
    from tbctl.hosts.openssh.errors import UnknownHostKey

    return isinstance(error, (AuthFailed, UnknownHostKey))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
