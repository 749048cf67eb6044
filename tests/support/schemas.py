"""The keys (and value types) of every record tbctl prints with `--json`, pinned: scripts depend on these
names. tests/test_json_schema.py checks tbctl's output and the README's "JSON output" table against them; a
change to a schema changes this file and the README together."""

from __future__ import annotations

from typing import Any

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
    "socket": OptStr, "url": OptStr, "uptime": OptNum, "exposure": str,
}
UP = {"instance": INSTANCE, "url": str, "reused": bool, "port_note": str, "warnings": [str], "ready_seconds": OptNum}
FORWARD = {
    "host": str, "local_port": int, "remote_port": int, "instance_pid": OptInt, "logdir": OptStr, "tunnel": str,
    "tensorboard": str, "since": OptNum, "attempts": int, "error": str, "forwarder_pid": OptInt,
    "stop_instance": bool, "path_prefix": str, "via": str, "remote_socket": OptStr, "url": str,
}
HOST_ERROR = {"host": str, "error": str, "exit_code": int}
PULL_SOURCE = {"host": str, "logdir": str, "label": str, "state": str, "files": int, "gone": int, "bytes": int,
               "pending": int, "lag": OptNum, "error": str, "pid": OptInt}
PULL = {"id": str, "sources": [PULL_SOURCE], "mirror": str, "port": OptInt, "instance_pid": OptInt,
        "tensorboard": str, "url": OptStr}
LS = {"instances": [INSTANCE], "forwards": [FORWARD], "errors": [HOST_ERROR], "pulls": [PULL]}
STOP_OUTCOME = {"instance": INSTANCE, "outcome": str, "info_file_removed": bool}
CLOSED_FORWARD = {
    "host": str, "local_port": int, "remote_port": int, "instance_pid": OptInt, "instance_create_time": OptNum,
    "instance_start_ticks": OptInt,
    "logdir": OptStr, "path_prefix": str, "stop_instance": bool, "created_at": Num, "remote_socket": OptStr,
}
DOWN = {"instances": [STOP_OUTCOME], "forwards": [CLOSED_FORWARD], "pulls": [str], "purged": [str]}
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
               "tensorboard_args": [str], "connect_timeout": OptNum, "ssh": OptStr, "ssh_persist": Num, "open": bool,
               "private": bool}
CONFIG_SHOW = {
    "config_file": OptStr, "config_loaded": bool, "state_dir": str, "logdir": str, "port": int, "timeout": Num,
    "stop_timeout": Num, "connect_timeout": OptNum, "tensorboard": OptStr, "tensorboard_args": [str],
    "ssh": OptStr, "ssh_persist": Num, "open": bool, "private": bool, "notebook_url": str, "pull": [str],
    "pull_interval": Num, "pull_budget": int, "ssh_in_effect": str, "ssh_reason": str,
    "hosts": {"*": CONFIG_HOST}, "sources": {"*": str},
}

# The README's table, row name -> schema (nested records are documented once, by name).
DOCUMENTED = {
    "up": UP, "instance": INSTANCE, "ls": LS, "forward": FORWARD, "host error": HOST_ERROR, "down": DOWN,
    "stop outcome": STOP_OUTCOME, "closed forward": CLOSED_FORWARD, "free-port": FREE_PORT, "holder": HOLDER,
    "holder outcome": HOLDER_OUTCOME, "tunnel": TUNNEL, "logs": LOGS, "logs -f": LOGS_LINE, "open": OPEN,
    "config path": CONFIG_PATH, "config show": CONFIG_SHOW, "config show host": CONFIG_HOST,
    "connections": CONNECTIONS, "connection": CONNECTION, "pull": PULL, "pull source": PULL_SOURCE,
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
