"""Opening hosts for a command, asking the person at the terminal, and holding a foreground forward."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tbctl.cli.environment import Environment

if TYPE_CHECKING:
    from tbctl.hosts.base import Host
    from tbctl.state import StateStore


class TerminalPrompter:
    """SSH's questions (passphrase, password, 2FA, unknown host key), asked only on a terminal."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    @property
    def interactive(self) -> bool:
        return self.env.stdin_isatty

    def secret(self, prompt: str) -> str:
        import getpass

        with self.env.paused():  # a spinner redrawn over the prompt would hide what is being asked
            return getpass.getpass(prompt, stream=self.env.stderr)

    def ask(self, prompt: str) -> str:
        with self.env.paused():
            self.env.stderr.write(prompt)
            self.env.stderr.flush()
            return self.env.stdin.readline().rstrip("\n")


def store_of(env: Environment) -> StateStore:
    from tbctl.state import StateStore

    return StateStore(env.settings.state_dir)


def local_host(env: Environment) -> Host:
    from tbctl.hosts.local import LocalHost

    return LocalHost(env.settings.state_dir)


def open_host(env: Environment, spec: str | None, *, env_prefix: str | None = None,
              connect_timeout: float | None = None, interactive: bool = True) -> Host:
    """This machine when `spec` is None, else an SSH host (paramiko is imported only here)."""
    if spec is None:
        if env_prefix is not None:
            from tbctl.errors import UsageError

            raise UsageError("--env applies to a remote host", hint="locally, use --tensorboard PATH")
        return local_host(env)
    from tbctl.hosts.ssh import SSHHost

    connect_timeout = connect_timeout or env.settings.for_host(spec).connect_timeout
    env.progress(f"connecting to {spec}…")
    prompter = TerminalPrompter(env) if interactive else None  # several hosts at once: nobody to ask
    host = SSHHost(spec, prompter=prompter, connect_timeout=connect_timeout, env_prefix=env_prefix)
    return host.connect()


def browse(url: str) -> bool:
    """Whether a browser took the URL. webbrowser honours $BROWSER, and finds none on a headless machine.

    The browser inherits file descriptor 1 from us; it is pointed at stderr meanwhile, so what a browser
    says ("Opening in existing browser session.") never mixes with the URL or the JSON on stdout."""
    import os
    import sys
    import webbrowser

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        try:
            return bool(webbrowser.open(url))
        except webbrowser.Error:
            return False
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def interrupt_on_hangup() -> Iterator[None]:
    """While holding a forward, SIGTERM and SIGHUP (terminal closed) clean up like Ctrl-C does."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
