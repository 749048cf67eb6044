"""How a use case reaches machines: one protocol for every command. The CLI gives it a Reach (its settings,
its terminal for SSH's questions, its progress line); tests give it FakeHosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tbctl.hosts.base import Host


class HostOpener(Protocol):
    """How the use case reaches machines: the command decides how to connect and who answers SSH's questions."""

    def open(self, spec: str | None, *, env_prefix: str | None = None, connect_timeout: float | None = None,
             jump: str | None = None, interactive: bool = True) -> Host:
        """Connected; `interactive=False` where nobody may be asked (several hosts at once)."""
        ...

    def local(self) -> Host: ...

    def backend(self, spec: str | None) -> str:
        """The name of the SSH backend in effect for `spec` (what a background forwarder uses too)."""
        ...
