"""What tbctl knows about TensorBoard: its command line, its info files, its readiness endpoint, and how
to tell a live instance from a stale record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tbctl.errors import UsageError
from tbctl.models import StartedBy, TensorBoardInstance
from tbctl.probe import flag_value, tensorboard_args
from tbctl.records import InstanceRecord

__all__ = ["build_argv", "readiness_path", "classify", "flag_value", "tensorboard_args", "MANAGED_FLAGS"]

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


def build_argv(executable: str, logdir: str, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line to launch: loopback only unless the user asked for another bind in `extra_args`."""
    for flag in MANAGED_FLAGS:
        if flag_value(list(extra_args), flag) is not None or f"--{flag}" in extra_args:
            raise UsageError(
                f"--{flag} is set by tbctl itself; do not pass it after --",
                hint="use tbctl's own LOGDIR argument and --port option",
            )
    argv = [executable, "--logdir", logdir, "--port", str(port)]
    if "--bind_all" not in extra_args and flag_value(list(extra_args), "host") is None:
        argv += ["--host", "127.0.0.1"]
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
    return info.get("logdir") == flag_value(args, "logdir") and str(info.get("port")) == flag_value(args, "port")


def _working_directory(info: Mapping[str, Any]) -> str | None:
    try:
        import base64  # only for an info file without a logdir of its own

        return json.loads(base64.b64decode(info["cache_key"]))["working_directory"]
    except (KeyError, ValueError, TypeError):
        return None


def _bind_of(proc: Mapping[str, Any], args: list[str]) -> str:
    if proc.get("listen"):
        return str(proc["listen"][0]["addr"])
    if "--bind_all" in args:
        return "::"
    return flag_value(args, "host") or "127.0.0.1"


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
    for proc in scan.get("processes", []):
        if proc.get("zombie"):
            continue
        args = tensorboard_args(proc.get("cmdline") or []) or []
        info = next((i for i in infos if _info_matches(i["content"], proc)), None)
        if info is not None:
            used_infos.add(info["path"])
        content: Mapping[str, Any] = info["content"] if info else {}
        flag_port = flag_value(args, "port")
        port: int | None = content.get("port") if isinstance(content.get("port"), int) else None
        if port is None and flag_port and flag_port.isdigit() and flag_port != "0":
            port = int(flag_port)
        listen_ports = sorted({s["port"] for s in proc.get("listen", [])})
        if port is None and listen_ports:
            port = listen_ports[0]
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
                logdir_arg=flag_value(args, "logdir"),
                user=proc.get("username"),
                status="serving" if port is not None and port in listen_ports else "starting",
                started_by=started_by,
                create_time=proc.get("create_time"),
                path_prefix=normalize_path_prefix(content.get("path_prefix") or flag_value(args, "path_prefix")),
                bind=_bind_of(proc, args),
                info_file=info["path"] if info else None,
                log_path=rec.log_path if rec else None,
                cmdline=tuple(proc.get("cmdline") or ()),
                recorded_create_time=rec.create_time if rec else None,
                start_ticks=rec.start_ticks if rec else None,
            )
        )
    for info in infos:
        if info["path"] in used_infos:
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
                logdir_arg=flag_value(argv, "logdir") or rec.logdir,
                user=scan.get("user"),  # tbctl's records on this machine are this user's
                status="exited",
                started_by="tbctl",
                create_time=rec.create_time,
                path_prefix=normalize_path_prefix(flag_value(argv, "path_prefix")),
                bind=flag_value(argv, "host") or "127.0.0.1",
                log_path=rec.log_path,
                cmdline=rec.argv,
                recorded_create_time=rec.create_time,
                start_ticks=rec.start_ticks,
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
