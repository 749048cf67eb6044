"""The config file as TOML text, and errors that name its file, line and key.

tomllib gives values, not positions: `locate_key` finds the line that sets a key by following [table]
headers, dotted and quoted keys and skipping multi-line strings, without a second parser. Nothing here knows
tbctl's settings (config.py has their table).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tbctl.errors import UsageError


class ConfigError(UsageError):
    """The config file is malformed: names the file, the line and the key."""

    def __init__(self, path: Path, problem: str, *, line: int | None = None, key: str | None = None,
                 line_text: str | None = None, hint: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"{key}: {problem}" if key else problem
        if hint is None and line_text is not None:
            hint = f"line {line} reads: {line_text.strip()}"
        super().__init__(f"config file {where}: {what}", hint=hint)
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem


def read_toml(path: Path) -> tuple[str, dict[str, Any]] | None:
    """The text of `path` and what it says; None when there is no such file; ConfigError when it cannot be
    read or is not TOML."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(path, "is not UTF-8 text", line=line) from None
    return text, _parse_toml(path, text)


def fail_at(path: Path, text: str, key: tuple[str, ...], problem: str, *, hint: str | None = None) -> None:
    line = locate_key(text, key)
    line_text = text.splitlines()[line - 1] if line is not None else None
    raise ConfigError(path, problem, line=line, key=dotted(key), line_text=line_text, hint=hint)


def toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value else 'an empty string ""'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list {value!r}"
    return repr(value)


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = getattr(exc, "lineno", None)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if line is None and found:
            line = int(found.group(1))
        problem = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        if found:
            problem += f" (column {found.group(2)})"
        lines = text.splitlines()
        if line is None and "(at end of document)" in message:
            # tomllib names no line when the file ends inside a value (`port = [`): the value left open is
            # on the last line that says anything.
            line = next((n for n in range(len(lines), 0, -1) if lines[n - 1].strip()), None)
            problem += " (the file ends before it is complete)"
        line_text = lines[line - 1] if line is not None and 0 < line <= len(lines) else None
        key = key_of_line(line_text) if line_text is not None else None
        raise ConfigError(path, f"invalid TOML: {problem}", line=line, key=key, line_text=line_text) from None


# --- finding the line of a key ------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(s: str, i: int = 0) -> tuple[tuple[str, ...], int] | None:
    """A dotted TOML key at s[i:] (bare, "basic" or 'literal' parts): (parts, index after it)."""
    parts: list[str] = []
    while True:
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == '"':
            j, out = i + 1, []
            while j < len(s) and s[j] != '"':
                if s[j] == "\\" and j + 1 < len(s):
                    out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(s[j + 1], s[j + 1]))
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            if j >= len(s):
                return None
            parts.append("".join(out))
            i = j + 1
        elif i < len(s) and s[i] == "'":
            j = s.find("'", i + 1)
            if j < 0:
                return None
            parts.append(s[i + 1 : j])
            i = j + 1
        else:
            match = _BARE.match(s, i)
            if not match:
                return None
            parts.append(match.group())
            i = match.end()
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == ".":
            i += 1
            continue
        return tuple(parts), i


def key_of_line(line: str) -> str | None:
    """The key a `key = value` line sets, if the line looks like one."""
    parsed = _parse_key(line)
    if parsed and parsed[1] < len(line) and line[parsed[1]] == "=":
        return dotted(parsed[0])
    return None


def locate_key(text: str, key: tuple[str, ...]) -> int | None:
    """The 1-based line that sets `key` (or, failing that, the one that opens the table or inline table
    holding it), following [table] headers and dotted keys; None when no line can be found."""
    table: tuple[str, ...] = ()
    best: tuple[int, int] | None = None  # (matched length, line)
    in_string: str | None = None  # inside a multi-line string: its delimiter
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if in_string is not None:
            if stripped.count(in_string) % 2 == 1:
                in_string = None
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            parsed = _parse_key(stripped, 2 if stripped.startswith("[[") else 1)
            if parsed is not None:
                table = parsed[0]
                path = table
            else:
                continue
        else:
            parsed = _parse_key(stripped)
            if parsed is None or parsed[1] >= len(stripped) or stripped[parsed[1]] != "=":
                continue
            path = table + parsed[0]
            rest = stripped[parsed[1] + 1 :]
            for delim in ('"""', "'''"):
                if rest.count(delim) % 2 == 1:
                    in_string = delim
        if path == key:
            return number
        if key[: len(path)] == path and (best is None or len(path) > best[0]):
            best = (len(path), number)
    return best[1] if best is not None else None


def dotted(key: tuple[str, ...]) -> str:
    return ".".join(k if _BARE.fullmatch(k) else f'"{k}"' for k in key)
