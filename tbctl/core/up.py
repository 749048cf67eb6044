"""`up`: serve a logdir with TensorBoard on a host — reuse a live instance, or start one and prove it ready."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tbctl.config import PORT_SEARCH_SPAN
from tbctl.core.instances import list_instances, live_for_logdir
from tbctl.core.stopping import terminate
from tbctl.errors import PortBusy, TbctlError, TensorBoardFailed, UsageError
from tbctl.hosts.base import Answer, Host, Launched, Readiness
from tbctl.models import PortHolder, TensorBoardInstance, UpResult
from tbctl.probe import CREATE_TIME_SLACK, is_python
from tbctl.records import InstanceRecord
from tbctl.state import StateStore
from tbctl.tensorboard import build_argv, flag_value, normalize_path_prefix, readiness_path, tensorboard_args, tensorboard_flag

BIND_RACE_RETRIES = 3  # another server may take the chosen port between our check and TensorBoard's bind
_BIND_FAILURE_MARKERS = ("could not bind to port", "is in use by another program", "Address already in use")


@dataclass(frozen=True)
class UpRequest:
    logdir: str
    port: int
    timeout: float
    new: bool = False
    tensorboard: str | None = None
    env_prefix: str | None = None
    extra_args: tuple[str, ...] = ()
    network_ok: bool = False  # --expose-to-network: the user chose a bind beyond loopback
    private: bool = False  # --private: on a unix socket only this user can open, and on no TCP port
    tensorboard_from: str = "--tensorboard"  # where `tensorboard` was set: the flag, or a config file's line


def taken_while_starting(port: int, holders: Sequence[PortHolder], notice: Callable[[str], None], *,
                         where: str = "", last_try: bool) -> str:
    """Another process answered on TensorBoard's port before TensorBoard could bind it (its --port is in
    its command line, which every user of the host can read): said, with the next port to try, and the
    note `up` keeps; PortBusy on the last try."""
    users = ", ".join(sorted({h.user for h in holders if h.user}))
    taken = (f"port {port}{where} was taken by {describe_holders(holders) or 'another process'}"
             f"{f' (user {users})' if users else ''} while TensorBoard started")
    if last_try:
        raise PortBusy(port, holders, taken, hint="another user may be taking the ports tbctl picks; try --port elsewhere")
    notice(f"{taken}; trying {port + 1}")
    return f"{taken}; using another port"


def describe_holders(holders: Sequence[PortHolder]) -> str:
    """Who holds a port, one entry per process: `pid 48213 (tensorboard --logdir /x/runs …) on 127.0.0.1`."""
    by_pid: dict[int | None, list[PortHolder]] = {}
    for h in holders:
        by_pid.setdefault(h.pid, []).append(h)
    parts = []
    for pid, same in by_pid.items():
        who = f"pid {pid}" if pid is not None else "a process of another user"
        cmd = f" ({short_command(same[0].cmdline)})" if same[0].cmdline else ""
        addrs = " and ".join(dict.fromkeys(h.addr for h in same))
        parts.append(f"{who}{cmd} on {addrs}")
    return ", ".join(parts)


def short_command(cmdline: Sequence[str], width: int = 80) -> str:
    """A command line as a person tells it from others: the program by name, not its path (nor the python
    that runs it); for TensorBoard, its logdir, which is what tells two of them apart."""
    argv = list(cmdline)
    args = tensorboard_args(argv)
    if args is not None:
        for flag in ("logdir", "logdir_spec"):
            value = flag_value(args, flag)
            if value is not None:
                given = 1 if any(a.startswith(f"--{flag}=") for a in args) else 2
                return f"tensorboard --{flag} {value}" + (" …" if len(args) > given else "")
        return " ".join(["tensorboard", *args])
    if len(argv) > 1 and is_python(argv[0]) and not argv[1].startswith("-"):
        argv = argv[1:]  # python SCRIPT ARGS: the script is the program
    text = " ".join([_name(argv[0]), *argv[1:]]) if argv else "?"
    return text if len(text) <= width else text[: width - 1] + "…"


def _name(program: str) -> str:
    """The program's file name as written (a POSIX or a Windows path)."""
    return program.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def up(host: Host, store: StateStore, request: UpRequest, *, progress: Callable[[str], None] = lambda _: None,
       notice: Callable[[str], None] = lambda _: None) -> UpResult:
    """`notice` gets the port note (why the port differs from the one asked for) as soon as it is known,
    before the progress that names the port it explains; it is also in the result."""
    path_prefix = normalize_path_prefix(flag_value(list(request.extra_args), "path_prefix"))
    # One lock per host across check-then-launch: two `up`s of one logdir at once end with one instance.
    with store.lock(f"up-{host.name}"):
        # The questions that do not depend on each other's answers, asked at once: one round trip to a
        # remote host, which on a new connection travels with the probe itself. The free port is asked
        # for even when an instance may be reused: a wasted answer costs less than a round trip.
        questions = [host.find_tensorboard_request(request.tensorboard, request.env_prefix),
                     host.request("resolve_path", path=request.logdir),
                     host.request("free_port", candidates=_candidates(request.port), holders=True)]
        if not request.new:
            questions.append(host.request("scan"))
        answers = host.call_many(questions)
        executable = host.tensorboard_found(answers[0].get(), request.tensorboard,
                                            explicit_from=request.tensorboard_from)
        resolved = answers[1].get()
        logdir = str(resolved["path"])
        warnings: list[str] = []
        if resolved.get("kind") == "not a directory":
            where = f" on {host.name}" if host.is_remote else ""
            raise UsageError(f"logdir {logdir} is not a directory{where}", hint="give the directory the event files are in")
        if not resolved["exists"]:
            warnings.append(f"logdir {logdir} does not exist yet; TensorBoard will show runs once they appear")
        if not request.new:
            reusable = live_for_logdir(list_instances(host, store, answers[3].get()), logdir, host.user,
                                       private=request.private)
            if reusable is not None:
                return UpResult(instance=reusable, url=reusable.url or "", reused=True, warnings=tuple(warnings))
        if request.private:
            return _up_private(host, store, request, executable, logdir, path_prefix, tuple(warnings), progress)
        port_note = ""
        wanted = request.port
        for attempt in range(BIND_RACE_RETRIES):
            port, note = _choose_port(host, wanted, answers[2].get() if attempt == 0 else None)
            if note and not port_note:
                notice(note)
            port_note = port_note or note
            argv = build_argv(executable, logdir, port, request.extra_args, network_ok=request.network_ok)
            log_path = f"{host.log_dir}/tensorboard-{port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            launched, ready, info = _launch(host, host.request("launch", argv=argv, log_path=log_path), port,
                                            readiness_path(path_prefix), request.timeout,
                                            lambda: _say_started(progress, host.name, port))
            # From here until it is recorded, a Ctrl-C must leave nothing running (_launch stops what it
            # started until its answers are in).
            try:
                if ready.ready and _serves(ready.body, logdir):
                    ticks = _record(host, store, launched, info, port, logdir, tuple(argv))
                    break
            except BaseException:
                _stop_quietly(host, launched)
                raise
            if ready.reason == "held":  # another process took the port before TensorBoard could bind it
                _stop_quietly(host, launched)
                port_note = taken_while_starting(port, host.port_holders(port), notice,
                                                 last_try=attempt + 1 == BIND_RACE_RETRIES)
                wanted = port + 1
                continue
            tail = host.tail(launched.log_path, 15)
            _stop_quietly(host, launched)
            if ready.reason == "exited" and any(m in tail for m in _BIND_FAILURE_MARKERS) and attempt + 1 < BIND_RACE_RETRIES:
                wanted = port + 1
                continue
            raise _failure(ready.reason, request.timeout, tail, launched)
    instance = TensorBoardInstance(
        host=host.name, pid=launched.pid, port=port, logdir=logdir, logdir_arg=logdir, user=host.user,
        status="serving", started_by="tbctl", create_time=launched.create_time, path_prefix=path_prefix,
        bind=tensorboard_flag(argv, "host") or "::", log_path=launched.log_path, cmdline=tuple(argv),
        recorded_create_time=launched.create_time, start_ticks=ticks,
    )
    return UpResult(instance=instance, url=instance.url or "", reused=False, port_note=port_note,
                    warnings=tuple(warnings), ready_seconds=ready.elapsed)


def _up_private(host: Host, store: StateStore, request: UpRequest, executable: str, logdir: str, path_prefix: str,
                warnings: tuple[str, ...], progress: Callable[[str], None]) -> UpResult:
    """`up --private`: TensorBoard on a unix socket (no port to choose, so no port to lose to a race)."""
    args = private_args(logdir, request.extra_args)
    log_path = f"{host.log_dir}/tensorboard-private-{time.strftime('%Y%m%d-%H%M%S')}.log"
    launch = host.request("launch_private", executable=executable, args=args, log_path=log_path)
    launched, ready, info = _launch(host, launch, None, readiness_path(path_prefix), request.timeout,
                                    lambda: progress(f"starting a private TensorBoard on {host.name}"))
    try:
        if ready.ready and _serves(ready.body, logdir):
            ticks = _record(host, store, launched, info, None, logdir, launched.argv)
    except BaseException:
        _stop_private(host, launched)
        raise
    if not (ready.ready and _serves(ready.body, logdir)):
        tail = host.tail(launched.log_path, 15)
        _stop_private(host, launched)
        raise _failure(ready.reason, request.timeout, tail, launched, ready.error)
    instance = TensorBoardInstance(
        host=host.name, pid=launched.pid, port=None, logdir=logdir, logdir_arg=logdir, user=host.user,
        status="serving", started_by="tbctl", create_time=launched.create_time, path_prefix=path_prefix,
        log_path=launched.log_path, cmdline=launched.argv, recorded_create_time=launched.create_time,
        start_ticks=ticks, socket=launched.socket,
    )
    return UpResult(instance=instance, url="", reused=False, warnings=warnings, ready_seconds=ready.elapsed)


def _record(host: Host, store: StateStore, launched: Launched, info: dict[str, Any] | None, port: int | None,
            logdir: str, argv: tuple[str, ...]) -> int | None:
    """Record the TensorBoard just proven ready; its start ticks (which identify it with its pid)."""
    ticks = _start_ticks(launched, info)
    store.add(InstanceRecord(
        host=host.name, pid=launched.pid, create_time=launched.create_time, port=port, logdir=logdir,
        log_path=launched.log_path, started_at=time.time(), argv=argv, start_ticks=ticks,
    ))
    return ticks


def private_args(logdir: str, extra_args: Sequence[str]) -> list[str]:
    """TensorBoard's flags for a private instance: the Python loader, since the Rust data server that
    `--load_fast` starts listens on a loopback TCP port that any user of the host can connect to."""
    return ["--logdir", logdir, "--load_fast=false", *extra_args]


def _stop_private(host: Host, launched: Launched) -> None:
    """Stop it, and remove its socket directory (its launcher removes it when stopped, not when killed)."""
    _stop_quietly(host, launched)
    if launched.socket is not None:
        host.remove_private_socket(launched.socket)


def _launch(host: Host, launch: tuple[str, dict[str, Any]], port: int | None, path: str, timeout: float,
            started_progress: Callable[[], None]) -> tuple[Launched, Readiness, dict[str, Any] | None]:
    """Start TensorBoard (`launch`: the "launch" or "launch_private" request) and wait until it answers: the
    log dir's check, the launch and the wait go out together (one round trip to a remote host), and the
    launch's answer comes as soon as it is started, so a Ctrl-C while waiting still knows what to stop. A log
    dir another user owns (or planted as a symlink) is refused in one line; the launch then refuses it too,
    so nothing starts."""
    started: list[Launched] = []
    launch_answered = False

    def on_answer(index: int, answer: Answer) -> None:
        nonlocal launch_answered
        launch_answered = launch_answered or index == 1
        if index == 1 and answer.error is None and not answer.value.get("error"):
            value = answer.value
            started.append(Launched(pid=value["pid"], create_time=value["create_time"], log_path=value["log_path"],
                                    socket=value.get("socket"), argv=tuple(value.get("argv", ()))))
            # Said once it is launched, not before: on a terminal the first progress line loads the status
            # line's rich modules (~40 ms), which then overlap TensorBoard's own start instead of delaying it.
            started_progress()

    try:
        checked, launch_answer, waited = host.call_many(
            [host.request("private_dir", path=host.log_dir), launch,
             host.request("wait_launched", port=port, path=path, timeout=timeout)], on_answer=on_answer)
        unsafe = checked.get()["error"]
        if unsafe:
            raise TbctlError(f"log dir {unsafe}", hint="remove it, or fix its owner; tbctl keeps its logs there")
        if not started:
            refused = launch_answer.get().get("error")  # the launch's own error, else why nothing started
            raise TbctlError(f"cannot start a private TensorBoard on {host.name}: {refused}")
        answer = waited.get()
    except BaseException:  # Ctrl-C or a failure while waiting: leave nothing running
        if started:
            terminate(host, [(started[0].pid, started[0].create_time)], force=False, timeout=3.0)
            if started[0].socket is not None:
                host.remove_private_socket(started[0].socket)
        elif not launch_answered:
            _stop_unanswered_launch(host, launch)
        raise
    ready = Readiness(ready=answer["ready"], reason=answer.get("reason", ""), elapsed=answer["elapsed"],
                      body=answer.get("body", ""), error=answer.get("error", ""))
    return started[0], ready, answer.get("info")


def _stop_unanswered_launch(host: Host, launch: tuple[str, dict[str, Any]]) -> None:
    """A Ctrl-C (or a lost link) after the launch went out but before its answer came back: the host may
    have started TensorBoard all the same, and nothing here knows its pid. It is the user's own process
    with exactly the command line sent; its --port was free a moment ago, so no other has it."""
    op, args = launch
    if op != "launch":
        return  # a private launch's command line is made on the host; its socket dir is found by `down`
    sent = list(args["argv"][1:])
    try:
        found = [(p["pid"], p.get("create_time")) for p in host.scan().get("processes", [])
                 if tensorboard_args(p.get("cmdline") or []) == sent and p.get("username") == host.user
                 and not p.get("zombie")]
        if found:
            terminate(host, found, force=False, timeout=3.0)
    except Exception:  # the host is out of reach now: nothing more can be done from here
        pass


def _say_started(progress: Callable[[str], None], host_name: str, port: int) -> None:
    progress(f"starting TensorBoard on {host_name}:{port}")
    progress(f"waiting for TensorBoard on {host_name}:{port} to answer")


def _start_ticks(launched: Launched, info: dict[str, Any] | None) -> int | None:
    """The launched process's start in clock ticks since boot: with its pid, what identifies it in the
    record whatever the wall clock does later (None where the host cannot tell: psutil, macOS)."""
    if info is None or info.get("create_time") is None or abs(info["create_time"] - launched.create_time) > CREATE_TIME_SLACK:
        return None  # not the process launched (cannot happen while it is the probe's unreaped child)
    ticks = info.get("start_ticks")
    return ticks if isinstance(ticks, int) else None


def _candidates(wanted: int) -> list[int]:
    return list(range(wanted, min(wanted + PORT_SEARCH_SPAN, 65536)))


def _choose_port(host: Host, wanted: int, found: dict[str, Any] | None = None) -> tuple[int, str]:
    """The wanted port if free, else the next free one, and a note naming every port skipped and who held
    each (`port 6006 is held by pid 1 (…) on 127.0.0.1, 6007 by pid 2 (…) on 127.0.0.1; using 6008`).
    `found`: the host's free_port answer with holders, when it was asked together with other questions."""
    candidates = _candidates(wanted)
    if found is None:
        found = host.ask("free_port", candidates=candidates, holders=True)
    port = found["port"]
    held_by = {p: host.holders_from(rows) for p, rows in found["held"]}
    if port is None:
        raise PortBusy(
            wanted, held_by[wanted],
            f"no free port in {candidates[0]}-{candidates[-1]} on {host.name}",
            hint=f"`tbctl free-port {wanted}` shows who holds it",
        )
    if port == wanted:
        return port, ""
    held = []
    for skipped in range(wanted, port):
        holders = held_by[skipped]
        held.append(describe_holders(holders) if holders else "something that is not listening yet")
    others = "".join(f", {p} by {who}" for p, who in zip(range(wanted + 1, port), held[1:]))
    return port, f"port {wanted} is held by {held[0]}{others}; using {port}"


def _serves(body: str, logdir: str) -> bool:
    """The answer came from our TensorBoard (same logdir), not from a server that took the port first."""
    try:
        return json.loads(body).get("logdir") == logdir
    except (ValueError, AttributeError):
        return False


def _stop_quietly(host: Host, launched: Launched) -> None:
    terminate(host, [(launched.pid, launched.create_time)], force=False, timeout=3.0)


def _failure(reason: str, timeout: float, tail: str, launched: Launched, error: str = "") -> TensorBoardFailed:
    if reason == "tcp":
        return TensorBoardFailed(f"the private TensorBoard opened a TCP listener ({error}); stopped it",
                                 log_tail=tail, log_path=launched.log_path,
                                 hint="a plugin or flag that serves on TCP cannot be private")
    if reason == "unsafe":
        return TensorBoardFailed(f"the private TensorBoard's socket directory is not safe: {error}; stopped it",
                                 log_tail=tail, log_path=launched.log_path)
    if reason == "timeout":
        message = f"TensorBoard did not answer within {timeout:g} s; stopped it"
        hint = "a large logdir can take longer: raise --timeout"
    elif reason == "exited":
        message = "TensorBoard exited before it was ready"
        hint = None
    else:
        message = "TensorBoard answered, but not for this logdir (another server holds the port?)"
        hint = None
    return TensorBoardFailed(message, log_tail=tail, log_path=launched.log_path, hint=hint)
