"""What `up` and `tunnel` say on stderr while they connect, start, forward and clean up (core's ServeReport)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tbctl.cli.environment import Environment

if TYPE_CHECKING:
    from tbctl.hosts.link import LinkState
    from tbctl.models import TensorBoardInstance


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
