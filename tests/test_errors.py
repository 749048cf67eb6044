"""Errors carry data: the README's exit-code table is `ExitCode` (the same codes, names and meanings, so
neither can drift), a probe error names its host, operation and remote exception type, and SSH refusals are
told apart by their class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbctl.errors import ExitCode

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_exit_codes() -> list[tuple[int, str, str]]:
    """(code, name, meaning) of each row of the table under "## Exit codes"."""
    section = README.read_text().split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1].strip("`"), cells[2]))
    return rows


def test_the_readme_table_is_the_exit_code_enum() -> None:
    assert _readme_exit_codes() == [(int(code), code.name, code.meaning) for code in ExitCode]



def test_a_probe_error_carries_the_host_the_operation_and_the_remote_exception_type() -> None:
    from tbctl.errors import ProbeError
    from tbctl.hosts.remote import answer

    line = json.dumps({"error": {"type": "PermissionError", "message": "[Errno 13] /proc/1/fd"}}).encode()
    with pytest.raises(ProbeError) as caught:
        answer(line, op="scan", host="gpu1")
    err = caught.value
    assert (err.host, err.op, err.remote_type) == ("gpu1", "scan", "PermissionError")
    assert err.message == "scan failed on gpu1: PermissionError: [Errno 13] /proc/1/fd"
    assert err.exit_code == ExitCode.ERROR


def test_a_reconnect_gives_up_on_a_refusal_by_its_type_not_its_words() -> None:
    from tbctl.errors import AuthFailed, HostKeyRejected, SSHError, Unreachable
    from tbctl.hosts.paramiko.link import _no_retry_helps

    assert _no_retry_helps(AuthFailed("the server said no"))
    assert _no_retry_helps(HostKeyRejected("gpu1", "SHA256:x", "refused"))
    assert not _no_retry_helps(Unreachable("gpu1:22 refused the connection"))
    assert not _no_retry_helps(SSHError("authentication agent went away; 2FA later"))  # words alone decide nothing
    assert all(issubclass(e, SSHError) and e.exit_code == ExitCode.SSH for e in (AuthFailed, Unreachable))
