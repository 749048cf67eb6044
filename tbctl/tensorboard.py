"""What tbctl knows about TensorBoard: its command line, its info files, its readiness endpoint, and how
to tell a live instance from a stale record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tbctl.errors import UsageError
from tbctl.models import StartedBy, Status, TensorBoardInstance, is_loopback
from tbctl.probe import flag_value, tensorboard_args
from tbctl.records import InstanceRecord

__all__ = ["build_argv", "readiness_path", "classify", "flag_value", "tensorboard_args", "tensorboard_flag", "MANAGED_FLAGS"]

# Flags tbctl sets itself; letting them through after `--` would make the record lie about the instance.
MANAGED_FLAGS = ("logdir", "logdir_spec", "port")
_START_TIME_SLACK = 2.0  # info start_time is written ~1 s after the process starts
_INFO_WRITE_DELAY = 600.0  # at most this long from a launch to its info file (a huge logdir loads slowly)
_RECORD_TIME_SLACK = 0.15  # a record's create_time (from /proc or psutil) against a scan's


def normalize_path_prefix(prefix: str | None) -> str:
    if not prefix:
        return ""
    return "/" + prefix.strip("/") if prefix.strip("/") else ""


def readiness_path(path_prefix: str = "") -> str:
    """`GET /data/logdir` answers once TensorBoard serves (a missing logdir still serves; `/data/runs` is no signal)."""
    return normalize_path_prefix(path_prefix) + "/data/logdir"


# TensorBoard 2.21's `serve` flags (its own, its plugins' and absl's) and whether each takes a value. Its
# parser is argparse, which takes any unambiguous prefix of a flag (`--hos` is `--host`, `--b` is
# `--bind_all`), so tbctl must read extra flags the same way to know what they set.
TENSORBOARD_FLAGS: dict[str, bool] = {
    "help": False, "helpshort": False, "helpfull": False, "undefok": True, "logdir": True, "logdir_spec": True,
    "host": True, "bind_all": False, "port": True, "reuse_port": True, "load_fast": True,
    "extra_data_server_flags": True, "grpc_creds_type": True, "grpc_data_provider": True,
    "purge_orphaned_data": True, "db": True, "db_import": False, "inspect": False, "version_tb": False, "tag": True,
    "event_file": True, "path_prefix": True, "window_title": True, "max_reload_threads": True,
    "reload_interval": True, "reload_task": True, "reload_multifile": True, "reload_multifile_inactive_secs": True,
    "generic_data": True, "samples_per_plugin": True, "detect_file_replacement": True,
}
FLAGFILE = "flagfile"  # absl reads more flags from this file before argparse sees them: tbctl cannot vet those


def resolve_flag(word: str) -> str | None:
    """The TensorBoard flag `word` (`--x`, `--x=v`, or a prefix of either) names, as argparse resolves it;
    None for a value, an unknown or an ambiguous prefix (TensorBoard refuses those itself)."""
    if word.lstrip("-").startswith(FLAGFILE) and word.startswith("-"):
        return FLAGFILE  # absl's `--flagfile`/`-flagfile`, read before argparse
    if not word.startswith("--") or word == "--":
        return None
    name = word[2:].split("=", 1)[0]
    if name in TENSORBOARD_FLAGS:
        return name
    matches = [flag for flag in TENSORBOARD_FLAGS if flag.startswith(name)] if name else []
    return matches[0] if len(matches) == 1 else None


def parse_flags(args: Sequence[str]) -> list[tuple[str, str | None, str]]:
    """(flag, value, as written) for each TensorBoard flag in `args`, abbreviations resolved: what
    TensorBoard's parser will make of them. A flag's value is `=v` or the next word (unless that word is
    itself an option, which argparse refuses); a bare `--` ends the flags."""
    out: list[tuple[str, str | None, str]] = []
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break
        flag = resolve_flag(word)
        if flag is None:
            continue
        if "=" in word:
            value: str | None = word.split("=", 1)[1]
        elif (TENSORBOARD_FLAGS.get(flag, True)) and i < len(words) and not words[i].startswith("-"):
            value = words[i]
            i += 1
        else:
            value = None
        out.append((flag, value, word))
    return out


def tensorboard_flag(args: Sequence[str], name: str) -> str | None:
    """The value TensorBoard takes for `--name` from `args` (the last one given, abbreviations included)."""
    value = None
    for flag, given, _ in parse_flags(args):
        if flag == name:
            value = given
    return value


def network_bind(args: Sequence[str]) -> str | None:
    """How `args` make TensorBoard listen beyond loopback, in words (e.g. `--bind_all (every interface)`), or
    None when they do not."""
    reason = None
    for flag, value, word in parse_flags(args):
        if flag == "bind_all":
            reason = f"{word} (every network interface)"
        elif flag == "host" and value is not None:
            reason = None if is_loopback(value) else f"{word} {value}" if "=" not in word else word
        elif flag == FLAGFILE:
            return f"{word} (flags tbctl cannot check, which may bind any address)"
    return reason


def check_private_args(extra_args: Sequence[str], *, network_ok: bool = False) -> None:
    """Refuse (UsageError) what would undo `--private`: the Rust data server (`--load_fast=true` or `auto`)
    listens on a loopback TCP port with no unix-socket option, and any user of the host can connect to it."""
    if network_ok:
        raise UsageError("--private and --expose-to-network contradict each other",
                         hint="--private serves on a unix socket only you can open; drop one of them")
    for flag, value, word in parse_flags(extra_args):
        if flag == "load_fast" and value != "false":
            raise UsageError(
                f"{word}{'' if '=' in word or value is None else ' ' + value} cannot be used with --private: "
                "TensorBoard's data server (--load_fast) listens on a loopback TCP port, which any user of the "
                "host can connect to", hint="leave --load_fast out: a private instance uses the Python loader")
        if flag == FLAGFILE:
            raise UsageError(f"{word} cannot be used with --private: tbctl cannot check the flags in it")


def check_extra_args(extra_args: Sequence[str], *, network_ok: bool = False) -> None:
    """Refuse (UsageError) flags after `--` that tbctl sets itself, and a bind beyond loopback that the user
    did not choose with `network_ok`: TensorBoard serves the logdir to whoever connects."""
    for flag, _, word in parse_flags(extra_args):
        if flag in MANAGED_FLAGS:
            raise UsageError(
                f"--{flag} is set by tbctl itself; do not pass it after --" + (f" (as {word})" if word != f"--{flag}" else ""),
                hint="use tbctl's own LOGDIR argument and --port option",
            )
    exposed = network_bind(extra_args)
    if exposed and not network_ok:
        raise UsageError(
            f"{exposed} would serve TensorBoard to the network, not only to this machine; refused",
            hint="anyone who can reach the host could read the logdir; add --expose-to-network if that is intended",
        )


def build_argv(executable: str, logdir: str, port: int, extra_args: Sequence[str] = (), *,
               network_ok: bool = False) -> list[str]:
    """The command line to launch: loopback only, unless `network_ok` (the user's explicit choice): then
    every interface, or the address the user gave with --host."""
    check_extra_args(extra_args, network_ok=network_ok)
    argv = [executable, "--logdir", logdir, "--port", str(port)]
    if not any(flag in ("host", "bind_all", FLAGFILE) for flag, _, _ in parse_flags(extra_args)):
        argv += ["--bind_all"] if network_ok else ["--host", "127.0.0.1"]
    return argv + list(extra_args)


def _info_matches(info: Mapping[str, Any], proc: Mapping[str, Any]) -> bool:
    """Whether the info file was written by this process, not by an earlier one that had its pid: it was
    started before the file's start_time, or (when a wall-clock step since makes the two times
    incomparable) it serves what the file says, so it is the same instance or rewrote the file itself."""
    if info.get("pid") != proc["pid"]:
        return False
    ct = proc.get("create_time")
    start = info.get("start_time")
    if ct is None or not isinstance(start, (int, float)) or ct <= start + _START_TIME_SLACK:
        return True
    args = tensorboard_args(proc.get("cmdline") or []) or []
    return info.get("logdir") == tensorboard_flag(args, "logdir") and str(info.get("port")) == tensorboard_flag(args, "port")


def _trusted(info: Mapping[str, Any], proc: Mapping[str, Any]) -> bool:
    """Whether an info file may speak for `proc`: the info directory is writable by every user, so a file is
    believed only when it is owned by the process's own user and that process listens on the port it names."""
    if info.get("owner") is None or info.get("owner") != proc.get("username"):
        return False
    port = info["content"].get("port")
    return isinstance(port, int) and port in _listen_ports(proc)


def _listen_ports(proc: Mapping[str, Any]) -> set[int]:
    """The ports `proc` listens on: its own sockets, or, where another user's are hidden from us, the ports that
    user listens on (the kernel's socket table tells the owner, not the process)."""
    if proc.get("sockets_visible", True):
        return {s["port"] for s in proc.get("listen", [])}
    return set(proc.get("user_listen_ports") or ())


def _working_directory(info: Mapping[str, Any]) -> str | None:
    try:
        import base64  # only for an info file without a logdir of its own

        return json.loads(base64.b64decode(info["cache_key"]))["working_directory"]
    except (KeyError, ValueError, TypeError):
        return None


def _bind_of(proc: Mapping[str, Any], args: list[str]) -> str:
    if proc.get("listen"):
        return str(proc["listen"][0]["addr"])
    flags = parse_flags(args)
    if any(flag == "bind_all" for flag, _, _ in flags):
        return "::"
    return tensorboard_flag(args, "host") or "127.0.0.1"


def _one_per_tensorboard(processes: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]]:
    """The live processes, one TensorBoard each: its first process, with the sockets of the whole chain, and
    the chain. A launcher runs TensorBoard in a child with the same arguments and waits for it (on Windows,
    pip's Scripts\\tensorboard.exe, and a venv's python.exe again under it), so one TensorBoard can be a
    chain of processes: the first is the pid a launch returns and tbctl records, the last holds the
    sockets and writes the info file."""
    live = [p for p in processes if not p.get("zombie")]
    by_pid = {p["pid"]: p for p in live}

    def launcher_of(proc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        parent = by_pid.get(proc.get("ppid"))
        if parent is None or parent is proc or parent.get("username") != proc.get("username"):
            return None
        same = tensorboard_args(parent.get("cmdline") or []) == tensorboard_args(proc.get("cmdline") or [])
        return parent if same else None

    chains: dict[int, list[Mapping[str, Any]]] = {}
    for proc in live:
        first, seen = proc, {proc["pid"]}
        while (up := launcher_of(first)) is not None and up["pid"] not in seen:
            first = up
            seen.add(up["pid"])
        chains.setdefault(first["pid"], []).append(proc)
    out = []
    for pid, chain in chains.items():
        first = by_pid[pid]
        if len(chain) > 1:
            first = {**first, "listen": [s for p in chain for s in p.get("listen") or ()],
                     "unix_listening": any(p.get("unix_listening") for p in chain)}
        out.append((first, chain))
    return out


def classify(
    scan: Mapping[str, Any],
    *,
    host: str,
    records: Iterable[InstanceRecord] = (),
) -> list[TensorBoardInstance]:
    """Merge a probe scan (processes + info files) with tbctl's records into instances with a status.

    A zombie is dead. An info file is stale when its pid is gone, is a zombie, or was reused by a process
    that started after the info file's start_time. A record of tbctl's with neither a process nor an info
    file is an instance that exited. The data-server child never reaches here (the probe does not
    recognise it as TensorBoard).
    """
    records = list(records)
    by_pid: dict[int, list[InstanceRecord]] = {}
    for r in records:
        by_pid.setdefault(r.pid, []).append(r)

    def record_for(proc: Mapping[str, Any]) -> InstanceRecord | None:
        """tbctl's record of this very process: same pid and same start. The start is compared in clock
        ticks since boot where both sides have them (a wall-clock step moves create times, not ticks),
        else by create time, for records made before ticks were kept or by psutil (macOS)."""
        ticks, ct = proc.get("start_ticks"), proc.get("create_time")
        for rec in by_pid.get(proc["pid"], ()):
            if rec.start_ticks is not None and isinstance(ticks, int):
                if rec.start_ticks == ticks:
                    return rec
            elif ct is not None and rec.create_time is not None and abs(rec.create_time - ct) < _RECORD_TIME_SLACK:
                return rec
        return None

    infos = [i for i in scan.get("info_files", []) if isinstance(i.get("content"), dict)]
    used_infos: set[str] = set()
    used_records: set[int] = set()
    out: list[TensorBoardInstance] = []
    for proc, chain in _one_per_tensorboard(scan.get("processes", [])):
        args = tensorboard_args(proc.get("cmdline") or []) or []
        claiming = [i for i in infos if any(_info_matches(i["content"], p) for p in chain)]
        used_infos.update(i["path"] for i in claiming)  # about a live process, so never a stale row
        info = next((i for i in claiming if _trusted(i, proc)), None)
        if info is not None:
            used_infos.add(info["path"])
        content: Mapping[str, Any] = info["content"] if info else {}
        flag_port = tensorboard_flag(args, "port")
        port: int | None = content.get("port") if isinstance(content.get("port"), int) else None
        if port is None and flag_port and flag_port.isdigit() and flag_port != "0":
            port = int(flag_port)
        listen_ports = sorted(_listen_ports(proc))
        if port is None and listen_ports and proc.get("sockets_visible", True):
            port = listen_ports[0]
        hidden = not proc.get("sockets_visible", True) and proc.get("user_listen_ports") is None
        unix_socket = proc.get("unix_socket")
        if unix_socket and not proc.get("sockets_visible", True):
            status: Status = "unknown"  # another user's private instance: its sockets are hidden from us
        elif unix_socket:
            port, status = None, "serving" if proc.get("unix_listening") else "starting"
        elif hidden or (port is None and not proc.get("sockets_visible", True)):
            status = "unknown"  # another user's, and nothing here can tell whether it listens
        else:
            status = "serving" if port is not None and port in listen_ports else "starting"
        rec = record_for(proc)
        if rec is not None:
            used_records.add(id(rec))
        started_by: StartedBy = "tbctl" if rec else "other"
        out.append(
            TensorBoardInstance(
                host=host,
                pid=proc["pid"],
                port=port,
                logdir=proc.get("logdir_abs") or _resolve_info_logdir(content),
                logdir_arg=tensorboard_flag(args, "logdir"),
                user=proc.get("username"),
                status=status,
                note="another user's; its sockets are hidden from you" if status == "unknown" else "",
                started_by=started_by,
                create_time=proc.get("create_time"),
                path_prefix=normalize_path_prefix(content.get("path_prefix") or tensorboard_flag(args, "path_prefix")),
                bind=_bind_of(proc, args),
                info_file=info["path"] if info else None,
                log_path=rec.log_path if rec else None,
                cmdline=tuple(proc.get("cmdline") or ()),
                recorded_create_time=rec.create_time if rec else None,
                start_ticks=rec.start_ticks if rec else None,
                socket=unix_socket or None,
            )
        )
    for info in infos:
        # Another user's file that speaks for no live process of theirs: anyone can write in the info
        # directory, so it says nothing reliable (nor can this user clean it); only this user's own are listed.
        if info["path"] in used_infos or info.get("owner") != scan.get("user"):
            continue
        content = info["content"]
        pid = content.get("pid") if isinstance(content.get("pid"), int) else None
        reused = info.get("pid_alive") and pid is not None
        start = content.get("start_time")
        # tbctl's record of the process that left this file (killed without its cleanup): one that started
        # before the file was written, and not long before.
        rec = next((r for r in by_pid.get(pid, ()) if id(r) not in used_records and isinstance(start, (int, float))
                    and r.create_time is not None
                    and -_START_TIME_SLACK <= start - r.create_time <= _INFO_WRITE_DELAY), None) if pid is not None else None
        if rec is not None:
            used_records.add(id(rec))
        out.append(
            TensorBoardInstance(
                host=host,
                pid=pid,
                port=content.get("port") if isinstance(content.get("port"), int) else None,
                logdir=_resolve_info_logdir(content),
                logdir_arg=content.get("logdir"),
                user=info.get("owner"),
                status="stale",
                started_by="tbctl" if rec else "other",
                create_time=content.get("start_time"),
                path_prefix=normalize_path_prefix(content.get("path_prefix")),
                info_file=info["path"],
                log_path=rec.log_path if rec else None,
                note="pid now belongs to another process" if reused else "process is gone",
                recorded_create_time=rec.create_time if rec else None,
                start_ticks=rec.start_ticks if rec else None,
            )
        )
    # What tbctl started and is neither running nor left an info file: it exited (a SIGTERM, from `kill`
    # or `free-port`, lets TensorBoard remove its info file). Listed until `down` removes the record, as
    # `logs` can still read its log.
    for rec in records:
        if id(rec) in used_records:
            continue
        argv = list(rec.argv)
        out.append(
            TensorBoardInstance(
                host=host,
                pid=rec.pid,
                port=rec.port,
                logdir=rec.logdir,
                logdir_arg=tensorboard_flag(argv, "logdir") or rec.logdir,
                user=scan.get("user"),  # tbctl's records on this machine are this user's
                status="exited",
                started_by="tbctl",
                create_time=rec.create_time,
                path_prefix=normalize_path_prefix(tensorboard_flag(argv, "path_prefix")),
                bind=tensorboard_flag(argv, "host") or "127.0.0.1",
                log_path=rec.log_path,
                cmdline=rec.argv,
                recorded_create_time=rec.create_time,
                start_ticks=rec.start_ticks,
                socket=flag_value(list(tensorboard_args(argv) or []), "unix_socket"),
            )
        )
    return out


def _resolve_info_logdir(content: Mapping[str, Any]) -> str | None:
    logdir = content.get("logdir")
    if not logdir or "://" in logdir:
        return logdir or None
    if os.path.isabs(logdir):
        return os.path.normpath(logdir)
    cwd = _working_directory(content)
    return os.path.normpath(os.path.join(cwd, logdir)) if cwd else logdir
