"""Finding the line of a key in a TOML text, so an error can name it: tomllib gives values, not positions.

Follows [table] headers, dotted and quoted keys, and skips multi-line strings; it needs no second parser.
"""

from __future__ import annotations

import re

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
