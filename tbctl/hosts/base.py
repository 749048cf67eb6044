"""The Host seam: what core may ask of a machine.

Every question is one probe operation (tbctl/probe.py). A host only has to carry operations to where the
probe runs: in this process for LocalHost, over an SSH exec channel for SSHHost. The typed methods below
are written once, so local and remote behave the same by construction.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tbctl.errors import TensorBoardNotFound, UsageError
from tbctl.models import PortHolder

if TYPE_CHECKING:
    from tbctl.hosts.link import Forward, LinkState


@dataclass(frozen=True)
class Launched:
    pid: int
    create_time: float
    log_path: str
    socket: str | None = None  # a private instance's unix socket (launch_private)
    argv: tuple[str, ...] = ()  # the command line it runs, where the host built it (launch_private)


@dataclass(frozen=True)
class Answer:
    """One operation's outcome in a batch (Host.call_many): its result, or the error it raised there."""

    value: Any = None
    error: Exception | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


Request = tuple[str, dict[str, Any]]  # a probe operation and its arguments


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # "" when ready, else "exited" | "timeout"
    elapsed: float
    body: str = ""
    error: str = ""  # what went wrong, in words, where the reason alone does not say


class Host(abc.ABC):
    """A machine: this one, or one reached over SSH."""

    name: str  # what the user calls it: "localhost" or the SSH alias

    @property
    def is_remote(self) -> bool:
        """For display only (URLs, messages); core logic must not branch on it."""
        return False

    @property
    def reachable_here(self) -> bool:
        """Whether this machine reaches the host's loopback ports as they are (else they need a forward)."""
        return True

    @abc.abstractmethod
    def call(self, op: str, **args: Any) -> Any:
        """Run one probe operation on the machine and return its JSON answer."""

    def call_many(self, requests: Sequence[Request], *,
                  on_answer: Callable[[int, Answer], None] = lambda index, answer: None) -> list[Answer]:
        """Operations that need not wait for each other's answers. A remote host sends them together and
        the probe answers them in order, so the batch costs one round trip; one that fails does not stop
        the others. `on_answer` sees each as it comes. Here: one after another, in this process."""
        answers = []
        for index, (op, args) in enumerate(requests):
            try:
                answer = Answer(self.call(op, **args))
            except Exception as exc:
                answer = Answer(error=exc)
            on_answer(index, answer)
            answers.append(answer)
        return answers

    @property
    @abc.abstractmethod
    def log_dir(self) -> str:
        """Where TensorBoard logs of instances tbctl starts on this machine go."""

    @property
    @abc.abstractmethod
    def user(self) -> str: ...

    def connect(self) -> Host:
        """Open the way to the host (a no-op for the local machine)."""
        return self

    def close(self) -> None:
        """Release connections; a no-op for the local machine."""

    def forward(self, remote_port: int, *, local_port: int, remote_host: str = "127.0.0.1",
                remote_socket: str | None = None) -> Forward | None:
        """A forward (not yet started) that makes `remote_port` on this host reachable on this machine's
        `local_port`, or None when this host *is* this machine and the port is reachable as it is.
        `remote_host`: where the host connects to (its loopback, or a machine on its network).
        `remote_socket`: a unix socket on the host instead (SSH's streamlocal forwarding)."""
        return None

    def watch_connection(self, callback: Callable[[LinkState], None]) -> None:
        """Call `callback(state)` when the connection drops or comes back (nothing to watch locally)."""

    def keep_connected(self) -> None:
        """Watch the connection and re-make it when it drops, unattended (the background forwarder)."""

    def connection_ok(self) -> bool:
        """False once the way to this host is gone for good (a local host is always reachable)."""
        return True

    @property
    def interactive_auth(self) -> bool:
        """Whether reaching this host needed a person's answer (so it cannot be reached unattended)."""
        return False

    @property
    def shared_connection(self) -> bool:
        """Whether other tbctl processes (the background forwarder) ride this host's connection while it
        lasts, rather than each opening their own."""
        return False

    @property
    def link_state(self) -> LinkState:
        from tbctl.hosts.link import LinkState

        return LinkState("up", 0.0)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- questions ---

    def scan(self) -> Mapping[str, Any]:
        return self.call("scan")

    def port_holders(self, port: int) -> list[PortHolder]:
        return self.holders_from(self.call("holders", port=port))

    def holders_from(self, rows: Sequence[Mapping[str, Any]]) -> list[PortHolder]:
        """The probe's `holders` rows as records."""
        return [
            PortHolder(
                host=self.name,
                port=row["port"],
                pid=row["pid"],
                family=row["family"],
                addr=row["addr"],
                user=row["username"],
                cmdline=tuple(row["cmdline"] or ()),
                create_time=row["create_time"],
                is_tensorboard=row["is_tensorboard"],
            )
            for row in rows
        ]

    def first_free_port(self, candidates: Sequence[int]) -> int | None:
        return self.call("free_port", candidates=list(candidates))["port"]

    def find_tensorboard(self, explicit: str | None = None, env_prefix: str | None = None, *,
                         explicit_from: str = "--tensorboard") -> str:
        """`explicit_from`: where `explicit` was given, for the error: the flag, or a config file's line."""
        op, args = self.find_tensorboard_request(explicit, env_prefix)
        return self.tensorboard_found(self.call(op, **args), explicit, explicit_from=explicit_from)

    def find_tensorboard_request(self, explicit: str | None = None, env_prefix: str | None = None) -> Request:
        return "find_tensorboard", {"explicit": explicit, "env_prefix": env_prefix, "login_shell": self.is_remote}

    def tensorboard_found(self, found: Mapping[str, Any], explicit: str | None, *,
                          explicit_from: str = "--tensorboard") -> str:
        """The path find_tensorboard answered, else why there is none. `explicit_from`: where `explicit` was
        given, for the error: the flag, or a config file's line."""
        if found["path"]:
            return str(found["path"])
        if found.get("explicit_bad"):
            flag = explicit_from == "--tensorboard"
            given = f"--tensorboard {explicit}" if flag else f"tensorboard {explicit} (from {explicit_from})"
            raise UsageError(
                f"{given} is not an executable file on {self.name}",
                hint="give the path of the tensorboard script, e.g. ~/venv/bin/tensorboard" if flag else
                f"correct it in {explicit_from}, or pass --tensorboard PATH (e.g. ~/venv/bin/tensorboard)",
            )
        raise TensorBoardNotFound(self.name, found["searched"])

    def resolve_path(self, path: str) -> tuple[str, bool]:
        """(absolute path on the host, whether it is an existing directory)."""
        answer = self.call("resolve_path", path=path)
        return answer["path"], answer["exists"]

    def alive(self, pid: int, create_time: float | None, start_ticks: int | None = None) -> bool:
        if start_ticks is None:  # a probe of an older tbctl knows no start_ticks argument
            return bool(self.call("alive", pid=pid, create_time=create_time)["alive"])
        return bool(self.call("alive", pid=pid, create_time=create_time, start_ticks=start_ticks)["alive"])

    def tail(self, path: str, lines: int = 20) -> str:
        return str(self.call("tail", path=path, lines=lines)["text"])

    # --- actions ---

    def launch(self, argv: Sequence[str], log_path: str) -> Launched:
        answer = self.call("launch", argv=list(argv), log_path=log_path)
        return Launched(pid=answer["pid"], create_time=answer["create_time"], log_path=answer["log_path"])

    def wait_ready(self, launched: Launched, port: int | None, path: str, timeout: float) -> Readiness:
        """`GET path` answers from the launched process's own socket: its port, or its unix socket."""
        private = {} if launched.socket is None else {"socket_path": launched.socket}
        answer = self.call(
            "wait_ready", pid=launched.pid, create_time=launched.create_time, port=port, path=path, timeout=timeout,
            **private,
        )
        return Readiness(ready=answer["ready"], reason=answer.get("reason", ""), elapsed=answer["elapsed"],
                         body=answer.get("body", ""), error=answer.get("error", ""))

    def send_signal(self, pid: int, create_time: float | None, sig: str) -> str:
        """sent | gone | denied | protected"""
        return str(self.call("send_signal", pid=pid, create_time=create_time, sig=sig)["outcome"])

    def wait_gone(self, procs: Sequence[tuple[int, float | None]], timeout: float) -> set[int]:
        """Pids still alive after `timeout`."""
        answer = self.call("wait_gone", procs=[list(p) for p in procs], timeout=timeout)
        return {p[0] for p in answer["alive"]}

    def remove_info_file(self, path: str) -> bool:
        return bool(self.call("remove_info_file", path=path).get("removed"))
