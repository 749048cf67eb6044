"""Opening hosts for a command, asking the person at the terminal, and telling it what a session does."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tbctl.cli.environment import Environment
from tbctl.cli.visible import visible

if TYPE_CHECKING:
    from tbctl.core.reach import Reach
    from tbctl.hosts.base import Host
    from tbctl.hosts.link import LinkState
    from tbctl.models import TensorBoardInstance
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


def reach(env: Environment) -> Reach:
    """How this command reaches hosts: its settings and --ssh, its terminal for SSH's questions, its
    progress line."""
    from tbctl.core.reach import Reach

    return Reach(env.settings, env.ssh, TerminalPrompter(env), env.progress)


class SessionNarrator:
    """What `up` and `tunnel` say on stderr while they connect, start, forward and clean up."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def progress(self, text: str) -> None:
        self.env.progress(text)

    def notice(self, text: str) -> None:
        self.env.notice(text)

    def warn(self, text: str) -> None:
        self.env.warn(text)

    def busy(self) -> contextlib.AbstractContextManager[Any]:
        return self.env.status()

    def connection(self, host: str, state: LinkState) -> None:
        detail = f" (attempt {state.attempts})" if state.attempts else ""
        reason = f": {state.error}" if state.error and state.state != "up" else ""
        self.env.info(f"connection to {host}: {state.state}{detail}{reason}")

    def holding(self, *, stops_tensorboard: bool) -> None:
        self.env.info("forwarding; press Ctrl-C to stop" + (" (TensorBoard stops too)" if stops_tensorboard else ""))

    def ended(self, why: str) -> None:
        self.env.info(why)

    def stopped(self, host: str, instance: TensorBoardInstance) -> None:
        self.env.info(f"stopped TensorBoard pid {instance.pid} on {host}")

    def not_stopped(self, host: str, instance: TensorBoardInstance, problem: str) -> None:
        self.env.warn(f"could not stop TensorBoard pid {instance.pid} on {host}: {problem}")

    def step_ended(self, instance: TensorBoardInstance) -> None:
        self.env.info(f"ended step {instance.step} (TensorBoard on {instance.node}); job {instance.job} keeps running")

    def step_not_ended(self, instance: TensorBoardInstance, problem: str) -> None:
        self.env.warn(f"could not end step {instance.step} of job {instance.job}: {problem}")

    def closed(self) -> None:
        self.env.info("forward closed")


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


def connect(env: Environment, spec: str | None, *, connect_timeout: float | None) -> Host:
    """A host, opened under the status line, which covers connecting (and any prompt pauses it)."""
    with env.status():
        return reach(env).open(spec, connect_timeout=connect_timeout)


def flush_warnings(env: Environment, store: StateStore) -> None:
    """What the state store noticed while it was read (a damaged record, …), once."""
    for warning in store.warnings:
        env.warn(warning)
    store.warnings.clear()


def open_in_browser(env: Environment, url: str) -> bool:
    """Hand `url` to a browser and say how that went. The URL is already on stdout: flushed first, so that
    in one stream (`2>&1`, a log) it comes before the words about it; they name it too, wherever stdout went."""
    env.stdout.flush()
    opened = browse(url)
    if opened:
        env.info(f"opened {url} in the browser")
    else:
        env.info(f"no browser available here; open {url} yourself")
    return opened
