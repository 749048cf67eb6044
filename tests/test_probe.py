"""The probe's two ways of seeing a machine (/proc + sock_diag on Linux, psutil elsewhere) agree, and its
safety rules hold."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tbctl import probe
from tests.support.procs import ProcessReaper, free_port, start_listener, start_plain_tensorboard


def test_where_there_is_proc_the_probe_reads_it_and_never_imports_psutil() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TBCTL_PROBE_PSUTIL"}
    code = ("import sys; from tbctl import probe; p = probe.Probe(); p.scan(); p.holders(22)\n"
            "print(type(p.backend).__name__, p.whoami()['psutil'], 'psutil' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ProcBackend", "False", "False"]


def test_tbctl_probe_psutil_chooses_the_psutil_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_PROBE_PSUTIL", "1")
    chosen = probe.default_backend()
    assert isinstance(chosen, probe.PsutilBackend) and probe.Probe(chosen).whoami()["psutil"] is True


def test_proc_and_psutil_answers_agree(reaper: ProcessReaper, logdir: Path) -> None:
    tb_port, v4, v6 = free_port(), free_port(), free_port(socket.AF_INET6)
    tb = start_plain_tensorboard(reaper, logdir, tb_port)
    start_listener(reaper, v4)
    start_listener(reaper, v6, family=socket.AF_INET6)
    by_proc, by_psutil = probe.Probe(probe.ProcBackend()), probe.Probe(probe.PsutilBackend())
    proc_view = {p: by_proc.holders(p) for p in (tb_port, v4, v6)}
    proc_scan = by_proc.scan()
    ps_view = {p: by_psutil.holders(p) for p in (tb_port, v4, v6)}
    ps_scan = by_psutil.scan()

    def key(rows: list[dict]) -> list[tuple]:
        return sorted((r["pid"], r["family"], r["addr"], r["port"], r["username"], r["is_tensorboard"]) for r in rows)

    for port in (tb_port, v4, v6):
        assert key(proc_view[port]) == key(ps_view[port]) and proc_view[port]
    for a, b in zip(proc_view[tb_port], ps_view[tb_port]):
        assert abs(a["create_time"] - b["create_time"]) < 0.05
    mine = [p for p in proc_scan["processes"] if p["pid"] == tb.pid]
    theirs = [p for p in ps_scan["processes"] if p["pid"] == tb.pid]
    assert len(mine) == len(theirs) == 1
    for field in ("cmdline", "cwd", "username", "logdir_abs", "zombie"):
        assert mine[0][field] == theirs[0][field], field
    assert [(s["addr"], s["port"]) for s in mine[0]["listen"]] == [(s["addr"], s["port"]) for s in theirs[0]["listen"]]


@pytest.mark.parametrize("backend", [probe.ProcBackend, probe.PsutilBackend])
def test_both_backends_tell_a_live_process_from_a_gone_one(reaper: ProcessReaper,
                                                           backend: type[probe.Backend]) -> None:
    listener = start_listener(reaper, free_port())
    seen = probe.Probe(backend())
    info = seen.backend.proc_info(listener.pid)
    assert info is not None and info["cmdline"] and info["zombie"] is False
    assert seen.alive(listener.pid, info["create_time"]) and not seen.alive(listener.pid, info["create_time"] - 100.0)
    listener.kill()
    listener.wait()
    assert seen.backend.proc_info(listener.pid) is None and not seen.alive(listener.pid, info["create_time"])


def test_serve_speaks_json_lines_after_the_hello() -> None:
    requests = [{"op": "ping"}, {"op": "alive", "args": {"pid": os.getpid(), "create_time": None}}, {"op": "nope"}]
    out = io.StringIO()
    probe.serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out)
    hello, *replies = out.getvalue().rstrip("\n").split("\n")  # not splitlines: the sentinel is \x1e
    assert hello.startswith(probe.HELLO_SENTINEL.decode())
    assert json.loads(hello[len(probe.HELLO_SENTINEL):])["ok"]["pid"] == os.getpid()
    assert [json.loads(r) for r in replies] == [{"ok": {}}, {"ok": {"alive": True}},
                                                {"error": {"type": "KeyError", "message": "'nope'", "op": "nope"}}]


def test_never_signals_pid_1_itself_or_its_parent() -> None:
    for pid in (1, os.getpid(), os.getppid()):
        assert probe.Probe().send_signal(pid, None, "SIGTERM") == {"outcome": "protected"}


def test_a_reused_pid_is_never_signalled(reaper: ProcessReaper) -> None:
    listener = start_listener(reaper, free_port())
    local = probe.Probe()
    real = local.backend.proc_info(listener.pid)["create_time"]
    assert local.send_signal(listener.pid, real - 100.0, "SIGTERM") == {"outcome": "gone"}  # "another" process
    assert listener.poll() is None
    assert local.send_signal(listener.pid, real, "SIGTERM") == {"outcome": "sent"}
    assert listener.wait(timeout=5) is not None


def test_recognises_tensorboard_command_lines_and_not_lookalikes() -> None:
    yes = [
        ["/venv/bin/python3", "/venv/bin/tensorboard", "--logdir", "runs"],
        ["/venv/bin/tensorboard", "serve", "--logdir=runs"],
        ["python", "-m", "tensorboard.main", "--logdir", "x"],
        ["python3", "-u", "-m", "tensorboard", "--port", "6006"],
    ]
    no = [
        ["/venv/lib/python3.11/site-packages/tensorboard_data_server/bin/server", "--port=0", "--die-after-stdin"],
        ["python", "-c", "import tensorboard; print('tensorboard')"],
        ["vim", "tensorboard"],
        [],
    ]
    assert all(probe.tensorboard_args(c) is not None for c in yes)
    assert all(probe.tensorboard_args(c) is None for c in no)
    assert probe.flag_value(["--logdir", "a", "--logdir=b"], "logdir") == "b"


def test_remove_info_file_refuses_anything_else(tmp_path: Path) -> None:
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    assert probe.remove_info_file(str(victim))["removed"] is False
    assert victim.exists()


def test_the_probe_travels_without_docstrings_and_comments_but_with_its_code_and_line_numbers() -> None:
    """What travels is probe.py less its docstrings (left as '') and comment lines: the same code, and every
    line where it is in the file, so a remote traceback points at the right line."""
    import ast

    from tbctl.hosts import remote as remote_probe

    def code_of(source: str) -> str:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                    isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0].value.value = ""
        return ast.dump(tree)

    original = Path(probe.__file__).read_text(encoding="utf-8")
    shipped = remote_probe.shipped_source().decode()
    assert code_of(shipped) == code_of(original)
    assert shipped.count("\n") == original.count("\n")

    def lines_of(source: str) -> list[tuple[str, int]]:
        return [(type(node).__name__, node.lineno) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.stmt)]

    assert lines_of(shipped) == lines_of(original)
    assert len(shipped) < len(original) * 0.8


def test_the_probe_travels_in_one_initial_tcp_window_and_runs_from_its_bootstrap(tmp_path: Path) -> None:
    """What the client writes before its first request fits in TCP's initial window (10 segments of
    1448 bytes), so on a real link it costs no extra round trip; and the bootstrap runs it as sent, from a
    directory holding a `zlib.py` that must not be imported in its place."""
    import subprocess
    import sys

    from tbctl.hosts import remote as remote_probe

    preamble = remote_probe.preamble()
    assert len(preamble) <= 10 * 1448, len(preamble)
    (tmp_path / "zlib.py").write_text("raise SystemExit('the home directory was imported')\n")
    res = subprocess.run([sys.executable, "-c", remote_probe.BOOTSTRAP], input=preamble + b'{"op": "ping"}\n',
                         capture_output=True, timeout=30, cwd=tmp_path)
    hello, answer = res.stdout.split(b"\n")[:2]
    assert hello.startswith(probe.HELLO_SENTINEL), res.stderr
    assert json.loads(answer) == {"ok": {}}
