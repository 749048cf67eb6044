"""How a command reaches hosts (the Environment's opener, else a Reach over its settings, --ssh and its
terminal), its state store, and SSH's questions asked of the person at the terminal."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from tbctl.cli.environment import Environment
from tbctl.cli.visible import visible

if TYPE_CHECKING:
    from tbctl.core.host_opener import HostOpener
    from tbctl.core.reach import Reach
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
            return getpass.getpass(visible(prompt, keep="\n"), stream=self.env.stderr)  # the server's words

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """While ssh itself may be asking on the terminal (the OpenSSH backend)."""
        return self.env.paused()

    def ask(self, prompt: str) -> str:
        with self.env.paused():
            self.env.stderr.write(visible(prompt, keep="\n"))
            self.env.stderr.flush()
            return self.env.stdin.readline().rstrip("\n")


def store_of(env: Environment) -> StateStore:
    from tbctl.state import StateStore

    return StateStore(env.settings.state_dir)


def reach(env: Environment) -> HostOpener:
    """How this command reaches hosts: the one the Environment was given (tests: FakeHosts), else its
    settings and --ssh, its terminal for SSH's questions, its progress line."""
    if env.hosts is not None:
        return env.hosts
    return ssh_reach(env)


def ssh_reach(env: Environment) -> Reach:
    """The real way out: SSH backends chosen by --ssh and the settings (what `config show` reports)."""
    from tbctl.core.reach import Reach

    return Reach(env.settings, env.ssh, TerminalPrompter(env), env.progress)


def connect(env: Environment, spec: str | None, *, connect_timeout: float | None) -> Host:
    """A host, opened under the status line, which covers connecting (and any prompt pauses it)."""
    with env.status():
        return reach(env).open(spec, connect_timeout=connect_timeout)


def flush_warnings(env: Environment, store: StateStore) -> None:
    """What the state store noticed while it was read (a damaged record, …), once."""
    for warning in store.warnings:
        env.warn(warning)
    store.warnings.clear()
