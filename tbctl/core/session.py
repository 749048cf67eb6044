"""What a command serving a URL holds (`up`, `up --job`, `tunnel`): its result and, in the foreground, the
forward to it until Ctrl-C; and what the person running it is told as that happens."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tbctl.core.expose import Exposure
    from tbctl.hosts.base import Host
    from tbctl.hosts.link import LinkState
    from tbctl.models import TensorBoardInstance, UpResult


class ServeReport(Protocol):
    """What the person running the command is told, as it happens."""

    def progress(self, text: str) -> None: ...

    def notice(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def busy(self) -> contextlib.AbstractContextManager[Any]:
        """Around connecting and starting: a status line, closed before the URL is shown."""
        ...

    def connection(self, host: str, state: LinkState) -> None: ...

    def holding(self, *, stops_tensorboard: bool) -> None: ...

    def ended(self, why: str) -> None: ...

    def stopped(self, host: str, instance: TensorBoardInstance) -> None: ...

    def not_stopped(self, host: str, instance: TensorBoardInstance, problem: str) -> None: ...

    def step_ended(self, instance: TensorBoardInstance) -> None: ...

    def step_not_ended(self, instance: TensorBoardInstance, problem: str) -> None: ...

    def closed(self) -> None: ...


class ServeSession:
    """What a command serving a URL holds: its final record and, in the foreground, the forward to it.

    Leaving the session (however: Ctrl-C, SIGTERM, SIGHUP, an error) closes the forward and runs `stops`
    (what this command started); a Ctrl-C ends a foreground forward on purpose, so it is not an error."""

    def __init__(self, result: Any, host: Host, report: ServeReport, *, exposure: Exposure | None = None,
                 background_port: int | None = None, stops: tuple[Callable[[], None], ...] = (),
                 ended: Callable[[], str] | None = None, catch_hangup: bool = True) -> None:
        self.result = result
        self.host = host
        self.background_port = background_port  # a background forwarder now keeps the URL alive
        self._report = report
        self._exposure = exposure
        self._stops = stops
        self._ended = ended
        self._catch_hangup = catch_hangup
        self._signals = contextlib.ExitStack()

    @property
    def forwarding(self) -> bool:
        """Whether this command holds a forward itself (in the foreground, until Ctrl-C)."""
        return self._exposure is not None and self._exposure.forwarder is not None

    def hold(self) -> None:
        """Forward until Ctrl-C (or SIGTERM/SIGHUP), the connection is lost for good, or there is nothing left
        to forward. Returns at once when nothing is held in the foreground."""
        from tbctl.core.expose import hold

        if not self.forwarding:
            return
        assert self._exposure is not None
        name = self.host.name
        self.host.watch_connection(lambda state: self._report.connection(name, state))
        self._report.holding(stops_tensorboard=bool(self._stops))
        try:
            why = hold(self._exposure, is_alive=self.host.connection_ok, ended=self._ended)
        except KeyboardInterrupt:
            return
        if why:
            self._report.ended(why)

    def __enter__(self) -> ServeSession:
        if self.forwarding and self._catch_hangup:  # from here on, a closed terminal or a kill cleans up like Ctrl-C
            from tbctl.core.expose import interrupt_on_hangup

            self._signals.enter_context(interrupt_on_hangup())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if not self.forwarding:
            return False
        assert self._exposure is not None
        self._signals.close()
        try:
            self._exposure.close()
        finally:
            for stop in self._stops:
                stop()
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self._report.closed()
            return True
        return False


def with_forward(result: UpResult, forward_port: int | None, warning: str = "") -> UpResult:
    """`result` once its TensorBoard is reachable here through `forward_port` (its URL is the forward's)."""
    if warning:
        result = dataclasses.replace(result, warnings=(*result.warnings, warning))
    if forward_port is None:
        return result
    inst = dataclasses.replace(result.instance, forward_port=forward_port)
    return dataclasses.replace(result, instance=inst, url=inst.url or result.url)
