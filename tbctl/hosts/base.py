"""The Host seam: what core may ask of a machine.

Every question is one probe operation (tbctl/probe.py), declared in tbctl/hosts/operations.py. A host only
has to carry operations to where the probe runs (`call`): in this process for LocalHost, over an SSH exec
channel for a remote host. The typed methods below are written once, all through `ask`, so local and remote
behave the same by construction; what differs (the user's environment on a remote host) is a property of
the host, never a branch in a method.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tbctl.errors import TensorBoardNotFound, UsageError
from tbctl.hosts.operations import BY_NAME
from tbctl.models import PortHolder

if TYPE_CHECKING:
    from tbctl.hosts.link import Forward, LinkState

PING_TIMEOUT = 10.0  # seconds for one round trip to the probe, unless the caller (a link's watcher) says otherwise


@dataclass(frozen=True)
class Launched:
    pid: int
    create_time: float
    log_path: str
    socket: str | None = None  # a private instance's unix socket (launch_private)
    argv: tuple[str, ...] = ()  # the command line it runs, where the host built it (launch_private)


@dataclass(frozen=True)
class ResolvedPath:
    path: str  # absolute, symlink-free, as the host sees it
    exists: bool  # an existing directory
    kind: str  # directory | missing | not a directory


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

    def user_environment(self) -> dict[str, Any]:
        """What an operation declared `in_user_env` runs with on this host: here, this process's own."""
        return {"env_prefix": None, "login_shell": False}

    def request(self, op: str, **args: Any) -> Request:
        """One declared operation (KeyError for an undeclared one) as this host sends it: with the user's
        environment added where it is declared to need it (an argument the caller gives wins over the
        host's). What `ask` sends alone and `call_many` with others."""
        if BY_NAME[op].in_user_env:
            args = {**self.user_environment(), **{k: v for k, v in args.items() if v is not None}}
        return op, args

    def ask(self, op: str, **args: Any) -> Any:
        """One declared operation's answer (see `request`)."""
        op, args = self.request(op, **args)
        return self.call(op, **args)

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

    def whoami(self) -> dict[str, Any]:
        """user, home, pid, python, cache_dir, and whether the probe uses psutil."""
        return dict(self.ask("whoami"))

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """One round trip to the probe within `timeout` (here, in this process, there is no link to lose)."""
        self.ask("ping")

    def scan(self) -> Mapping[str, Any]:
        return self.ask("scan")

    def port_holders(self, port: int) -> list[PortHolder]:
        return self.holders_from(self.ask("holders", port=port))

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
        return self.ask("free_port", candidates=list(candidates))["port"]

    def find_tensorboard(self, explicit: str | None = None, env_prefix: str | None = None, *,
                         explicit_from: str = "--tensorboard") -> str:
        """`explicit_from`: where `explicit` was given, for the error: the flag, or a config file's line."""
        found = self.ask("find_tensorboard", explicit=explicit, env_prefix=env_prefix)
        return self.tensorboard_found(found, explicit, explicit_from=explicit_from)

    def find_tensorboard_request(self, explicit: str | None = None, env_prefix: str | None = None) -> Request:
        return self.request("find_tensorboard", explicit=explicit, env_prefix=env_prefix)

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

    def resolve_path(self, path: str, *, cwd: str | None = None) -> ResolvedPath:
        """`path` as the host sees it: `~` expanded, relative to `cwd` (else the probe's working directory)."""
        answer = self.ask("resolve_path", path=path, **({"cwd": cwd} if cwd is not None else {}))
        return ResolvedPath(str(answer["path"]), bool(answer["exists"]), str(answer.get("kind", "")))

    def private_dir(self, path: str) -> str | None:
        """Make `path` a directory only this user can use; why it may not be used, or None."""
        return self.ask("private_dir", path=path)["error"]

    def proc_info(self, pid: int) -> dict[str, Any] | None:
        """What the host knows of a running process (pid, create_time, start_ticks, username, cmdline…)."""
        info = self.ask("proc_info", pid=pid)["info"]
        return dict(info) if info is not None else None

    def alive(self, pid: int, create_time: float | None, start_ticks: int | None = None) -> bool:
        if start_ticks is None:  # a probe of an older tbctl knows no start_ticks argument
            return bool(self.ask("alive", pid=pid, create_time=create_time)["alive"])
        return bool(self.ask("alive", pid=pid, create_time=create_time, start_ticks=start_ticks)["alive"])

    def tail(self, path: str, lines: int = 20) -> str:
        return str(self.ask("tail", path=path, lines=lines)["text"])

    def read_log(self, path: str, *, offset: int | None = None, lines: int = 20, pid: int | None = None,
                 create_time: float | None = None) -> dict[str, Any]:
        """A log as it grows: text, offset (where the next read starts), size, truncated, alive, error."""
        extra = {"pid": pid, "create_time": create_time} if pid is not None else {}
        return dict(self.ask("read_log", path=path, offset=offset, lines=lines, **extra))

    def http_get(self, port: int, path: str, *, timeout: float) -> dict[str, Any]:
        """`GET path` on the host's 127.0.0.1:port: status (None when nothing answered), body, error, not_http."""
        return dict(self.ask("http_get", port=port, path=path, timeout=timeout))

    def wait_http(self, port: int | None, path: str, *, timeout: float, address: str = "127.0.0.1",
                  socket_path: str | None = None) -> dict[str, Any]:
        """`GET path` on address:port (or the unix socket `socket_path`), polled until it answers 200 or
        `timeout` runs out: ready, body, elapsed."""
        private = {} if socket_path is None else {"socket_path": socket_path}
        return dict(self.ask("wait_http", port=port, path=path, timeout=timeout, host=address, **private))

    def pull_poll(self, logdir: str, *, known: Mapping[str, Any] | None, budget: int,
                  digest: str | None) -> dict[str, Any]:
        """One poll of a pulled logdir (`up --pull`): every wanted file's identity and the bytes the caller
        lacks from `known`, at most `budget` of them; `resend` when this probe does not hold `digest`."""
        return dict(self.ask("pull_poll", logdir=logdir, known=known, budget=budget, digest=digest))

    def run(self, argv: Sequence[str], *, timeout: float) -> dict[str, Any]:
        """A fixed argv (no shell) on the host: rc (None when it could not run), stdout, stderr, error."""
        return dict(self.ask("run", argv=list(argv), timeout=timeout))

    # --- actions ---

    def launch(self, argv: Sequence[str], log_path: str, *, cwd: str | None = None) -> Launched:
        answer = self.ask("launch", argv=list(argv), log_path=log_path, **({"cwd": cwd} if cwd is not None else {}))
        return Launched(pid=answer["pid"], create_time=answer["create_time"], log_path=answer["log_path"])

    def wait_ready(self, launched: Launched, port: int | None, path: str, timeout: float) -> Readiness:
        """`GET path` answers from the launched process's own socket: its port, or its unix socket."""
        private = {} if launched.socket is None else {"socket_path": launched.socket}
        answer = self.ask(
            "wait_ready", pid=launched.pid, create_time=launched.create_time, port=port, path=path, timeout=timeout,
            **private,
        )
        return Readiness(ready=answer["ready"], reason=answer.get("reason", ""), elapsed=answer["elapsed"],
                         body=answer.get("body", ""), error=answer.get("error", ""))

    def prepare_private(self, executable: str) -> dict[str, Any]:
        """A new 0700 socket directory with the launcher for a private TensorBoard, and the argv that runs it
        with `executable`'s Python: socket, argv, or error."""
        return dict(self.ask("prepare_private", executable=executable))

    def launch_private(self, executable: str, args: Sequence[str], log_path: str) -> dict[str, Any]:
        """TensorBoard on a unix socket in a new 0700 directory: pid, create_time, log_path, socket, argv, or
        error (nothing started)."""
        return dict(self.ask("launch_private", executable=executable, args=list(args), log_path=log_path))

    def private_ready(self, pid: int, socket_path: str, path: str) -> dict[str, Any] | None:
        """Whether a private instance answers on its own socket, and nothing of it listens on TCP (None: not
        answering yet)."""
        answer = self.ask("private_ready", pid=pid, socket_path=socket_path, path=path)
        return dict(answer) if answer is not None else None

    def remove_private_socket(self, path: str) -> dict[str, Any]:
        """Remove what a private instance leaves (its socket, launcher and directory), only where tbctl made it."""
        return dict(self.ask("remove_private_socket", path=path))

    def wait_launched(self, port: int, path: str, *, timeout: float) -> dict[str, Any]:
        """`wait_ready` for what the latest `launch` on this connection started, sent right behind it (in one
        `call_many`): ready, reason, elapsed, body, and `info`, the process's facts."""
        return dict(self.ask("wait_launched", port=port, path=path, timeout=timeout))

    def send_signal(self, pid: int, create_time: float | None, sig: str) -> str:
        """sent | gone | denied | protected"""
        return str(self.ask("send_signal", pid=pid, create_time=create_time, sig=sig)["outcome"])

    def wait_gone(self, procs: Sequence[tuple[int, float | None]], timeout: float) -> set[int]:
        """Pids still alive after `timeout`."""
        answer = self.ask("wait_gone", procs=[list(p) for p in procs], timeout=timeout)
        return {p[0] for p in answer["alive"]}

    def remove_info_file(self, path: str) -> bool:
        return bool(self.ask("remove_info_file", path=path).get("removed"))
