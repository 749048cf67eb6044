"""`--json`: the keys (and value types) of every record tbctl prints, pinned; stdout holds nothing but the
JSON document; and the README's "JSON output" table lists exactly these keys.

The schemas are in tests/support/schemas.py: a change to one changes it and the README together.
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

from tests.conftest import Cli
from tests.support.procs import TENSORBOARD, ProcessReaper, free_port, start_listener, wait_until
from tests.support.schemas import (CONFIG_PATH, CONFIG_SHOW, DOCUMENTED, DOWN, FREE_PORT, LOGS, LOGS_LINE, LS, OPEN,
                                   TUNNEL, UP, conforms)

README = Path(__file__).resolve().parents[1] / "README.md"


def only_json(stdout: str) -> Any:
    """stdout is one JSON document and nothing else."""
    return json.loads(stdout)


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


def test_logs_open_config_json(cli: Cli, logdir: Path, port: int, reaper: ProcessReaper, tmp_path: Path,
                               no_config_file: Path) -> None:
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
    no_config_file.write_text('port = 7001\n[hosts.gpu1]\nenv = "~/venv"\n')
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
