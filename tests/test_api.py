"""tbctl from Python: `tbctl.up()` and its Dashboard, `ls`, `down` and `free_port`, with real TensorBoards here
and over the test sshd (both backends). The records are the ones the commands print as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import tbctl
from tbctl.errors import InstanceNotFound, PortBusy, SSHError, TensorBoardFailed, UsageError
from tbctl.models import as_json
from tests.conftest import Cli, tensorboard_pids_for
from tests.support import schemas
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, free_port, http_get, port_free, start_listener, wait_until

REPO = Path(__file__).resolve().parent.parent


def _answers(url: str, logdir: Path | str) -> bool:
    status, body = http_get(url + "data/logdir")
    return status == 200 and json.loads(body)["logdir"] == str(logdir)


def test_public_names_are_pinned() -> None:
    assert sorted(tbctl.__all__) == sorted(["__version__", "Dashboard", "up", "ls", "down", "free_port",
                                            "load_ipython_extension"])
    from tbctl import api

    assert sorted(api.__all__) == ["Dashboard", "down", "free_port", "ls", "up"]
    assert all(getattr(tbctl, name) is getattr(api, name) for name in api.__all__)


def test_import_tbctl_loads_no_cli_ssh_or_notebook_library() -> None:
    code = ("import sys, tbctl\n"
            "print(sorted(m for m in ('typer', 'rich', 'paramiko', 'psutil', 'IPython', 'jupyter_client', "
            "'tbctl.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_with_up_answers_inside_and_leaves_nothing_behind(reaper: ProcessReaper, logdir: Path, port: int,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    with tbctl.up(str(logdir), port=port) as board:
        reaper.adopt(board.pid)
        assert (board.port, board.local_port, board.host, board.logdir, board.reused) == (
            port, port, "localhost", str(logdir), False)
        assert board.url == f"http://127.0.0.1:{port}/" and _answers(board.url, logdir)
        assert set(as_json(board.result)) == set(schemas.UP)  # the record `tbctl up --json` prints
        assert [i.pid for i in tbctl.ls().instances if i.status == "serving" and i.logdir == str(logdir)] == [board.pid]
    assert board.stopped and not alive(board.pid) and not tensorboard_pids_for(logdir)
    assert not [i for i in tbctl.ls().instances if i.pid == board.pid]  # its record went with it
    assert capfd.readouterr() == ("", "")  # the API prints nothing unless asked


def test_messages_are_given_only_to_who_asks(reaper: ProcessReaper, logdir: Path, port: int) -> None:
    said: list[str] = []
    with tbctl.up(str(logdir), port=port, messages=said.append) as board:
        reaper.adopt(board.pid)
    assert any(f"starting TensorBoard on localhost:{port}" in line for line in said), said


def test_a_reused_instance_outlives_the_dashboard_that_reused_it(reaper: ProcessReaper, logdir: Path, port: int) -> None:
    first = tbctl.up(str(logdir), port=port)
    reaper.adopt(first.pid)
    with tbctl.up(str(logdir)) as again:
        assert again.reused and again.pid == first.pid and again.url == first.url
    assert alive(first.pid) and _answers(first.url, logdir)
    fresh = tbctl.up(str(logdir), new=True)
    reaper.adopt(fresh.pid)
    assert fresh.pid != first.pid and not fresh.reused
    fresh.stop()
    fresh.stop()  # idempotent
    first.stop()
    assert wait_until(lambda: not tensorboard_pids_for(logdir), 10)


def test_a_killed_instance_is_never_reused(reaper: ProcessReaper, logdir: Path, port: int) -> None:
    first = tbctl.up(str(logdir), port=port)
    reaper.adopt(first.pid)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)  # TensorBoard leaves its info file behind on SIGKILL
    assert wait_until(lambda: not alive(first.pid), 10)
    with tbctl.up(str(logdir), port=port) as second:
        reaper.adopt(second.pid)
        assert not second.reused and second.pid != first.pid and _answers(second.url, logdir)


def test_ls_down_and_free_port_return_the_records_the_commands_print(cli: Cli, reaper: ProcessReaper, logdir: Path,
                                                                     port: int) -> None:
    board = tbctl.up(str(logdir), port=port)
    reaper.adopt(board.pid)
    mine = lambda rows: [r for r in rows if r["pid"] == board.pid]  # noqa: E731
    from_python = mine(as_json(tbctl.ls().instances))
    from_cli = mine(cli("ls", "--json").json()["instances"])
    for row in (*from_python, *from_cli):
        row.pop("uptime")
    assert from_python == from_cli and len(from_python) == 1
    assert as_json(tbctl.free_port(port, dry_run=True)) == cli("free-port", str(port), "--dry-run", "--json").json()
    ended = tbctl.down(port)
    assert [(o.instance.pid, o.outcome) for o in ended.outcomes] == [(board.pid, "stopped")]
    assert set(as_json(ended)) >= {"outcomes", "closed_forwards"}
    freed = tbctl.free_port(port)
    assert as_json(freed) == {"port": port, "host": "localhost", "holders": [], "outcomes": [], "freed": True,
                              "dry_run": False}


def test_free_port_stops_only_with_yes_what_a_person_would_be_asked_about(reaper: ProcessReaper, port: int) -> None:
    holder = start_listener(reaper, port)
    with pytest.raises(PortBusy) as refused:
        tbctl.free_port(port)
    assert refused.value.port == port and f"not stopping pid {holder.pid} without confirmation" in refused.value.message
    assert "yes=True" in (refused.value.hint or "") and alive(holder.pid)
    freed = tbctl.free_port(port, yes=True)
    assert freed.freed and [o.holder.pid for o in freed.outcomes] == [holder.pid] and port_free(port)


def test_errors_are_tbctls_exceptions_never_an_exit(tmp_path: Path, logdir: Path) -> None:
    with pytest.raises(UsageError):
        tbctl.up(str(logdir), port=70000)
    with pytest.raises(UsageError, match="is not an executable file"):
        tbctl.up(str(logdir), tensorboard=str(tmp_path / "no-tensorboard"))
    with pytest.raises(TensorBoardFailed) as failed:
        tbctl.up(str(logdir), port=free_port(), tensorboard_args=["--no_such_flag=1"], timeout=30)
    assert "no_such_flag" in failed.value.log_tail
    with pytest.raises(InstanceNotFound):
        tbctl.down(str(tmp_path / "nothing-serves-this"))
    with pytest.raises(UsageError):
        tbctl.down()
    with pytest.raises(SSHError):
        tbctl.up(str(logdir), host="no-such-host.invalid", connect_timeout=5)


def test_up_on_a_remote_host_forwards_while_the_dashboard_lives(ssh_env: Any, reaper: ProcessReaper, logdir: Path) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    with tbctl.up(str(logdir), host=ssh_env.alias, tensorboard=TENSORBOARD) as board:
        reaper.adopt(board.pid)
        # the caller's process keeps its own signal handlers (a kernel's SIGTERM is not tbctl's to take)
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
        assert board.forwarding and not board.detached and board.host == ssh_env.alias
        assert board.local_port != board.port or ssh_env.netns is None
        assert _answers(board.url, logdir)
        local_port = board.local_port
    assert wait_until(lambda: not alive(board.pid), 10), "the TensorBoard it started stops with it"
    assert local_port is not None and wait_until(lambda: port_free(local_port), 10)


def test_up_detached_on_a_remote_host_and_stop_ends_the_background_forward(ssh_env: Any, reaper: ProcessReaper,
                                                                            logdir: Path) -> None:
    board = tbctl.up(str(logdir), host=ssh_env.alias, tensorboard=TENSORBOARD, detach=True)
    reaper.adopt(board.pid)
    try:
        assert board.detached and not board.forwarding and _answers(board.url, logdir)
        assert [f.local_port for f in tbctl.ls().forwards] == [board.local_port]
    finally:
        board.stop()
    assert not tbctl.ls().forwards
    assert wait_until(lambda: not alive(board.pid), 10)


def test_up_private_serves_a_socket_on_the_host_only_while_the_dashboard_lives(ssh_env: Any, reaper: ProcessReaper,
                                                                               logdir: Path) -> None:
    with tbctl.up(str(logdir), host=ssh_env.alias, tensorboard=TENSORBOARD, private=True) as board:
        reaper.adopt(board.pid)
        socket_path = board.socket
        assert board.port is None and socket_path and board.instance.exposure == "private", board.result
        assert board.forwarding and _answers(board.url, logdir)
    assert wait_until(lambda: not alive(board.pid), 10), "the TensorBoard it started stops with it"
    assert wait_until(lambda: not os.path.lexists(socket_path), 10), "its socket goes with it"


def test_private_here_is_a_usage_error(logdir: Path) -> None:
    with pytest.raises(UsageError, match="--private needs --host"):
        tbctl.up(str(logdir), private=True)


def test_up_on_a_remote_host_from_a_thread(ssh_env: Any, reaper: ProcessReaper, logdir: Path) -> None:
    """A notebook's or a training loop's worker thread may call up(); only the main thread may set signal
    handlers, so the API must not try."""
    got: list[Any] = []

    def start() -> None:
        try:
            got.append(tbctl.up(str(logdir), host=ssh_env.alias, tensorboard=TENSORBOARD))
        except BaseException as exc:  # handed to the test's thread
            got.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(120)
    board = got[0]
    assert isinstance(board, tbctl.Dashboard), board
    reaper.adopt(board.pid)
    with board:
        assert _answers(board.url, logdir)
    assert wait_until(lambda: not alive(board.pid), 10)


def test_a_process_that_exits_holding_a_foreground_forward_stops_what_it_started(ssh_env: Any, reaper: ProcessReaper,
                                                                                  logdir: Path) -> None:
    """As Ctrl-C does for `tbctl up --host`: the forward dies with the process, so the TensorBoard it started
    for that forward stops too."""
    code = (f"import tbctl\nboard = tbctl.up({str(logdir)!r}, host={ssh_env.alias!r}, tensorboard={TENSORBOARD!r})\n"
            "print(board.pid, board.local_port, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    pid, local_port = map(int, out.stdout.split())
    reaper.adopt(pid)
    assert wait_until(lambda: not alive(pid), 10) and wait_until(lambda: port_free(local_port), 10)
