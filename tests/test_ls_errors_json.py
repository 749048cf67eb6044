"""`ls --json` always answers in JSON: one host that cannot be listed is its `errors` record (and the
command's exit code), as it is among several hosts."""

from __future__ import annotations

import pytest

from tests.conftest import Cli
from tests.support.schemas import LS, conforms


@pytest.mark.parametrize("hosts", [["gpu1.invalid"], ["gpu1.invalid", "gpu2.invalid"]], ids=["one", "several"])
def test_an_unreachable_host_is_an_errors_record_in_the_json(hosts: list[str], ssh_backend: str, cli: Cli) -> None:
    args = [a for h in hosts for a in ("--host", h)]
    result = cli("ls", *args, "--json", exit_code=5 if len(hosts) == 1 else 0)
    listed = result.json()
    conforms(listed, LS)
    assert listed["instances"] == []
    assert [(e["host"], e["exit_code"]) for e in listed["errors"]] == [(h, 5) for h in hosts]
    if len(hosts) == 1:  # the failure is still said in its one line on stderr
        assert "tbctl: " in result.stderr and "gpu1.invalid" in result.stderr, result.stderr


def test_without_json_one_unreachable_host_is_one_error_line(ssh_backend: str, cli: Cli) -> None:
    result = cli("ls", "--host", "gpu1.invalid", exit_code=5)
    assert result.stdout == ""
    assert result.stderr.count("tbctl: ") == 1, result.stderr
