"""`--json`: the keys (and value types) of every record tbctl prints, pinned; stdout holds nothing but the
JSON document; and the README's "JSON output" table lists exactly these keys.

A change to a schema must change this file and the README together: scripts depend on these names.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper, free_port, start_listener, wait_until
from tests.test_remote import TENSORBOARD

README = Path(__file__).resolve().parents[1] / "README.md"

# A value's type: a Python type, a tuple of them (None for null), or a nested schema (dict) / list of one.
Num = (int, float)
OptNum = (int, float, type(None))
OptInt = (int, type(None))
OptStr = (str, type(None))

INSTANCE: dict[str, Any] = {
    "host": str, "pid": OptInt, "port": OptInt, "logdir": OptStr, "logdir_arg": OptStr, "user": OptStr,
    "status": str, "started_by": str, "create_time": OptNum, "path_prefix": str, "bind": str,
    "info_file": OptStr, "log_path": OptStr, "cmdline": [str], "note": str, "forward_port": OptInt,
    "job": OptStr, "job_state": OptStr, "node": OptStr, "step": OptStr,
    "url": OptStr, "uptime": OptNum,
}
UP = {"instance": INSTANCE, "url": str, "reused": bool, "port_note": str, "warnings": [str], "ready_seconds": OptNum}
FORWARD = {
    "host": str, "local_port": int, "remote_port": int, "instance_pid": OptInt, "logdir": OptStr, "tunnel": str,
    "tensorboard": str, "since": OptNum, "attempts": int, "error": str, "forwarder_pid": OptInt,
    "stop_instance": bool, "path_prefix": str, "via": str, "url": str,
}
HOST_ERROR = {"host": str, "error": str, "exit_code": int}
LS = {"instances": [INSTANCE], "forwards": [FORWARD], "errors": [HOST_ERROR]}
STOP_OUTCOME = {"instance": INSTANCE, "outcome": str, "info_file_removed": bool}
CLOSED_FORWARD = {
    "host": str, "local_port": int, "remote_port": int, "instance_pid": OptInt, "instance_create_time": OptNum,
    "instance_start_ticks": OptInt,
    "logdir": OptStr, "path_prefix": str, "stop_instance": bool, "created_at": Num,
}
DOWN = {"instances": [STOP_OUTCOME], "forwards": [CLOSED_FORWARD]}
HOLDER = {
    "host": str, "port": int, "pid": OptInt, "family": str, "addr": str, "user": OptStr, "cmdline": [str],
    "create_time": OptNum, "is_tensorboard": bool, "command": str,
}
HOLDER_OUTCOME = {"holder": HOLDER, "outcome": str}
FREE_PORT = {"port": int, "host": str, "holders": [HOLDER], "outcomes": [HOLDER_OUTCOME], "freed": bool,
             "dry_run": bool}
TUNNEL = {"host": str, "remote_port": int, "local_port": int, "url": str, "detached": bool}
LOGS = {"host": str, "pid": OptInt, "port": OptInt, "logdir": OptStr, "log_path": str, "running": bool,
        "lines": [str]}
LOGS_LINE = {"host": str, "pid": OptInt, "port": OptInt, "line": str}
OPEN = {"url": str, "opened": bool, "host": str, "pid": OptInt, "port": OptInt, "logdir": OptStr}
CONFIG_PATH = {"path": str, "exists": bool}
CONNECTION = {"host": str, "pid": OptInt, "control_path": str, "created_at": Num, "persist": Num}
CONNECTIONS = {"connections": [CONNECTION]}
CONFIG_HOST = {"logdir": OptStr, "port": OptInt, "local_port": OptInt, "tensorboard": OptStr, "env": OptStr,
               "tensorboard_args": [str], "connect_timeout": OptNum, "ssh": OptStr, "ssh_persist": Num, "open": bool}
CONFIG_SHOW = {
    "config_file": OptStr, "config_loaded": bool, "state_dir": str, "logdir": str, "port": int, "timeout": Num,
    "stop_timeout": Num, "connect_timeout": OptNum, "tensorboard": OptStr, "tensorboard_args": [str],
    "ssh": OptStr, "ssh_persist": Num, "open": bool, "ssh_in_effect": str, "ssh_reason": str,
    "hosts": {"*": CONFIG_HOST}, "sources": {"*": str},
}

# The README's table, row name -> schema (nested records are documented once, by name).
DOCUMENTED = {
    "up": UP, "instance": INSTANCE, "ls": LS, "forward": FORWARD, "host error": HOST_ERROR, "down": DOWN,
    "stop outcome": STOP_OUTCOME, "closed forward": CLOSED_FORWARD, "free-port": FREE_PORT, "holder": HOLDER,
    "holder outcome": HOLDER_OUTCOME, "tunnel": TUNNEL, "logs": LOGS, "logs -f": LOGS_LINE, "open": OPEN,
    "config path": CONFIG_PATH, "config show": CONFIG_SHOW, "config show host": CONFIG_HOST,
    "connections": CONNECTIONS, "connection": CONNECTION,
}


def conforms(value: Any, schema: Any, where: str = "$") -> None:
    """Raise AssertionError naming the first place `value` differs from `schema` (exact key sets)."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        if set(schema) == {"*"}:  # a map with free keys
            for key, item in value.items():
                conforms(item, schema["*"], f"{where}.{key}")
            return
        assert set(value) == set(schema), (
            f"{where}: keys differ: missing {sorted(set(schema) - set(value))}, extra {sorted(set(value) - set(schema))}")
        for key, sub in schema.items():
            conforms(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            conforms(item, schema[0], f"{where}[{i}]")
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        assert ok, f"{where}: {value!r} is not {' | '.join(t.__name__ for t in types)}"


def only_json(stdout: str) -> Any:
    """stdout is one JSON document and nothing else."""
    return json.loads(stdout)


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_CONFIG", str(tmp_path / "no-config.toml"))


# --- local ----------------------------------------------------------------------------------------------------


def test_up_ls_down_free_port_locally(cli: Cli, reaper: ProcessReaper, logdir: Path, port: int) -> None:
    up = cli("up", str(logdir), "--port", str(port), "--json")
    data = only_json(up.stdout)
    conforms(data, UP)
    assert data["instance"]["port"] == port and data["reused"] is False and data["url"] == f"http://127.0.0.1:{port}/"
    assert data["instance"]["status"] == "serving" and data["instance"]["started_by"] == "tbctl"
    reused = only_json(cli("--json", "up", str(logdir)).stdout)  # the global --json, before the command
    conforms(reused, UP)
    assert reused["reused"] is True and reused["ready_seconds"] is None

    ls = only_json(cli("ls", "--json").stdout)
    conforms(ls, LS)
    assert [i["pid"] for i in ls["instances"] if i["port"] == port] == [data["instance"]["pid"]]

    dry = only_json(cli("free-port", str(port), "--dry-run", "--json").stdout)
    conforms(dry, FREE_PORT)
    assert dry["dry_run"] is True and dry["freed"] is False and dry["outcomes"] == []
    assert [h["pid"] for h in dry["holders"]] == [data["instance"]["pid"]]
    assert dry["holders"][0]["is_tensorboard"] is True

    down = only_json(cli("down", str(port), "--json").stdout)
    conforms(down, DOWN)
    assert [(o["outcome"], o["instance"]["pid"]) for o in down["instances"]] == [("stopped", data["instance"]["pid"])]

    free = only_json(cli("free-port", str(port), "--json").stdout)
    conforms(free, FREE_PORT)
    assert free == {"port": port, "host": "localhost", "holders": [], "outcomes": [], "freed": True, "dry_run": False}

    listener = start_listener(reaper, port)  # not a TensorBoard: stopped only with --yes
    freed = only_json(cli("free-port", str(port), "--yes", "--json").stdout)
    conforms(freed, FREE_PORT)
    assert freed["freed"] is True and [(o["outcome"], o["holder"]["pid"]) for o in freed["outcomes"]] == [
        ("stopped", listener.pid)]


def test_errors_leave_stdout_empty_in_json_mode(cli: Cli) -> None:
    """A failed command prints no half document: stdout is empty, the error is on stderr."""
    for args, code in ((("down", "1", "--json"), 4), (("free-port", "0", "--json"), 2), (("open", "1", "--json"), 4),
                       (("logs", "1", "--json"), 4), (("up", "--port", "x", "--json"), 2)):
        failed = cli(*args, exit_code=code)
        assert failed.stdout == "" and failed.stderr.startswith("tbctl: "), args


def test_logs_open_config_json(cli: Cli, logdir: Path, port: int, reaper: ProcessReaper, tmp_path: Path) -> None:
    inst = only_json(cli("up", str(logdir), "--port", str(port), "--json").stdout)["instance"]
    logs = only_json(cli("logs", str(port), "--json").stdout)
    conforms(logs, LOGS)
    follower = reaper.popen([sys.executable, "-m", "tbctl", "logs", str(port), "-f", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()
    follower.send_signal(signal.SIGINT)
    rest, _ = follower.communicate(timeout=15)
    assert follower.returncode == 0
    for line in [first, *rest.splitlines()]:
        conforms(json.loads(line), LOGS_LINE)
    env = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PATH"] = str(tmp_path)  # no browser at all: `open` reports opened: false
    opened = subprocess.run([sys.executable, "-m", "tbctl", "open", str(port), "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    conforms(only_json(opened.stdout), OPEN)
    assert json.loads(opened.stdout)["pid"] == inst["pid"]
    conforms(only_json(cli("config", "path", "--json").stdout), CONFIG_PATH)
    Path(tmp_path / "no-config.toml").write_text('port = 7001\n[hosts.gpu1]\nenv = "~/venv"\n')
    shown = only_json(cli("config", "show", "--json").stdout)
    conforms(shown, CONFIG_SHOW)
    assert shown["hosts"]["gpu1"]["env"] == "~/venv" and shown["port"] == 7001


# --- remote: forwards and host errors -------------------------------------------------------------------------


def test_remote_up_tunnel_ls_down(ssh_env: Any, cli: Cli, reaper: ProcessReaper, logdir: Path) -> None:
    remote = ssh_env
    up = only_json(cli("up", "--host", remote.alias, str(logdir), "--tensorboard", TENSORBOARD, "--port", "6670",
                       "--detach", "--json").stdout)
    conforms(up, UP)
    reaper.adopt(up["instance"]["pid"])
    assert up["instance"]["host"] == remote.alias and up["instance"]["forward_port"] is not None
    assert up["url"] == f"http://127.0.0.1:{up['instance']['forward_port']}/"

    local = free_port()
    tunnel = only_json(cli("tunnel", remote.alias, "6670", "--local-port", str(local), "--detach", "--json").stdout)
    conforms(tunnel, TUNNEL)
    assert tunnel == {"host": remote.alias, "remote_port": 6670, "local_port": local,
                      "url": f"http://127.0.0.1:{local}/", "detached": True}

    ls = only_json(cli("ls", "--host", remote.alias, "--host", "tbctl-no-such-host.invalid", "--json",
                       "--connect-timeout", "2").stdout)
    conforms(ls, LS)
    assert {f["local_port"] for f in ls["forwards"]} >= {local, up["instance"]["forward_port"]}
    assert [e["host"] for e in ls["errors"]] == ["tbctl-no-such-host.invalid"] and ls["errors"][0]["exit_code"] == 5

    down = only_json(cli("down", str(local), "--json").stdout)
    conforms(down, DOWN)
    assert [f["local_port"] for f in down["forwards"]] == [local]
    down = only_json(cli("down", "--host", remote.alias, "--json").stdout)
    conforms(down, DOWN)
    pid = up["instance"]["pid"]
    assert wait_until(lambda: not [i for i in only_json(cli("ls", "--host", remote.alias, "--json").stdout)["instances"]
                                   if i["pid"] == pid and i["status"] == "serving"], 15)


# --- the README -----------------------------------------------------------------------------------------------


def _readme_tables() -> dict[str, set[str]]:
    text = README.read_text()
    section = text.split("\n## JSON output", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: ") and cells[0] != "record":
            rows[cells[0].strip("`").strip()] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return rows


def test_the_readme_documents_every_key() -> None:
    documented = _readme_tables()
    assert set(documented) == set(DOCUMENTED), f"README rows differ: {sorted(set(documented) ^ set(DOCUMENTED))}"
    for name, schema in DOCUMENTED.items():
        keys = set(schema) - {"*"}
        assert documented[name] == keys, (
            f"README row {name!r}: missing {sorted(keys - documented[name])}, extra {sorted(documented[name] - keys)}")
