"""TAB completion: the committed scripts match what the app generates, and real shells load them and
complete commands, `--host` aliases (ssh_config and the config file) and the ports of running TensorBoards.

bash and zsh are driven on a real pseudo-terminal (keys typed, TAB pressed, the completed line run);
fish through its own `complete -C`, which runs the same completion machinery as a TAB press.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.procs import ProcessReaper
from tests.support.terminal import Terminal
from tbctl.cli.completion import COMPLETE_VAR, SCRIPT_FILES, SHELLS

REPO = Path(__file__).resolve().parents[1]
COMPLETIONS = REPO / "completions"
BIN = Path(sys.executable).parent  # the venv's bin: where the `tbctl` the scripts call lives


def _need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")
    return path


@pytest.fixture
def shell_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> dict[str, str]:
    """An ssh_config with two aliases (and a pattern that must not be offered), a config file with a host
    section, and PATH leading to the venv's `tbctl`."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host tbremote tbjump\n  HostName 10.231.0.9\nHost *.internal !bad\n  User x\n")
    config = tmp_path / "config.toml"
    config.write_text('[hosts.fromconfig]\nport = 6010\n\n[hosts."tbremote"]\nconnect_timeout = 5\n')
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(ssh_config))
    monkeypatch.setenv("TBCTL_CONFIG", str(config))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TERM="xterm", HOME=str(tmp_path))
    for name in ("EDITOR", "VISUAL", "ZDOTDIR", "BASH_ENV", "ENV", "XDG_CONFIG_HOME"):
        env.pop(name, None)  # vi keymaps and rc files of the machine must not change what TAB does
    env.pop(COMPLETE_VAR, None)
    return env


@pytest.fixture
def running_port(cli: Cli, logdir: Path, port: int) -> int:
    """A real TensorBoard started by tbctl, whose port `down <TAB>` must offer."""
    cli.up(str(logdir), "--port", str(port))
    return port


# --- the scripts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_what_the_app_generates(shell: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != COMPLETE_VAR} | {COMPLETE_VAR: f"source_{shell}"}
    generated = subprocess.run([sys.executable, "-m", "tbctl"], env=env, capture_output=True, text=True, timeout=60)
    assert generated.returncode == 0, generated.stderr
    committed = (COMPLETIONS / SCRIPT_FILES[shell]).read_text()
    assert generated.stdout == committed, (
        f"completions/{SCRIPT_FILES[shell]} drifted from the app; regenerate it with\n"
        f"  {COMPLETE_VAR}=source_{shell} tbctl > completions/{SCRIPT_FILES[shell]}"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_tbctl_completion_prints_the_committed_script(cli: Cli, shell: str) -> None:
    """`tbctl completion SHELL`: the script, from the installed package (a pipx user has no completions/)."""
    assert cli("completion", shell).stdout == (COMPLETIONS / SCRIPT_FILES[shell]).read_text()


def test_powershell_gets_a_script_though_no_powershell_runs_here(cli: Cli) -> None:
    """PowerShell is not in Debian's archive (`apt-cache policy powershell` finds nothing), so no test here
    drives it: this one checks only that the script is printed and registers a completer for tbctl."""
    script = cli("completion", "powershell").stdout
    assert "Register-ArgumentCompleter -Native -CommandName tbctl" in script
    assert f"$Env:{COMPLETE_VAR} = \"complete_powershell\"" in script


def test_completion_refuses_an_unknown_shell_and_points_from_install_completion(cli: Cli) -> None:
    err = cli("completion", "tcsh", exit_code=2).stderr
    assert "tcsh" in err and "bash, zsh, fish, powershell" in err
    assert "tbctl completion" in cli("--install-completion", exit_code=2).stderr


def test_tab_never_imports_paramiko(shell_env: dict[str, str], running_port: int) -> None:
    """What a TAB press runs, with -X importtime listing every module it imports."""
    for words, cword, expected in (("tbctl ls --host ", 3, "tbremote"), ("tbctl down ", 2, str(running_port))):
        env = shell_env | {COMPLETE_VAR: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tbctl"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert expected in done.stdout.split()
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
        assert imported and not [m for m in imported if m.split(".")[0] in ("paramiko", "cryptography", "nacl")]


def test_a_broken_config_file_does_not_break_tab(shell_env: dict[str, str], tmp_path: Path) -> None:
    Path(shell_env["TBCTL_CONFIG"]).write_text("[hosts.fromconfig\nport = \n")
    env = shell_env | {COMPLETE_VAR: "complete_bash", "COMP_WORDS": "tbctl ls --host ", "COMP_CWORD": "3"}
    done = subprocess.run([sys.executable, "-m", "tbctl"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.split() == ["tbremote", "tbjump"]  # ssh_config still completes; the file is skipped


# --- bash -----------------------------------------------------------------------------------------------------


def test_bash_registers_the_script_and_its_function_completes(shell_env: dict[str, str], running_port: int) -> None:
    bash = _need("bash")
    script = f"""
source {COMPLETIONS / 'tbctl.bash'}
complete -p tbctl
show() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _tbctl_completion tbctl; echo "${{COMPREPLY[*]}}"; }}
show tbctl fr
show tbctl ls --host ''
show tbctl up --host tb
show tbctl down ''
"""
    done = subprocess.run([bash, "--norc", "--noprofile", "-c", script], env=shell_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    registration, commands, hosts, tb_hosts, ports = done.stdout.splitlines()
    assert registration == "complete -o default -F _tbctl_completion tbctl"
    assert commands == "free-port"
    assert hosts.split() == ["tbremote", "tbjump", "fromconfig"]  # ssh_config first; no pattern; no duplicate
    assert tb_hosts.split() == ["tbremote", "tbjump"]
    assert str(running_port) in ports.split()


class ShellOnPty:
    """An interactive shell on a pseudo-terminal: type keys (TAB included) and read what it shows."""

    PROMPT = b"TBREADY> "

    def __init__(self, reaper: ProcessReaper, argv: list[str], env: dict[str, str], setup: str) -> None:
        # A wide window: no wrapping of long lines.
        self.term = Terminal(argv, env=env, reaper=reaper, cwd=REPO, size=(50, 250))
        # The prompt is spelled in two quoted halves so its echo is not mistaken for the prompt itself.
        half = len(self.PROMPT) // 2
        prompt = f"'{self.PROMPT[:half].decode()}''{self.PROMPT[half:].decode()}'"
        self.term.type(f"{setup}; PS1={prompt}\n")
        assert self.term.wait_for(self.PROMPT), f"no prompt from {argv}:\n{self.term.screen()}"

    def complete_line(self, partial: str) -> str:
        """Type `partial`, press TAB, then run the completed line through printf, one word per [..]: what
        the shell put on the line, without the terminal's redraw codes around it."""
        term = self.term
        start = len(term.out)
        term.type(f"{partial}\t\x01printf '[%s]' \n")  # Ctrl-A: to the start of the (completed) line
        printed = re.compile(rb"\[tbctl\](?:\[[^\[\]\x1b\r\n]*\])*")  # never in the echo, which shows [%s]
        assert term.read_until(lambda: printed.search(term.out, start) is not None, 30), term.screen()
        assert term.wait_for(self.PROMPT, since=start), term.screen()
        found = printed.search(term.out, start)
        assert found is not None
        return found.group().decode(errors="replace")

    def close(self) -> None:
        self.term.type("\x03\nexit\n")
        try:
            self.term.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass  # closing the terminal below hangs it up
        self.term.close()


def _tab_cases(shell: ShellOnPty, port: int) -> None:
    assert shell.complete_line("tbctl fr") == "[tbctl][free-port]"
    assert shell.complete_line("tbctl ls --host tbr") == "[tbctl][ls][--host][tbremote]"
    assert shell.complete_line("tbctl up --host fromc") == "[tbctl][up][--host][fromconfig]"
    prefix = str(port)[:-1]  # every other TensorBoard here would have to share all but the last digit
    assert shell.complete_line(f"tbctl down {prefix}") == f"[tbctl][down][{port}]"


def test_bash_tab_on_a_terminal(reaper: ProcessReaper, shell_env: dict[str, str], running_port: int) -> None:
    bash = _need("bash")
    shell = ShellOnPty(reaper, [bash, "--norc", "--noprofile", "-i"], shell_env,
                       "source <(tbctl completion bash)")  # what the README tells a user to put in ~/.bashrc
    try:
        _tab_cases(shell, running_port)
    finally:
        shell.close()


def test_zsh_tab_on_a_terminal(reaper: ProcessReaper, shell_env: dict[str, str], running_port: int) -> None:
    zsh = _need("zsh")
    setup = "bindkey -e; autoload -Uz compinit && compinit -u; source <(tbctl completion zsh)"
    shell = ShellOnPty(reaper, [zsh, "-f", "-i"], shell_env, setup)
    try:
        _tab_cases(shell, running_port)
    finally:
        shell.close()


# --- fish -----------------------------------------------------------------------------------------------------


def test_fish_completes(shell_env: dict[str, str], running_port: int) -> None:
    fish = _need("fish")
    script = f"""
tbctl completion fish | source
echo '## commands'; complete -C 'tbctl '
echo '## hosts'; complete -C 'tbctl ls --host '
echo '## ports'; complete -C 'tbctl down '
"""
    done = subprocess.run([fish, "--no-config", "-c", script], env=shell_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    sections = {s.split("\n", 1)[0]: s.split("\n", 1)[1].splitlines() for s in done.stdout.split("## ")[1:]}
    commands = {line.split("\t")[0] for line in sections["commands"]}
    assert {"up", "ls", "down", "free-port", "tunnel", "logs", "open", "config"} <= commands
    assert sorted(sections["hosts"]) == ["fromconfig", "tbjump", "tbremote"]
    assert str(running_port) in sections["ports"]
