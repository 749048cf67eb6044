"""Every probe operation, declared once: its name on the wire (the table in tbctl/probe.py's `Probe`), the
typed `Host` method that asks it (tbctl/hosts/base.py), and whether a remote host runs it in the user's
own environment.

`in_user_env`: the operation looks for the user's programs, so on a remote host it gets the `--env`
prefix (the host's own, unless the caller gives one) and a login shell's PATH; `Host.ask` adds them from
the host (`Host.user_environment`), so no host has to override a method for it.

tests/test_operations.py fails when the probe's table, a `Host` method or the FakeHost of the fast tests
(tests/support/fake_host.py) is missing one of these, or has one that is not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    name: str  # the probe's op, as it travels: {"op": name, "args": {...}}
    method: str  # the typed Host method that asks it
    in_user_env: bool = False


OPERATIONS: tuple[Operation, ...] = (
    Operation("whoami", "whoami"),
    Operation("ping", "ping"),
    Operation("scan", "scan"),
    Operation("holders", "port_holders"),
    Operation("free_port", "first_free_port"),
    Operation("find_tensorboard", "find_tensorboard", in_user_env=True),
    Operation("resolve_path", "resolve_path"),
    Operation("private_dir", "private_dir"),
    Operation("alive", "alive"),
    Operation("proc_info", "proc_info"),
    Operation("launch", "launch"),
    Operation("prepare_private", "prepare_private"),
    Operation("launch_private", "launch_private"),
    Operation("private_ready", "private_ready"),
    Operation("remove_private_socket", "remove_private_socket"),
    Operation("wait_ready", "wait_ready"),
    Operation("wait_launched", "wait_launched"),
    Operation("wait_http", "wait_http"),
    Operation("http_get", "http_get"),
    Operation("send_signal", "send_signal"),
    Operation("wait_gone", "wait_gone"),
    Operation("remove_info_file", "remove_info_file"),
    Operation("tail", "tail"),
    Operation("read_log", "read_log"),
    Operation("run", "run"),
    Operation("pull_poll", "pull_poll"),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
