"""A machine over the system OpenSSH client: the user's own `ssh`, so their whole setup applies (Include,
Match, agents and IdentityAgent, FIDO keys, certificates, known_hosts in every form, GSSAPI, ProxyJump).

One connection per host, shared: `ssh -G` resolves the host; a ControlMaster of the user's that answers
`-O check` is ridden and never stopped; otherwise tbctl starts its own (`ssh -M -N -f`, its socket in a 0700
directory) and lets it persist for an idle time, so the next command costs no handshake and no 2FA code.
The probe runs as an exec through the master over pipes; forwards are `-O forward` on the master, so the
bytes move in OpenSSH's C. Every argv puts `--` before the host (ssh reads options placed after the host
otherwise), and no shell string is ever built from user input: remote arguments travel as JSON."""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from tbctl.errors import AuthFailed, HostKeyRejected, SSHError, TbctlError
from tbctl.hosts import remote as remote_probe
from tbctl.hosts.base import PING_TIMEOUT, Answer, Request
from tbctl.hosts.openssh import errors as openssh_errors
from tbctl.hosts.link import DEFAULT_PING_INTERVAL, NEEDS_A_PERSON, LinkState, backoff_delay
from tbctl.hosts.openssh.masters import Master, destination_of, own_master, resolve, session_options
from tbctl.hosts.openssh.probe_process import ProbeProcess
from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT

CALL_MARGIN = 30.0  # seconds a probe operation may take beyond its own timeout before the link is presumed dead


class Terminal(Protocol):
    """The person at the keyboard, if any: ssh asks them itself, on /dev/tty."""

    @property
    def interactive(self) -> bool: ...

    def paused(self) -> AbstractContextManager[None]:
        """Keep tbctl's progress line off the terminal while ssh may be asking something."""


class _NoTerminal:
    interactive = False

    def paused(self) -> AbstractContextManager[None]:
        return nullcontext()


def _through(login: OpenSSHHost) -> str:
    """How to reach a host behind `login`: through the master that already serves `login` (the user's,
    else tbctl's), as a `-W` stdio forward on it, so the login node sees no second login (nor asks a
    second 2FA code); ssh's own ProxyJump, a login of its own, where no master serves it. A master gone
    meanwhile makes that ssh connect by itself with the user's config, as ProxyJump would."""
    sockets = [path for path in (login.resolved.user_control_path, own_master(login).control_path)
               if path and os.path.exists(path)]
    if not sockets:
        return f"ProxyJump={login.name}"
    # ssh runs a ProxyCommand with the shell after expanding its %-tokens: every word quoted, every % doubled
    words = ["ssh", *login.destination, "-S", sockets[0], "-o", "ControlMaster=no", "-o", "BatchMode=yes",
             "-o", "ClearAllForwardings=yes"]
    command = " ".join(shlex.quote(word).replace("%", "%%") for word in words)
    return f"ProxyCommand={command} -W '[%h]:%p' -- {shlex.quote(login.host_arg).replace('%', '%%')}"


class LinkTimeout(SSHError):
    """The probe did not answer in time: the link is presumed dead even if its master still thinks not."""


class OpenSSHForward:
    """`-O forward -L 127.0.0.1:L:127.0.0.1:R` on the host's master; re-added on every reconnect."""

    def __init__(self, host: OpenSSHHost, remote_port: int, local_port: int, remote_host: str = "127.0.0.1",
                 remote_socket: str | None = None) -> None:
        self.host = host
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.remote_socket = remote_socket
        self.local_port = local_port
        self.errors: list[BaseException] = []
        self.active_connections = 0  # the master moves the bytes; it does not count them for us
        self.served = 0

    @property
    def spec(self) -> str:
        if self.remote_socket is not None:  # streamlocal: `-L 127.0.0.1:L:/path` (OpenSSH 6.7+)
            return f"127.0.0.1:{self.local_port}:{self.remote_socket}"
        return f"127.0.0.1:{self.local_port}:{self.remote_host}:{self.remote_port}"

    @property
    def listening(self) -> bool:
        return self in self.host.forwards and self.host.link_state.state == "up"

    def start(self) -> OpenSSHForward:
        self.host.add_forward(self)
        return self

    def close(self) -> None:
        self.host.cancel_forward(self)


class OpenSSHHost(remote_probe.RemoteHost):
    def __init__(
        self,
        spec: str,
        *,
        state_dir: Path,
        terminal: Terminal | None = None,
        connect_timeout: float | None = None,
        env_prefix: str | None = None,
        persist: float = 600.0,
        config_file: str | None = None,
        jump: str | None = None,
    ) -> None:
        self.destination, self.host_arg = destination_of(spec, config_file=config_file)
        self.name = spec
        self.state_dir = state_dir
        self.env_prefix = env_prefix
        self.persist = persist
        self._terminal = terminal or _NoTerminal()
        if jump is not None:  # a compute node through its login node, before `--`
            from tbctl.hosts.host_spec import jumped_name

            # the jump host's spec is checked (destination_of) before its `ssh -G` runs
            self.destination += ["-o", _through(OpenSSHHost(jump, state_dir=state_dir, config_file=config_file))]
            self.name = jumped_name(jump, spec)
        self.resolved = resolve(self.mux_destination, self.host_arg, spec)
        self.connect_timeout = connect_timeout or self.resolved.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        self.master: Master | None = None
        self.forwards: list[OpenSSHForward] = []
        self._interactive_auth = False  # the master needed a person's answer (a password, 2FA, a passphrase)
        self._probe: ProbeProcess | None = None
        self._hello: dict[str, Any] = {}
        self._lock = threading.Lock()  # one probe request at a time; a reconnect swaps the probe under it
        self._connect_lock = threading.RLock()
        self._state = LinkState("reconnecting", time.time(), 0, "not connected yet")
        self._on_change: Callable[[LinkState], None] = lambda state: None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    # --- what a Host is ---

    @property
    def link_state(self) -> LinkState:
        return self._state

    @property
    def shared_connection(self) -> bool:
        return True

    @property
    def interactive_auth(self) -> bool:
        return self._interactive_auth

    # --- the connection ---

    @property
    def mux_destination(self) -> list[str]:
        """The destination options of a command to the master (`-O …`): a tunnel-only host block would make
        even those fail ("Cannot fork into background without a command")."""
        return [*self.destination, *session_options()]

    def ssh_argv(self, *options: str, command: list[str] | None = None) -> list[str]:
        """`ssh [the user's destination options] OPTIONS -- HOST [COMMAND]`: options never after the host."""
        return ["ssh", *self.destination, *options, "--", self.host_arg, *(command or [])]

    def connect(self) -> OpenSSHHost:
        with self._connect_lock:
            if self._probe is None:
                self._connect(batch=not self._terminal.interactive, greet=False)
        return self

    def _connect(self, *, batch: bool, avoid: str | None = None, greet: bool = True) -> None:
        """Ride a live master (the user's, else ours), or start ours; then start the probe through it.
        Without `greet`, the probe's hello is read with the first answers: the first requests then travel
        right behind the probe's source instead of one round trip later."""
        self.master = self._live_master(avoid) or self._start_own_master(batch=batch)
        try:
            self._start_probe(greet=greet)
        except BaseException:
            self._drop_probe()
            raise
        self._set(LinkState("up", time.time(), via=self.master.describe()))

    def _live_master(self, avoid: str | None = None) -> Master | None:
        user_path = self.resolved.user_control_path
        if user_path and user_path != avoid:
            theirs = Master(host=self.name, control_path=user_path, owned=False,
                            destination=tuple(self.mux_destination), host_arg=self.host_arg)
            if theirs.check():
                return theirs
        ours = own_master(self)
        return ours if ours.check() else None

    def _start_own_master(self, *, batch: bool) -> Master:
        master = own_master(self)
        with master.lock():
            if master.check():  # another tbctl started it meanwhile
                return master
            if batch:
                master.start(self, batch=True, fingerprint=True)
                return master
            try:  # on a terminal: without prompts first, so we know whether a person had to answer
                master.start(self, batch=True, fingerprint=False)
            except (AuthFailed, openssh_errors.UnknownHostKey):
                with self._terminal.paused():  # ssh asks on the terminal itself (and shows the fingerprint)
                    master.start(self, batch=False, fingerprint=False)
                self._interactive_auth = True
            return master

    def _start_probe(self, *, greet: bool) -> None:
        assert self.master is not None
        probe = ProbeProcess(self.ssh_argv(*self.master.client_options(), *session_options(), "-o", "RemoteCommand=none", "-T",
                                     command=[remote_probe.remote_command(self.python)]), on_exit=self._wake.set)
        try:
            probe.send(remote_probe.preamble())
        except OSError:
            pass  # the process died at once; read_hello reports what it said
        if greet:
            self._greet(probe)
        self._probe = probe

    def _greet(self, probe: ProbeProcess) -> None:
        """Read the probe's hello (once); a probe that never says it is closed and the reason raised."""
        if probe.greeted:
            return
        deadline = time.monotonic() + self.connect_timeout + CALL_MARGIN
        try:
            self._hello = remote_probe.read_hello(
                lambda: probe.lines.readline(deadline), host=self.name, python=self.python,
                exit_status=probe.exit_status, stderr=probe.stderr)
        except TimeoutError:
            probe.close()
            raise SSHError(f"the probe on {self.name} did not answer within {self.connect_timeout + CALL_MARGIN:g} s") from None
        except BaseException:
            probe.close()
            raise
        probe.greeted = True

    def hello(self) -> dict[str, Any]:
        self.connect()
        with self._lock:
            probe = self._probe
            if probe is not None and not probe.greeted:
                self._greet_or_drop(probe)
        return self._hello

    def _greet_or_drop(self, probe: ProbeProcess) -> None:
        try:
            self._greet(probe)
        except BaseException:
            self._probe = None  # closed by _greet: the next command connects anew
            raise

    def call(self, op: str, **args: Any) -> Any:
        return self.call_many([(op, args)])[0].get()

    def call_many(self, requests: Sequence[Request], *,
                  on_answer: Callable[[int, Answer], None] = lambda index, answer: None) -> list[Answer]:
        """Every request written at once; the probe answers them in order, so the batch costs one round
        trip (the first batch also travels with the probe's source, see connect)."""
        self.connect()
        timeout = sum(float(args.get("timeout") or 0) for _, args in requests) + CALL_MARGIN
        answers: list[Answer] = []
        why = ""
        with self._lock:
            probe = self._probe
            if probe is None:
                raise SSHError(f"lost the connection to {self.name}", hint="run the command again")
            deadline = time.monotonic() + timeout
            try:
                probe.send(remote_probe.request_lines(requests))
                if not probe.greeted:
                    self._greet_or_drop(probe)
                for index, (op, _) in enumerate(requests):
                    line = probe.lines.readline(deadline)
                    if not line:
                        break
                    answer = remote_probe.outcome(line, op=op, host=self.name)
                    answers.append(answer)
                    on_answer(index, answer)
            except TimeoutError:
                self._wake.set()
                raise LinkTimeout(f"no answer from {self.name} within {timeout:g} s (the link may be dead)") from None
            except OSError as exc:
                why = exc.strerror or str(exc)
            except BaseException:  # Ctrl-C mid-batch: the answers still on their way would be read as the next call's
                if self._probe is probe and len(answers) < len(requests):
                    self._probe = None  # the next call (the cleanup) starts another through the master: a remote
                    probe.close(grace=0.0)  # wait would hold this one
                raise
        if len(answers) < len(requests):
            self._wake.set()
            raise SSHError(f"lost the connection to {self.name}" + (f": {why}" if why else ""),
                           hint="the server or the network closed it; try again")
        return answers

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """One round trip through the probe within `timeout`, else SSHError."""
        with self._lock:
            probe = self._probe
            if probe is None:
                raise SSHError(f"not connected to {self.name}")
            deadline = time.monotonic() + timeout
            try:
                probe.send(b'{"op": "ping", "args": {}}\n')
                if not probe.greeted:
                    self._greet_or_drop(probe)
                if not probe.lines.readline(deadline):
                    raise SSHError(f"lost the connection to {self.name}")
            except TimeoutError:
                raise LinkTimeout(f"no answer from {self.name} within {timeout:g} s") from None
            except OSError as exc:
                raise SSHError(f"lost the connection to {self.name}: {exc.strerror or exc}") from None

    # --- forwards ---

    def forward(self, remote_port: int, *, local_port: int, remote_host: str = "127.0.0.1",
                remote_socket: str | None = None) -> OpenSSHForward:
        self.keep_connected()
        return OpenSSHForward(self, remote_port, local_port, remote_host, remote_socket)

    def add_forward(self, fwd: OpenSSHForward) -> None:
        with self._connect_lock:
            if self._state.state == "up" and self.master is not None:
                self.master.forward(fwd.spec, local_port=fwd.local_port)
            self.forwards.append(fwd)

    def cancel_forward(self, fwd: OpenSSHForward) -> None:
        with self._connect_lock:
            if fwd in self.forwards:
                self.forwards.remove(fwd)
                if self.master is not None:
                    self.master.cancel(fwd.spec)

    # --- keeping it up ---

    def watch_connection(self, callback: Callable[[LinkState], None]) -> None:
        self._on_change = callback

    def keep_connected(self) -> None:
        """Watch the link and re-make it (master, probe, every forward on its local port) when it drops,
        never asking anyone anything. Loss shows as the probe's EOF when the master exits (sshd gone, or
        ServerAliveInterval × CountMax without an answer), or as a ping that gets no answer."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="tbctl-openssh-link", daemon=True)
            self._watcher.start()

    def connection_ok(self) -> bool:
        return self._state.state != "down"

    def _set(self, state: LinkState) -> None:
        changed = (state.state, state.attempts) != (self._state.state, self._state.attempts)
        self._state = state
        if changed:
            self._on_change(state)

    def _watch(self) -> None:
        # ssh -G's ServerAliveInterval may be a default the user never chose (Debian's is 300 under BatchMode):
        # a probe ping costs a round trip, so ping at least every 5 s
        interval = float(min(self.resolved.server_alive_interval or DEFAULT_PING_INTERVAL, DEFAULT_PING_INTERVAL))
        if self._probe is None and not self._reconnect("not connected yet"):
            return
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.ping(timeout=max(2.0, interval))
            except SSHError as exc:
                if not self._reconnect(exc.message, hung=isinstance(exc, LinkTimeout)):
                    return

    def _reconnect(self, why: str, *, hung: bool = False) -> bool:
        """Until connected (True), told to stop, or a person would have to answer (False). A master that
        hung (it still answers `-O check` while the link behind it is dead) is not used again: ours is told
        to exit, the user's is left alone and tbctl makes its own."""
        since, attempts = time.time(), 0
        self._set(LinkState("reconnecting", since, attempts, why, via=self._via()))
        avoid = self.master.control_path if hung and self.master is not None else None
        while not self._stop.is_set():
            try:
                with self._connect_lock:
                    self._drop_probe()
                    self._let_go_of_master(hung=hung)
                    self._connect(batch=True, avoid=avoid)
                    self._readd_forwards()
                return True
            except (AuthFailed, HostKeyRejected) as exc:
                error = f"{exc.message}; {NEEDS_A_PERSON}" if self._interactive_auth else exc.message
                self._set(LinkState("down", time.time(), attempts + 1, error, via=self._via()))
                return False
            except TbctlError as exc:  # unreachable, the probe could not start, a port taken meanwhile: retry
                attempts += 1
                self._set(LinkState("reconnecting", since, attempts, exc.message, via=self._via()))
            except OSError as exc:
                attempts += 1
                self._set(LinkState("reconnecting", since, attempts, str(exc), via=self._via()))
            self._stop.wait(backoff_delay(attempts))
        return False

    def _readd_forwards(self) -> None:
        """Every forward back on its local port; one whose port was taken meanwhile fails alone."""
        assert self.master is not None
        for fwd in self.forwards:
            try:
                self.master.forward(fwd.spec, local_port=fwd.local_port)
            except TbctlError as exc:
                fwd.errors.append(exc)

    def _via(self) -> str:
        return self.master.describe() if self.master is not None else ""

    def _let_go_of_master(self, *, hung: bool) -> None:
        """Before re-making the link: our forwards off the old master, so their ports are free for the new
        one. A hung master of ours is told to exit (the link behind it is dead for every command riding it);
        the user's lives on whatever happens."""
        master, self.master = self.master, None
        if master is None:
            return
        for fwd in self.forwards:
            master.cancel(fwd.spec)
        if master.owned and hung:
            master.exit()

    def _drop_probe(self, *, wait: bool = True) -> None:
        with self._lock:
            probe, self._probe = self._probe, None
        if probe is not None:
            if wait:
                probe.close()
            else:
                probe.close_soon()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)
        with self._connect_lock:
            for fwd in list(self.forwards):
                self.cancel_forward(fwd)
            if self.persist < 1 and self.master is not None and self.master.owned:
                self.master.stop()  # ssh_persist 0: gone with this command (or with the last one riding it)
            self._drop_probe(wait=False)

