"""Turning result records into a rich table, plain lines, or JSON. Nothing here decides anything."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tbctl.cli.visible import visible
from tbctl.models import (ForwardInfo, FreePortResult, PortHolder, PortReport, PullInfo, StopOutcome, TensorBoardInstance,
                          UpResult, as_json, human_bytes)

if TYPE_CHECKING:
    from tbctl.cli.environment import Environment
    from tbctl.records import ForwardRecord


def print_json(env: Environment, payload: Any) -> None:
    env.stdout.write(json.dumps(as_json(payload), indent=2, sort_keys=True) + "\n")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def since(create_time: float | None) -> str:
    if create_time is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(create_time))


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(inst: TensorBoardInstance) -> str:
    """The status cell: the status, and why (a note). Who can reach it is the exposure column's."""
    return f"{inst.status} ({inst.note})" if inst.note else inst.status


def instances_table(env: Environment, instances: Sequence[TensorBoardInstance], *, errors: Sequence[Any] = (),
                    show_host: bool = False) -> None:
    for err in errors:
        env.warn(f"{err.host}: {err.error}")
    if not instances and not errors:
        env.info("no TensorBoard running")
        return
    jobs = any(inst.job for inst in instances)  # Slurm job steps: which job, which node
    columns = (["host"] if show_host else []) + ["pid", "port", "logdir", "url", "user", "uptime", "started-by"] \
        + (["job"] if jobs else []) + ["exposure", "status"]
    rows = []
    for inst in instances:
        job = [f"{inst.step} on {inst.node}" if inst.job else "-"] if jobs else []
        rows.append(([inst.host] if show_host else []) + [
            str(inst.pid) if inst.pid is not None else "-",
            str(inst.port) if inst.port is not None else inst.socket or "-",  # a private one: its socket
            inst.logdir or inst.logdir_arg or "-",
            inst.url or "-",
            inst.user or "-",
            human_duration(inst.uptime) if not inst.has_ended else "-",
            inst.started_by,
            *job,
            inst.exposure,
            _status(inst),
        ])
    for err in errors:
        rows.append(([err.host] if show_host else []) + ["-"] * (9 if jobs else 8) + [f"error: {err.error}"])
    table(env, columns, rows, status_column=len(columns) - 1)


def forwards_table(env: Environment, forwards: Sequence[ForwardInfo]) -> None:
    """Background forwards: the tunnel and its TensorBoard, each with its own health."""
    if not forwards:
        return
    rows = []
    for f in forwards:
        tunnel: str = f.tunnel
        if f.tunnel == "reconnecting" and f.since:
            tunnel += f" since {time.strftime('%H:%M:%S', time.localtime(f.since))}, {f.attempts} attempt(s)"
        elif f.tunnel == "stale":
            tunnel += " (forwarder gone; `tbctl down --all` cleans it)"
        if f.error and f.tunnel != "up":
            tunnel += f": {f.error}"
        if f.via and f.tunnel in ("up", "reconnecting"):
            tunnel += f" (via {f.via})"
        rows.append([f.host, str(f.local_port), f.remote_end, f.url, str(f.forwarder_pid or "-"),
                     f.tensorboard, tunnel])
    if not env.json:
        env.stdout.write("\nforwards:\n")
    table(env, ["host", "local", "remote", "url", "forwarder", "tensorboard", "tunnel"], rows, status_column=6)


def pulls_table(env: Environment, pulls: Sequence[PullInfo]) -> None:
    """Detached pulls (`up --pull … --detach`): one row per source, under its pull's URL."""
    if not pulls:
        return
    rows = []
    for p in pulls:
        for s in p.sources:
            files = f"{s.files}" + (f" ({s.gone} deleted there)" if s.gone else "")
            state = s.state + (f": {s.error}" if s.error and s.state != "up" else "")
            rows.append([f"{s.host}:{s.logdir}", s.label, files, human_bytes(s.bytes), human_duration(s.lag),
                         p.url or f"- (TensorBoard {p.tensorboard})", state])
    env.stdout.write("\npulls:\n")
    table(env, ["source", "runs", "files", "bytes", "lag", "url", "state"], rows, status_column=6)


def pulls_ended(env: Environment, pulls: Sequence[str], purged: Sequence[str]) -> None:
    for ident in pulls:
        env.result_line(f"ended pull {ident}" + ("" if purged else "; its mirror stays until `tbctl down --purge`"))
    for path in purged:
        env.result_line(f"deleted mirror {path}")


# The columns a narrow terminal may shorten, and where: paths in the middle (their start and their run name
# stay), names and free text at the end. The others (pid, port, url, …) stay whole: they are what one copies.
_SHORTEN = {"logdir": "middle", "port": "middle", "host": "middle", "user": "end", "status": "end", "tunnel": "end", "job": "end"}
_NARROWEST = 8  # a shortened cell keeps at least this many characters (or its header's width)
# Headers a terminal too narrow for them gets in short, when shortening cells was not enough: a column whose
# cells are short words under a long header.
_SHORT_HEADERS = {"started-by": "by"}


def shorten(text: str, width: int, *, where: str = "middle") -> str:
    """`text` in at most `width` characters, with "…" where the rest was taken out."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    if where == "end":
        return text[: width - 1] + "…"
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def fit_rows(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> tuple[list[list[str]], int, list[str]]:
    """(`rows` with the cells of the shortenable columns cut, widest column first, until a row fits in
    `width` characters, the gap between columns, the headers): so that a terminal shows one row per line
    instead of folding cells into pieces. Columns go two spaces apart, or one (as in `ps`) when two do not
    fit; a long header over short cells is shortened last (_SHORT_HEADERS)."""
    natural = [max([len(column), *(len(r[i]) for r in rows)]) for i, column in enumerate(columns)]

    def narrowest(headers: Sequence[str], cells: list[int]) -> int:  # every column as far as it may be cut
        return sum(min(n, max(len(c), _NARROWEST)) if c in _SHORTEN else n for c, n in zip(headers, cells)) \
            + len(headers) - 1

    if narrowest(columns, natural) > width:  # cutting cells alone will not do: shorten headers too
        columns = [_SHORT_HEADERS.get(c, c) for c in columns]
        natural = [max([len(column), *(len(r[i]) for r in rows)]) for i, column in enumerate(columns)]
    widths = list(natural)
    gap = 2 if sum(natural) + 2 * (len(columns) - 1) <= width else 1
    excess = sum(widths) + gap * (len(widths) - 1) - width
    first = {i: max(len(c), _NARROWEST) for i, c in enumerate(columns) if c in _SHORTEN}
    # then user names down to their header's width; paths and statuses keep _NARROWEST
    then = {i: len(c) if c == "user" else first[i] for i, c in enumerate(columns) if c in _SHORTEN}
    for floor in (first, then):
        while excess > 0:
            shrinkable = [i for i in floor if widths[i] > floor[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    fitted = [[shorten(cell, widths[i], where=_SHORTEN.get(columns[i], "end")) if widths[i] < natural[i] else cell
               for i, cell in enumerate(r)] for r in rows]
    return fitted, gap, list(columns)


_STATUS_STYLE = {"serving": "green", "starting": "yellow", "unknown": "dim", "stale": "red", "exited": "yellow", "dead": "red", "down": "red",
                 "up": "green", "reconnecting": "yellow", "error:": "red"}


def table(env: Environment, columns: Sequence[str], rows: Sequence[Sequence[str]], *, status_column: int | None = None) -> None:
    """A rich table on a terminal; plain space-aligned columns, one row per line, when piped (for grep
    and awk, and because a pipe should not pay for importing rich.table). Every cell is shown with its
    control characters escaped (a logdir or a command line is anyone's text), newlines included."""
    rows = [[visible(str(c)) for c in r] for r in rows]
    if not env.stdout_isatty:
        widths = [max(len(str(r[i])) for r in [list(columns), *rows]) for i in range(len(columns))]
        for r in [list(columns), *rows]:
            env.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    rows, gap, columns = fit_rows(columns, rows, env.console.width)
    rich_table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, gap, 0, 0))
    for column in columns:
        rich_table.add_column(column, overflow="ellipsis", no_wrap=True, min_width=len(column))
    for r in rows:
        cells = [escape(c) for c in r]
        if status_column is not None:
            style = _STATUS_STYLE.get(str(r[status_column]).split(" ")[0], "")
            if style:
                cells[status_column] = f"[{style}]{cells[status_column]}[/{style}]"
        rich_table.add_row(*cells)
    env.console.print(rich_table)


def up_result(env: Environment, result: UpResult) -> None:
    inst = result.instance
    if result.reused:
        env.info(f"reusing TensorBoard pid {inst.pid} serving {inst.logdir} (tbctl up --new starts another)")
    else:
        ready = f", ready in {result.ready_seconds:.1f} s" if result.ready_seconds is not None else ""
        where = f" (step {inst.step} of job {inst.job} on {inst.node})" if inst.job else ""
        private = f" privately on {inst.socket}" if inst.socket else ""
        env.info(f"TensorBoard pid {inst.pid}{where} serving {inst.logdir}{private}{ready}")
        if inst.log_path:
            env.info(f"log: {inst.log_path}")
    # The URL alone on stdout, so `$(tbctl up -q runs)` is the URL.
    env.stdout.write(visible(result.url) + "\n")


_STOP_WORDS = {
    "stopped": "stopped",
    "killed": "killed (SIGKILL)",
    "cleaned": "removed stale record of",
    "gone": "already gone:",
    "denied": "not allowed to stop",
    "protected": "refused to signal",
    "survived": "could not stop",
}


def stop_outcomes(env: Environment, outcomes: Sequence[StopOutcome], *, closed_forwards: Sequence[ForwardRecord] = (),
                  quiet_if_empty: bool = False) -> None:
    for rec in closed_forwards:
        env.result_line(f"closed forward 127.0.0.1:{rec.local_port} → {rec.host}:{rec.remote_socket or rec.remote_port}")
    if not outcomes and not closed_forwards:
        if not quiet_if_empty:
            env.info("no TensorBoard to stop")
        return
    for o in outcomes:
        inst = o.instance
        what = f"pid {inst.pid}" if inst.pid is not None else "TensorBoard"
        if inst.job:
            then = "the job keeps running" if inst.job_state == "RUNNING" else f"job {inst.job_state}"
            what = f"step {inst.step} of job {inst.job} ({what} on {inst.node}; {then})"
        where = ", ".join(x for x in (f"port {inst.port}" if inst.port else "", inst.logdir or "") if x)
        line = f"{_STOP_WORDS[o.outcome]} {what}" + (f" ({where})" if where else "")
        if o.info_file_removed and o.outcome != "cleaned":
            line += "; removed its stale info file"
        if o.outcome == "denied":
            line += f": it belongs to {inst.user or 'another user'} (try sudo)"
        env.result_line(line)


# Why a holder can be known only by its socket: the kernel shows every socket's owner to everyone, but which
# process holds it (its pid, command line, start time) only to that process's user and to root.
HIDDEN_HOLDER = "which process it is: shown only to that user and root"


def holder_line(holder: PortHolder) -> str:
    user = holder.user or "another user"
    where = f"{holder.family} {holder.addr}"
    if holder.pid is None:
        return f"a process of {user}  {where}\n    (tbctl cannot see {HIDDEN_HOLDER})"
    kind = "TensorBoard, " if holder.is_tensorboard else ""
    started = f"  since {since(holder.create_time)}" if holder.create_time is not None else ""
    command = _short(visible(holder.command), 200) if holder.cmdline else \
        "(tbctl cannot see its command line: another user's process)"
    return f"pid {holder.pid}  {kind}user {user}  {where}{started}\n    {command}"


def port_report(env: Environment, report: PortReport) -> None:
    if not report.holders:
        return
    env.result_line(f"port {report.port} on {report.host} is held by:")
    seen: set[tuple[int | None, str, str]] = set()
    for holder in report.holders:
        key = (holder.pid, holder.family, holder.addr)
        if key not in seen:
            seen.add(key)
            env.result_line("  " + holder_line(holder))


def free_port_result(env: Environment, result: FreePortResult) -> None:
    for o in result.outcomes:
        h = o.holder
        if o.outcome == "denied":
            what = f"pid {h.pid}" if h.pid is not None else f"the holder on {h.family} {h.addr}"
            env.warn(f"{what} belongs to {h.user or 'another user'}; not signalled: only root may signal another "
                     "user's process (run tbctl with sudo to stop it)")
        else:
            env.result_line(f"{_STOP_WORDS.get(o.outcome, o.outcome)} pid {h.pid} ({_short(visible(h.command), 60)})")
    if result.freed:
        env.result_line(f"port {result.port} is free")
