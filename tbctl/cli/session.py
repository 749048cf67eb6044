"""Opening hosts for a command, asking the person at the terminal, and telling it what a session does."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tbctl.cli.environment import Environment

if TYPE_CHECKING:
    from tbctl.hosts.backends import BackendChoice
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
            return getpass.getpass(prompt, stream=self.env.stderr)

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """While ssh itself may be asking on the terminal (the OpenSSH backend)."""
        return self.env.paused()

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
              connect_timeout: float | None = None, interactive: bool = True, jump: str | None = None) -> Host:
    """This machine when `spec` is None, else an SSH host, connected (paramiko is imported only when it
    is the backend in use)."""
    if spec is None:
        if env_prefix is not None:
            from tbctl.errors import UsageError

            raise UsageError("--env applies to a remote host", hint="locally, use --tensorboard PATH")
        return local_host(env)
    from tbctl.hosts import preconnect

    env.progress(f"connecting to {spec}" + (f" through {jump}…" if jump else "…"))
    per_host = env.settings.for_host(spec)
    early = None if jump else preconnect.take(preconnect.EarlyKey(
        spec, ssh_backend(env, spec).name, connect_timeout or per_host.connect_timeout,
        env_prefix or per_host.env, per_host.ssh_persist))
    if early is not None:  # opened while the CLI was importing, exactly as it would be opened now
        return early
    return unconnected_host(env, spec, env_prefix=env_prefix, connect_timeout=connect_timeout,
                            interactive=interactive, jump=jump).connect()


def unconnected_host(env: Environment, spec: str, *, env_prefix: str | None = None,
                     connect_timeout: float | None = None, interactive: bool = False, jump: str | None = None) -> Host:
    """An SSH host over the backend in effect, not connected yet (the background forwarder connects it in
    the background, and again whenever the link drops)."""
    from tbctl.hosts.backends import open_ssh_host

    per_host = env.settings.for_host(spec)
    terminal = TerminalPrompter(env) if interactive else None  # several hosts at once: nobody to ask
    return open_ssh_host(spec, backend=ssh_backend(env, spec).name, state_dir=env.settings.state_dir,
                         terminal=terminal, connect_timeout=connect_timeout or per_host.connect_timeout,
                         env_prefix=env_prefix or per_host.env, persist=per_host.ssh_persist, jump=jump)


def ssh_backend(env: Environment, spec: str | None) -> BackendChoice:
    """--ssh, else TBCTL_SSH / the config file (for this host), else the best available."""
    from tbctl.hosts.backends import choose

    if env.ssh is not None:
        return choose(env.ssh, "--ssh")
    per_host = env.settings.for_host(spec)
    source = env.settings.sources.get("ssh", "default")
    if per_host.ssh is not None and spec in env.settings.hosts and source == "default":
        source = "file"
    return choose(per_host.ssh, {"file": "the config file", "default": "default"}.get(source, source))


class TerminalHosts:
    """Hosts as this command reaches them: the backend in effect, and questions asked on its terminal."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def open(self, spec: str | None, *, env_prefix: str | None = None, connect_timeout: float | None = None,
             jump: str | None = None, interactive: bool = True) -> Host:
        return open_host(self.env, spec, env_prefix=env_prefix, connect_timeout=connect_timeout, jump=jump,
                         interactive=interactive)

    def local(self) -> Host:
        return local_host(self.env)

    def backend(self, spec: str | None) -> str:
        return ssh_backend(self.env, spec).name


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
    """`open_host` under the status line, which covers connecting (and any prompt pauses it)."""
    with env.status():
        return open_host(env, spec, connect_timeout=connect_timeout)


def flush_warnings(env: Environment, store: StateStore) -> None:
    """What the state store noticed while it was read (a damaged record, …), once."""
    for warning in store.warnings:
        env.warn(warning)
    store.warnings.clear()


def open_in_browser(env: Environment, url: str) -> None:
    if not browse(url):
        env.info(f"no browser available; open {url}")
