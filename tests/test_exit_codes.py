"""The README's exit-code table is `ExitCode`: the same codes, names and meanings, so neither can drift."""

from __future__ import annotations

from pathlib import Path

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

