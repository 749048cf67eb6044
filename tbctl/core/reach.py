"""How a command reaches a machine: this one, or an SSH host over the backend in effect, with its
`[hosts.NAME]` settings under the flags. The command supplies only who answers SSH's questions (a person
at its terminal) and where progress is shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.hosts.backends import BackendChoice
    from tbctl.hosts.base import Host

# Where a setting of the SSH backend came from, as `config show` and the error of an unusable one say it.
_SOURCE_WORDS = {"file": "the config file", "default": "default"}


@dataclass(frozen=True)
class Reach:
    """Opens hosts: the HostOpener (tbctl/core/host_opener.py) of every command."""

    settings: Settings
    ssh: str | None = None  # --ssh: the backend asked for on the command line
    terminal: Any = None  # asks SSH's questions (passphrase, 2FA, unknown host key) on a terminal; None: nobody
    progress: Callable[[str], None] = lambda _: None

    def local(self) -> Host:
        from tbctl.hosts.local import LocalHost

        return LocalHost(self.settings.state_dir)

    def backend_choice(self, spec: str | None) -> BackendChoice:
        """--ssh, else TBCTL_SSH / the config file (this host's section over the top level), else the best
        available, with the reason."""
        from tbctl.hosts.backends import choose

        if self.ssh is not None:
            return choose(self.ssh, "--ssh")
        per_host = self.settings.for_host(spec)
        source = self.settings.sources.get("ssh", "default")
        if per_host.ssh is not None and spec in self.settings.hosts and source == "default":
            source = "file"
        return choose(per_host.ssh, _SOURCE_WORDS.get(source, source))

    def backend(self, spec: str | None) -> str:
        return self.backend_choice(spec).name

    def open(self, spec: str | None, *, env_prefix: str | None = None, connect_timeout: float | None = None,
             jump: str | None = None, interactive: bool = True) -> Host:
        """This machine when `spec` is None, else an SSH host, connected: the one opened while the CLI was
        importing when it was opened exactly so, else a new one (paramiko is imported only when it is the
        backend in use). `interactive=False` where nobody may be asked (several hosts at once)."""
        if spec is None:
            if env_prefix is not None:
                from tbctl.errors import UsageError

                raise UsageError("--env applies to a remote host", hint="locally, use --tensorboard PATH")
            return self.local()
        from tbctl.hosts import preconnect
        from tbctl.hosts.host_spec import parse_spec

        for named in (spec, jump):  # a typo (or an injection) is refused before anything is said or run
            if named is not None:
                parse_spec(named)
        self.progress(f"connecting to {spec}" + (f" through {jump}…" if jump else "…"))
        per_host = self.settings.for_host(spec)
        early = None if jump else preconnect.take(preconnect.EarlyKey(
            spec, self.backend(spec), connect_timeout or per_host.connect_timeout, env_prefix or per_host.env,
            per_host.ssh_persist))
        if early is not None:
            return early
        return self.unconnected(spec, env_prefix=env_prefix, connect_timeout=connect_timeout,
                                interactive=interactive, jump=jump).connect()

    def unconnected(self, spec: str, *, env_prefix: str | None = None, connect_timeout: float | None = None,
                    interactive: bool = False, jump: str | None = None) -> Host:
        """An SSH host over the backend in effect, not connected yet (the background forwarder connects it
        in the background, and again whenever the link drops)."""
        from tbctl.hosts.backends import open_ssh_host

        per_host = self.settings.for_host(spec)
        return open_ssh_host(spec, backend=self.backend(spec), state_dir=self.settings.state_dir,
                             terminal=self.terminal if interactive else None,
                             connect_timeout=connect_timeout or per_host.connect_timeout,
                             env_prefix=env_prefix or per_host.env, persist=per_host.ssh_persist, jump=jump)
