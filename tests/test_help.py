"""What `tbctl`, `tbctl -h` and each command's `-h` say: words for metavars (PORT, HOST, SECONDS), usage
lines without braces, the defaults, and the global options every command accepts."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import Cli
from tbctl.cli.app import COMMANDS

VISIBLE_COMMANDS = [name for name in COMMANDS if not name.startswith("_")]
SUBCOMMANDS = {"config": ["config", "path"], "config show": ["config", "show"]}


def _help(cli: Cli, *words: str) -> str:
    return " ".join(cli(*words, "--help").stdout.split(" "))


@pytest.mark.parametrize("words", [[name] for name in VISIBLE_COMMANDS if name != "config"] + list(SUBCOMMANDS.values()))
def test_each_commands_help_speaks_in_words(cli: Cli, words: list[str]) -> None:
    text = _help(cli, *words)
    usage = text.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage
    for jargon in ("<str>", "<float", "<int", "[x>=", "range>"):
        assert jargon not in text, f"{' '.join(words)} --help says {jargon!r}:\n{text}"
    # tbctl's own options work after the command (`tbctl up -q runs`): its help lists them
    global_part = text.split("Global options:", 1)
    assert len(global_part) == 2, text
    for option in ("-q, --quiet", "--debug", "--ssh openssh|paramiko"):
        assert option in global_part[1], text


def test_metavars_and_defaults(cli: Cli) -> None:
    assert _help(cli, "free-port").splitlines()[0] == "Usage: tbctl free-port [OPTIONS] PORT"
    up = " ".join(_help(cli, "up").split())
    assert "--timeout SECONDS" in up and "-p, --port PORT" in up and "-H, --host HOST" in up
    assert re.search(r"--timeout SECONDS [^-]*\(default 60\b", up), up
    down = " ".join(_help(cli, "down").split())
    assert re.search(r"--timeout SECONDS [^-]*\(default 10\b", down), down
    assert "--connect-timeout SECONDS" in down


def test_a_timeout_below_a_tenth_of_a_second_is_still_refused(cli: Cli) -> None:
    err = cli("down", "--all", "--timeout", "0", exit_code=2).stderr
    assert "--timeout" in err and "0.1" in err


def test_tbctl_alone_prints_its_help_on_stdout_and_succeeds() -> None:
    """As gh, docker and pip do: the help is the answer to "what does this do?", not an error; on stdout,
    so `tbctl | less` pages it."""
    done = subprocess.run([sys.executable, "-m", "tbctl"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert done.stdout.startswith("Usage: tbctl [OPTIONS] COMMAND [ARGS]...") and "Commands:" in done.stdout
    assert done.stderr == ""
