"""How the probe starts on a remote host, whichever SSH backend carries its stdin and stdout.

The remote command is `python3 -I -c BOOTSTRAP` (isolated: nothing from the home or PYTHON* variables):
it reads a length line, then exactly that many bytes of tbctl/probe.py compressed with zlib, then serves
JSON lines on the rest of stdin. The login shell may print first (a banner echoed from .bashrc, `conda
activate` chatter), so the probe's hello line starts with a sentinel and everything before it is kept to
show the user if the hello never comes."""

from __future__ import annotations

import functools
import json
import re
import shlex
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tbctl import probe
from tbctl.errors import NotFound, ProbeError
from tbctl.hosts.base import Answer, Host, Request

# zlib is not built into every python3 (Debian's loads it from lib-dynload): `-I` keeps the cwd (the remote
# home) off sys.path, and the bootstrap drops it too before the import, so a zlib.py there cannot run even
# where the bootstrap is started without -I.
BOOTSTRAP = (
    "import sys;sys.path[:]=[p for p in sys.path if p];import zlib;b=sys.stdin.buffer;n=int(b.readline());"
    "g={'__name__':'tbctl_probe'};exec(compile(zlib.decompress(b.read(n)),'tbctl-probe','exec'),g);g['serve']()"
)

# A docstring (a statement of its own that starts a line with triple quotes). probe.py has no other string
# that starts a line with triple quotes (the test of shipped_source compares the code statement by statement).
_DOCSTRING = re.compile(r'^([ \t]*)"""(?:.|\n)*?"""[ \t]*$', re.M)
# A comment, and the code before it when that holds no quote (so the `#` cannot be inside a string).
_COMMENT = re.compile(r"""^([^'"#\n]*?)[ \t]*#.*$""")
_TRIPLE_QUOTES = ('"""', "'''")


def _lean_line(line: str) -> str:
    """A line that starts outside a string, indented one space a level instead of four, without its comment
    and trailing blanks unless a string opens on it: Python reads the same code, from ~10% fewer bytes."""
    if not any(q in line for q in _TRIPLE_QUOTES):
        line = _COMMENT.sub(r"\1", line).rstrip()
    code = line.lstrip(" ")
    depth, rest = divmod(len(line) - len(code), 4)
    return " " * (depth + rest) + code


def shipped_source() -> bytes:
    """probe.py as it travels: its docstrings left as '', no comments, one space a level, for the bytes
    alone (~78 KB of source, ~48 KB without them). Every line stays where it is, so a traceback's line
    numbers are probe.py's. Lines inside a multi-line string (the private launcher's source) travel as they
    are."""
    source = Path(probe.__file__).read_text(encoding="utf-8")
    source = _DOCSTRING.sub(lambda m: m.group(1) + "''" + "\n" * m.group(0).count("\n"), source)
    lines: list[str] = []
    quote: str | None = None  # the delimiter of the multi-line string the next line is in
    for line in source.split("\n"):
        if quote is None:
            lines.append(_lean_line(line))
            opened = [q for q in _TRIPLE_QUOTES if line.count(q) % 2]
            quote = opened[0] if opened else None
        else:
            lines.append(line)
            quote = None if line.count(quote) % 2 else quote
    return "\n".join(lines).encode("utf-8")


@functools.cache
def preamble() -> bytes:
    """What the client writes first on the probe's stdin. Compressed (~14 KB), the probe fits in TCP's
    initial window of 10 segments, so it costs no round trip of its own; made once per process, when the
    first host connects (~8 ms)."""
    source = zlib.compress(shipped_source())
    return b"%d\n" % len(source) + source


MAX_NOISE_LINES = 200  # a shell that prints more than this before python starts is not going to stop


class RemoteHost(Host):
    """What every SSH backend's host shares: the probe's python, and what its hello told of the host."""

    env_prefix: str | None = None
    _hello: dict[str, Any]

    @property
    def is_remote(self) -> bool:
        return True

    @property
    def reachable_here(self) -> bool:
        return False

    @property
    def python(self) -> str:
        """The interpreter that runs the probe: the env's when --env names one, else python3 on PATH."""
        return f"{self.env_prefix.rstrip('/')}/bin/python" if self.env_prefix else "python3"

    def hello(self) -> dict[str, Any]:
        """What the probe said of the host when it started (whoami)."""
        self.connect()
        return self._hello

    @property
    def log_dir(self) -> str:
        return f"{self.hello()['cache_dir']}/logs"

    @property
    def user(self) -> str:
        return str(self.hello()["user"])

    def user_environment(self) -> dict[str, Any]:
        """The user's environment on the host: --env's prefix, and PATH as their login shell sets it."""
        return {"env_prefix": self.env_prefix, "login_shell": True}


def quote_argv(argv: list[str]) -> str:
    """A POSIX shell command line that runs exactly `argv` (for exec channels, which take a string)."""
    return shlex.join(argv)


def remote_command(python: str) -> str:
    """The command line for the remote shell. A remote `~` must stay for that shell to expand, so only
    the python path is quoted (and the bootstrap, which is ours)."""
    quoted = python if python == "python3" else quote_argv([python]).replace("'~/", "~/'")
    # -I (isolated, Python 3.4+): `-c` would put the cwd, the user's home, first on sys.path, so a struct.py
    # or a tbctl/ there would run inside the probe; nor do PYTHON* variables or user site-packages apply
    return f"{quoted} -I -c {quote_argv([BOOTSTRAP])}"


def read_hello(readline: Callable[[], bytes], *, host: str, python: str,
               exit_status: Callable[[], int | None], stderr: Callable[[], str]) -> dict[str, Any]:
    """The probe's hello, skipping what the login shell printed before it. When it never comes: python
    missing (exit 127) is NotFound, anything else a ProbeError that shows what the host said."""
    noise: list[str] = []
    for _ in range(MAX_NOISE_LINES):
        line = readline()
        if not line:
            break
        if line.startswith(probe.HELLO_SENTINEL):
            return dict(json.loads(line[len(probe.HELLO_SENTINEL):])["ok"])
        noise.append(line.decode("utf-8", "replace").rstrip("\n"))
    status = exit_status()
    err = stderr().strip()
    if status == 127:
        raise NotFound(f"no {python} on {host}: {err or 'command not found'}",
                       hint="tbctl needs python3 on the server; --env DIR uses DIR/bin/python")
    said = "\n".join([*noise[-10:], *err.splitlines()[-10:]]).strip()
    raise ProbeError(f"the probe did not start on {host}"
                     + (f" (exit {status})" if status is not None else "")
                     + (f"; the host printed:\n{said}" if said else ": it printed nothing"),
                     host=host, op="hello",
                     hint="a login script that prints or reads stdin can get in the way; "
                          "`ssh HOST true` should print nothing")


def answer(line: bytes, *, op: str, host: str) -> Any:
    """A reply line's result, or the ProbeError it carries (the remote exception's type and message)."""
    return outcome(line, op=op, host=host).get()


def outcome(line: bytes, *, op: str, host: str) -> Answer:
    """A reply line as an Answer: its result, or the ProbeError it carries."""
    reply = json.loads(line)
    if "error" in reply:
        err = reply["error"]
        return Answer(error=ProbeError(f"{op} failed on {host}: {err['type']}: {err['message']}", host=host, op=op,
                                       remote_type=str(err["type"])))
    return Answer(reply["ok"])


def request_lines(requests: Sequence[Request]) -> bytes:
    """What the client writes for a batch: one JSON line per request, all at once."""
    return b"".join(json.dumps({"op": op, "args": args}).encode() + b"\n" for op, args in requests)
