"""The config file: precedence (defaults < file < TBCTL_* environment < flags), errors that name the file,
line and key, `tbctl config path|show`, and a host's section used by a real `up --host`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.procs import TENSORBOARD, ProcessReaper, free_port, http_get, wait_until
from tbctl import config
from tbctl.config import SETTINGS, HostSettings, Settings, load_settings, read_config
from tbctl.config_lines import locate_key

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own config file path (absent until a test writes it): the machine's file never leaks in."""
    path = tmp_path / "tbctl-config" / "config.toml"
    path.parent.mkdir()
    monkeypatch.setenv("TBCTL_CONFIG", str(path))
    for setting in SETTINGS:
        if setting.env is not None:
            monkeypatch.delenv(setting.env, raising=False)
    return path


FULL = """\
# every key tbctl reads, at the top level and in host sections
logdir = "file-runs"
port = 7000
timeout = 30
stop_timeout = 4.5
connect_timeout = 7
tensorboard = "/opt/tb/bin/tensorboard"
tensorboard_args = ["--samples_per_plugin", "scalars=1000"]

[hosts.gpu1]
logdir = "~/exp/runs"
port = 7100
local_port = 17100
tensorboard = "~/venv/bin/tensorboard"
env = "~/venv"
tensorboard_args = ["--reload_interval", "15"]
connect_timeout = 20

[hosts."me@box:2222"]
port = 7200
private = true
"""


# --- precedence -----------------------------------------------------------------------------------------------


def test_defaults_without_a_file(config_file: Path) -> None:
    settings = load_settings({"TBCTL_CONFIG": str(config_file)})
    assert not settings.config_loaded and settings.config_file == config_file
    assert (settings.port, settings.logdir, settings.timeout, settings.stop_timeout) == (
        6006, "runs", 60.0, 10.0)
    assert settings.for_host(None) == settings.for_host("anyhost")
    assert settings.for_host("anyhost").tensorboard is None and settings.for_host("anyhost").tensorboard_args == ()
    assert set(settings.sources.values()) == {"default"}


def test_the_file_beats_the_defaults_and_a_host_section_beats_the_top_level(config_file: Path) -> None:
    config_file.write_text(FULL)
    settings = load_settings({"TBCTL_CONFIG": str(config_file)})
    assert settings.config_loaded
    assert (settings.port, settings.logdir, settings.timeout, settings.stop_timeout) == (
        7000, "file-runs", 30.0, 4.5)
    top = settings.for_host(None)
    assert (top.tensorboard, top.tensorboard_args, top.connect_timeout) == (
        "/opt/tb/bin/tensorboard", ("--samples_per_plugin", "scalars=1000"), 7.0)
    assert top.port is None and top.env is None  # port/logdir defaults live on Settings, env is per host
    gpu1 = settings.for_host("gpu1")
    assert gpu1.port == 7100 and gpu1.local_port == 17100 and gpu1.logdir == "~/exp/runs"
    assert gpu1.tensorboard == "~/venv/bin/tensorboard" and gpu1.env == "~/venv"
    assert gpu1.tensorboard_args == ("--reload_interval", "15") and gpu1.connect_timeout == 20.0
    other = settings.for_host("me@box:2222")  # a quoted section name, as typed after --host
    assert other.port == 7200 and other.tensorboard == "/opt/tb/bin/tensorboard" and other.connect_timeout == 7.0
    assert settings.for_host("unknown") == top
    assert settings.sources["port"] == "file" and settings.sources["timeout"] == "file"


def test_the_environment_beats_the_file_host_sections_included(config_file: Path) -> None:
    config_file.write_text(FULL)
    env = {"TBCTL_CONFIG": str(config_file), "TBCTL_PORT": "7300", "TBCTL_LOGDIR": "env-runs",
           "TBCTL_TIMEOUT": "12", "TBCTL_STOP_TIMEOUT": "2"}
    settings = load_settings(env)
    assert (settings.port, settings.logdir, settings.timeout, settings.stop_timeout) == (
        7300, "env-runs", 12.0, 2.0)
    assert settings.for_host("gpu1").port == 7300 and settings.for_host("gpu1").logdir == "env-runs"
    assert settings.for_host("gpu1").tensorboard == "~/venv/bin/tensorboard"  # no variable for it: the file's
    assert settings.sources["port"] == "env:TBCTL_PORT" and settings.sources["stop_timeout"] == "env:TBCTL_STOP_TIMEOUT"


def test_config_show_reports_each_value_and_where_it_came_from(cli: Cli, config_file: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text(FULL)
    monkeypatch.setenv("TBCTL_TIMEOUT", "12")
    shown = cli("config", "show", "--json").json()
    assert shown["config_file"] == str(config_file) and shown["config_loaded"] is True
    assert (shown["port"], shown["timeout"], shown["logdir"]) == (7000, 12.0, "file-runs")
    assert shown["sources"]["port"] == "file" and shown["sources"]["timeout"] == "env:TBCTL_TIMEOUT"
    assert shown["sources"]["stop_timeout"] == "file"
    assert shown["hosts"]["gpu1"] == {
        "logdir": "~/exp/runs", "port": 7100, "local_port": 17100, "tensorboard": "~/venv/bin/tensorboard",
        "env": "~/venv", "tensorboard_args": ["--reload_interval", "15"], "connect_timeout": 20.0,
        "ssh": None, "ssh_persist": 600.0, "open": False, "private": False}
    assert shown["hosts"]["me@box:2222"]["private"] is True  # a host's own section sets it
    text = cli("config", "show").stdout
    assert "port = 7000" in text and "# file" in text and "# env:TBCTL_TIMEOUT" in text
    assert '[hosts."me@box:2222"]' in text and "[hosts.gpu1]" in text


def test_config_path(cli: Cli, config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cli("config", "path").stdout == f"{config_file}\n"
    assert cli("config", "path", "--json").json() == {"path": str(config_file), "exists": False}
    alone = cli("config", exit_code=2)  # like `tbctl` alone: the help, on stdout
    assert "path" in alone.stdout and "show" in alone.stdout and alone.stderr == ""
    config_file.write_text("[hosts.x\n")  # broken: `config path` still answers, so the user can go and fix it
    assert cli("config", "path", "--json").json() == {"path": str(config_file), "exists": True}
    monkeypatch.delenv("TBCTL_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # platformdirs' user config dir on Linux
    assert cli("config", "path").stdout == f"{tmp_path / 'xdg' / 'tbctl' / 'config.toml'}\n"


@pytest.mark.parametrize("xdg", [{}, {"XDG_CONFIG_HOME": "/x/conf", "XDG_STATE_HOME": "/x/state"}])
def test_the_default_paths_are_platformdirs(monkeypatch: pytest.MonkeyPatch, xdg: dict[str, str]) -> None:
    import platformdirs

    from tbctl.config import config_path, state_dir_path

    for name in ("TBCTL_CONFIG", "TBCTL_STATE_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in xdg.items():
        monkeypatch.setenv(name, value)
    assert config_path() == platformdirs.user_config_path("tbctl") / "config.toml"
    assert state_dir_path() == platformdirs.user_state_path("tbctl")


def test_up_port_follows_file_then_environment_then_flag(cli: Cli, config_file: Path, logdir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same value through all four layers, with real TensorBoards on the port each layer chose."""
    from_file, from_env, from_flag = free_port(), free_port(), free_port()
    config_file.write_text(f"port = {from_file}\ntensorboard_args = [\"--reload_interval\", \"17\"]\n")
    first = cli.up(str(logdir))
    assert first["instance"]["port"] == from_file
    assert "--reload_interval" in first["instance"]["cmdline"]  # the file's extra flags reach TensorBoard
    monkeypatch.setenv("TBCTL_PORT", str(from_env))
    assert cli.up(str(logdir), "--new")["instance"]["port"] == from_env
    assert cli.up(str(logdir), "--new", "--port", str(from_flag))["instance"]["port"] == from_flag


# --- malformed files ------------------------------------------------------------------------------------------

MALFORMED = [
    # (file content, line, key, words the message must contain)
    ("port = 6006\nlogdir = runs\n", 2, "logdir", "invalid TOML"),
    ('[hosts.gpu1]\ntensorboard = "/x/tensorboard"\nport = "6006"\n', 3, "hosts.gpu1.port", "expected a port number"),
    ('timeout = 5\ncolour = "red"\n', 2, "colour", "unknown key"),
    ("[gpu1]\nport = 6010\n", 1, "gpu1", "unknown key"),
    ("\n\nstop_timeout = -1\n", 3, "stop_timeout", "positive number of seconds"),
    ("hosts = { gpu1 = { port = 0 } }\n", 1, "hosts.gpu1.port", "expected a port number"),
    ('tensorboard_args = "--samples_per_plugin scalars=1000"\n', 1, "tensorboard_args", "a list of strings"),
    ("port = true\n", 1, "port", "got true"),
    ('[hosts."me@box:2222"]\n\nconnect_timeout = "slow"\n', 3, 'hosts."me@box:2222".connect_timeout', '"slow"'),
    ('env = "~/venv"\n', 1, "env", "unknown key"),
    ("[hosts.gpu1]\nport = 6010\n[hosts.gpu1]\nport = 6011\n", 3, None, "invalid TOML"),
    ('tensorboard_args = [\n  "--a",\n  1,\n]\nport = "x"\n', 1, "tensorboard_args", "a list of strings"),
    # an unfinished value at the end of the file: tomllib says "at end of document", with no line
    ("port = [\n", 1, "port", "invalid TOML: Invalid value"),
    ('timeout = 5\n\nlogdir = "runs\n\n', 3, "logdir", "invalid TOML"),
]


@pytest.mark.parametrize(("content", "line", "key", "words"), MALFORMED)
def test_a_malformed_file_names_the_line_and_the_key(cli: Cli, config_file: Path, content: str, line: int,
                                                     key: str | None, words: str) -> None:
    config_file.write_text(content)
    err = cli("ls", exit_code=2).stderr
    first = err.splitlines()[0]
    assert first.startswith(f"tbctl: config file {config_file}:{line}: "), err
    if key is not None:
        assert f": {key}: " in first, err
    assert words in first, err
    assert "Traceback" not in err
    assert err.splitlines()[1].startswith("hint: ")  # the offending line, or the keys that are known


def test_hints_say_what_was_meant(cli: Cli, config_file: Path) -> None:
    config_file.write_text("[gpu1]\nport = 6010\n")
    assert "a host's section is [hosts.gpu1]" in cli("ls", exit_code=2).stderr
    config_file.write_text('env = "~/venv"\n')
    assert "env belongs in a [hosts.NAME] section" in cli("ls", exit_code=2).stderr
    config_file.write_text('port = "x"\n')
    assert 'hint: line 1 reads: port = "x"' in cli("ls", exit_code=2).stderr


def test_unreadable_files(cli: Cli, config_file: Path) -> None:
    config_file.write_bytes(b"port = 6006\n# caf\xe9\n")
    assert f"config file {config_file}:2: is not UTF-8 text" in cli("ls", exit_code=2).stderr
    config_file.unlink()
    config_file.mkdir()
    assert f"config file {config_file}: is a directory" in cli("ls", exit_code=2).stderr


def test_locate_key_follows_tables_dotted_keys_and_quotes() -> None:
    text = (
        'port = 1\n'
        '[hosts]\n'
        'a.port = 2\n'
        'b = { port = 3 }\n'
        '[hosts."x.y"]\n'
        "port = 4\n"
        "tensorboard_args = '''\n"
        "port = not a key, inside a string\n"
        "'''\n"
        "[ hosts . 'lit' ]\n"
        "connect_timeout = 5\n"
    )
    assert locate_key(text, ("port",)) == 1
    assert locate_key(text, ("hosts", "a", "port")) == 3
    assert locate_key(text, ("hosts", "b", "port")) == 4  # inside an inline table: its line
    assert locate_key(text, ("hosts", "x.y", "port")) == 6
    assert locate_key(text, ("hosts", "lit", "connect_timeout")) == 11
    assert locate_key(text, ("hosts", "x.y")) == 5
    assert locate_key(text, ("nowhere",)) is None


def test_bad_environment_values_are_usage_errors(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_STOP_TIMEOUT", "soon")
    assert "TBCTL_STOP_TIMEOUT='soon' is not a number of seconds" in cli("ls", exit_code=2).stderr
    monkeypatch.setenv("TBCTL_OPEN", "maybe")
    monkeypatch.delenv("TBCTL_STOP_TIMEOUT")
    assert "TBCTL_OPEN='maybe' is not true or false" in cli("ls", exit_code=2).stderr


# --- a host's section, used by a real `up --host` ----------------------------------------------------------


def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A `tensorboard` that notes its arguments, then becomes the real one (exec: same pid)."""
    marker = tmp_path / "wrapper-args"
    wrapper = tmp_path / "tb-from-config" / "tensorboard"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {marker}\nexec {TENSORBOARD} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper, marker


def test_up_host_uses_the_host_sections_tensorboard_port_and_flags(
    ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path, tmp_path: Path,
    config_file: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = ssh_env
    wrapper, marker = _wrapper(tmp_path)
    config_file.write_text(
        'tensorboard = "/nonexistent/top-level/tensorboard"\n'  # the host's own section must win over this
        f"[hosts.{remote.alias}]\n"
        f'tensorboard = "{wrapper}"\n'
        "port = 6620\n"
        'tensorboard_args = ["--samples_per_plugin", "scalars=321"]\n'
    )
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir))  # no --tensorboard, no --port
    pid = fg.pid_from_stderr()
    reaper.adopt(pid)
    args = marker.read_text().splitlines()
    assert args[args.index("--port") + 1] == "6620"
    assert args[args.index("--samples_per_plugin") + 1] == "scalars=321"
    assert any(p == 6620 and owner == pid for _, p, owner in remote.listeners())
    status, body = http_get(fg.url + "data/logdir")
    assert status == 200 and json.loads(body)["logdir"] == str(logdir)
    assert fg.interrupt() == 0, fg.stderr
    assert wait_until(lambda: not any(owner == pid for _, _, owner in remote.listeners()), 10)

    # The environment beats the host's section; the section's other values still apply.
    monkeypatch.setenv("TBCTL_PORT", "6631")
    marker.unlink()
    fg = Foreground(reaper, state_dir, "up", "--host", remote.alias, str(logdir))
    reaper.adopt(fg.pid_from_stderr())
    args = marker.read_text().splitlines()
    assert args[args.index("--port") + 1] == "6631" and "scalars=321" in args
    assert fg.interrupt() == 0, fg.stderr
    monkeypatch.delenv("TBCTL_PORT")
    marker.unlink()

    # A flag beats the file: this --tensorboard does not exist, though the file names one that works.
    err = cli("up", "--host", remote.alias, str(logdir), "--tensorboard", str(tmp_path / "missing"),
              exit_code=2).stderr
    assert f"--tensorboard {tmp_path / 'missing'} is not an executable file" in err
    assert not os.path.exists(marker)


def test_config_show_gives_connect_timeouts_real_default(cli: Cli) -> None:
    """`--help` says "default 10": so does `config show`, rather than "(not set)"."""
    from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT

    line = next(x for x in cli("config", "show").stdout.splitlines() if "connect_timeout" in x)
    assert line.split() == ["connect_timeout", "=", f"{DEFAULT_CONNECT_TIMEOUT:g}", "#", "default"]
    shown = cli("config", "show", "--json").json()
    assert (shown["connect_timeout"], shown["sources"]["connect_timeout"]) == (DEFAULT_CONNECT_TIMEOUT, "default")
    assert f"(default {DEFAULT_CONNECT_TIMEOUT:g})" in " ".join(cli("up", "--help").stdout.split())


# --- the table ------------------------------------------------------------------------------------------------


def test_every_row_of_the_table_has_its_field_and_a_reader_for_its_variable() -> None:
    fields = {"settings": {f.name for f in dataclasses.fields(Settings)},
              "host": {f.name for f in dataclasses.fields(HostSettings)}}
    host_rows = {s.name for s in SETTINGS if s.scope != "top"}
    assert fields["host"] == host_rows, "HostSettings needs one field per row a [hosts.NAME] section may set"
    for setting in SETTINGS:
        if config.on_settings(setting):
            assert setting.name in fields["settings"], setting.name
        assert setting.env is None or setting.kind.from_env is not None, f"{setting.name}: {setting.env} unread"
        assert setting.scope != "host" or setting.env is None, f"{setting.name}: a variable beats the top level"


# One file value and one environment value of each kind, and what each gives.
EXAMPLES = {
    config.PORT: ("7001", 7001, "7002", 7002),
    config.SECONDS: ("3", 3.0, "4.5", 4.5),
    config.SECONDS_OR_ZERO: ("0", 0.0, "7", 7.0),
    config.BACKEND: ('"paramiko"', "paramiko", "openssh", "openssh"),
    config.BOOL: ("true", True, "0", False),
    config.NOTEBOOK_URL: ('"proxy"', "proxy", "tunnel", "tunnel"),
    config.BYTES: ("1000", 1000, "2048", 2048),
}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.env is not None], ids=lambda s: s.name)
def test_each_variable_beats_the_file_which_beats_the_default(config_file: Path, setting: config.Setting) -> None:
    in_file, from_file, in_env, from_env = EXAMPLES.get(setting.kind, ('"file-value"', "file-value", "env-value",
                                                                       "env-value"))
    shown = {row.key: row for row in config.top_level_rows(load_settings({"TBCTL_CONFIG": str(config_file)}))}
    assert (shown[setting.name].value, shown[setting.name].source) == (config._as_json(setting.default), "default")
    section = f"[hosts.gpu1]\n{setting.name} = {in_file}\n" if setting.scope == "both" else ""
    config_file.write_text(f"{setting.name} = {in_file}\n{section}")
    settings = load_settings({"TBCTL_CONFIG": str(config_file)})
    shown = {row.key: row for row in config.top_level_rows(settings)}
    assert (shown[setting.name].value, shown[setting.name].source) == (from_file, "file")
    settings = load_settings({"TBCTL_CONFIG": str(config_file), setting.env: in_env})
    shown = {row.key: row for row in config.top_level_rows(settings)}
    assert (shown[setting.name].value, shown[setting.name].source) == (from_env, f"env:{setting.env}")
    if section:
        assert config.host_rows(settings.for_host("gpu1"))[setting.name] == from_env  # a section too


def _settings_list() -> str:
    """The README's list, from the table."""
    where = {"top": "top level", "host": "`[hosts.NAME]`", "both": "top level, `[hosts.NAME]`"}
    rows = ["| key | where | variable | default | what it is |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "" if s.default is None else f"`{_toml_text(config._as_json(s.default))}`"
        rows.append(f"| `{s.name}` | {where[s.scope]} | {f'`{s.env}`' if s.env else ''} | {default} | {s.help} |")
    return "\n".join(rows)


def _toml_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def test_the_readme_lists_the_table() -> None:
    found = re.search(r"<!-- settings: begin -->\n(.*?)\n?<!-- settings: end -->", README.read_text(), re.S)
    assert found, "README.md has lost its <!-- settings: begin/end --> markers"
    assert found.group(1) == _settings_list(), (
        "README.md's list of settings differs from SETTINGS in tbctl/config.py; between its markers put:\n"
        + _settings_list())


def test_the_readmes_example_file_is_valid_and_sets_every_key(tmp_path: Path) -> None:
    text = README.read_text().split("\n## Configuration", 1)[1]
    example = tmp_path / "config.toml"
    example.write_text(text.split("```toml\n", 1)[1].split("```", 1)[0])
    conf = read_config(example)
    assert conf is not None
    assert set(conf.top) | {k for section in conf.hosts.values() for k in section} == {s.name for s in SETTINGS}


# --- where a value came from ----------------------------------------------------------------------------------


def test_a_bad_value_from_the_file_is_blamed_on_the_file_not_on_a_flag(cli: Cli, config_file: Path,
                                                                         logdir: Path) -> None:
    """The README's sample config on a machine without ~/venvs/tb: the file's line is named, not --tensorboard."""
    config_file.write_text('port = 6006\ntensorboard = "~/venvs/tb/bin/tensorboard"\n')
    err = cli("up", str(logdir), exit_code=2).stderr
    assert "--tensorboard" not in err.splitlines()[0], err
    assert f"tensorboard ~/venvs/tb/bin/tensorboard (from {config_file}:2) is not an executable file" in err, err


def test_origin_names_the_flag_the_variable_or_the_files_line(config_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text(FULL)
    settings = load_settings()
    assert settings.origin("tensorboard", None) == f"{config_file}:7"
    assert settings.origin("tensorboard", "gpu1") == f"{config_file}:14 ([hosts.gpu1])"
    assert settings.origin("tensorboard", "elsewhere") == f"{config_file}:7"
    assert settings.origin("port", "me@box:2222") == f"{config_file}:20 ([hosts.\"me@box:2222\"])"
    assert settings.origin("ssh", None) == "default"
    monkeypatch.setenv("TBCTL_PORT", "7001")
    assert load_settings().origin("port", "gpu1") == "TBCTL_PORT"
