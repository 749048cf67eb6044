"""Text from other processes, users and hosts, made safe for a terminal.

A logdir, a command line, what TensorBoard or a remote host printed, an `squeue` reason: any of it may
hold escape sequences that retitle the window, clear the screen, plant an OSC 8 link or write the
clipboard (OSC 52). rich drops only BEL, BS, VT, FF and CR, so everything tbctl prints for people goes
through `visible()`, which writes each control character as its Python escape (`\\x1b`), plus the Unicode
bidi controls that reorder what a line seems to say. JSON output needs none of this: json.dumps escapes
control characters itself.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls, and the bidi embeddings, overrides, isolates and marks.
_CONTROL = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
TAB = "\t"  # what a log line may keep (an f-string expression cannot spell it before Python 3.12)
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep: str = "") -> str:
    """`text` with every control character shown as its escape, except those in `keep` (e.g. "\\n")."""
    pattern = _PATTERNS.get(keep)
    if pattern is None:
        kept = "".join(f"\\x{ord(c):02x}" for c in keep)
        pattern = _PATTERNS[keep] = re.compile(f"(?![{kept}])[{_CONTROL}]" if kept else f"[{_CONTROL}]")
    return pattern.sub(_escape, text)
