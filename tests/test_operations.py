"""Every probe operation is declared once (tbctl/hosts/operations.py), and each declaration is kept: the
probe answers it, a typed `Host` method asks it, and the FakeHost of the fast tests answers it with the
probe's own parameters. Adding an operation without one of these fails here, by name."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from tbctl.hosts.base import Host
from tbctl.hosts.operations import OPERATIONS, Operation
from tbctl.hosts.remote import RemoteHost
from tbctl.probe import Probe
from tests.support.fake_host import FakeHost


def _probe_table() -> dict[str, Any]:
    return dict(Probe()._ops)


def without_typed_method(operations: Iterable[Operation]) -> list[str]:
    """Declared operations with no typed Host method that asks them."""
    missing = []
    for op in operations:
        method = getattr(Host, op.method, None)
        if not callable(method) or not re.search(rf'self\.ask\(\s*"{op.name}"', inspect.getsource(method)):
            missing.append(op.name)
        elif inspect.signature(method).return_annotation is inspect.Signature.empty:
            missing.append(op.name)
    return missing


def without_fake(operations: Iterable[Operation]) -> list[str]:
    """Declared operations the FakeHost does not answer, or answers with other parameters than the probe's."""
    table = _probe_table()
    missing = []
    for op in operations:
        handler = getattr(FakeHost, f"_op_{op.name}", None)
        if handler is None:
            missing.append(op.name)
            continue
        wanted = set(inspect.signature(table[op.name]).parameters) if op.name in table else set()
        taken = set(inspect.signature(handler).parameters) - {"self"}
        if not wanted <= taken:
            missing.append(f"{op.name} (no {', '.join(sorted(wanted - taken))})")
    return missing


def test_the_probe_answers_exactly_the_declared_operations() -> None:
    assert set(_probe_table()) == {op.name for op in OPERATIONS}


def test_every_operation_has_a_typed_host_method() -> None:
    assert without_typed_method(OPERATIONS) == []


def test_every_operation_has_a_fake_with_the_probes_parameters() -> None:
    assert without_fake(OPERATIONS) == []
    declared = {op.name for op in OPERATIONS}
    extra = [name[4:] for name in dir(FakeHost) if name.startswith("_op_") and name[4:] not in declared]
    assert extra == [], "FakeHost answers operations nothing declares"


def test_a_new_operation_without_its_method_or_fake_is_named() -> None:
    version = Operation("tensorboard_version", "tensorboard_version")
    assert without_typed_method([version]) == ["tensorboard_version"]
    assert without_fake([version]) == ["tensorboard_version"]


def test_host_methods_ask_declared_operations_only() -> None:
    """`call` is the transport; every question goes through `ask` (or `request`, for a batch), which knows
    the declaration: no method names an operation to `call` itself."""
    source = inspect.getsource(Host)
    assert "self.call(" in source and not re.search(r'self\.call\(\s*"', source)


class _RecordingRemote(RemoteHost):
    """A remote host as core sees it, with its transport replaced by a list."""

    name = "gpu1"

    def __init__(self, env_prefix: str | None) -> None:
        self.env_prefix = env_prefix
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.asked.append((op, args))
        return {"path": "/opt/venv/bin/tensorboard", "searched": []}


def test_a_remote_host_searches_in_the_users_environment_and_the_caller_may_name_another() -> None:
    host = _RecordingRemote("~/venv")
    host.find_tensorboard()
    host.find_tensorboard(env_prefix="/opt/other")
    assert [args for _, args in host.asked] == [
        {"env_prefix": "~/venv", "login_shell": True},
        {"env_prefix": "/opt/other", "login_shell": True},
    ]


def test_this_machine_searches_in_this_process_environment() -> None:
    local = FakeHost()
    local.find_tensorboard()
    remote = FakeHost("gpu1", remote=True)
    remote.env_prefix = "~/venv"
    remote.find_tensorboard()
    assert (local.environments, remote.environments) == ([(None, False)], [("~/venv", True)])
