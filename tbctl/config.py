"""Settings: built-in defaults < config file < TBCTL_* environment < flags.

The config file is TOML at platformdirs' user config dir (`~/.config/tbctl/config.toml` on Linux), or
wherever `TBCTL_CONFIG` points. Top-level keys are defaults for every host; a `[hosts.NAME]` section
applies when `--host NAME` is given, over the top level. An environment variable beats anything the file
says for the same value (including a host section), and a flag beats everything. Keys are the long
option names with underscores, so what a user types on the command line is what they write in the file.

Reading the file costs a TOML import only when the file exists; TAB completion reads it too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tbctl.config_lines import dotted, key_of_line, locate_key
from tbctl.errors import UsageError

DEFAULT_PORT = 6006
DEFAULT_LOGDIR = "runs"  # SummaryWriter's default
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
PORT_SEARCH_SPAN = 100  # TensorBoard itself scans 6006..6105
REMOTE_FORWARD_OFFSET = 10000  # 6006 -> 16006, as users already type it
CONFIG_FILE_NAME = "config.toml"
DEFAULT_SSH_PERSIST = 600.0  # seconds tbctl's own ControlMaster stays after the last command that used it
SSH_BACKENDS = ("openssh", "paramiko")


@dataclass(frozen=True)
class HostSettings:
    """Per-host defaults (a `[hosts.NAME]` section of the config file over its top level); None means
    "not set"."""

    tensorboard: str | None = None
    env_prefix: str | None = None
    logdir: str | None = None
    port: int | None = None
    local_port: int | None = None
    extra_args: tuple[str, ...] = ()
    connect_timeout: float | None = None
    ssh: str | None = None  # the SSH backend; None: the best available
    ssh_persist: float = DEFAULT_SSH_PERSIST


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    start_timeout: float = DEFAULT_START_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    default_port: int = DEFAULT_PORT
    default_logdir: str = DEFAULT_LOGDIR
    hosts: Mapping[str, HostSettings] = field(default_factory=dict)  # already merged over `defaults`
    defaults: HostSettings = HostSettings()  # the file's top level: what a host without a section gets
    config_file: Path | None = None  # the file consulted (it may not exist)
    config_loaded: bool = False  # whether it existed and was read
    sources: Mapping[str, str] = field(default_factory=dict)  # setting -> "default" | "file" | "env:NAME"

    def for_host(self, name: str | None) -> HostSettings:
        if name is None:
            return self.defaults
        return self.hosts.get(name, self.defaults)


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


# --- where the file is ---------------------------------------------------------------------------------------


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """`TBCTL_CONFIG`, else `config.toml` in the user config dir (e.g. ~/.config/tbctl/)."""
    env = os.environ if env is None else env
    override = env.get("TBCTL_CONFIG")
    if override:
        return Path(override).expanduser()
    return _user_dir("config", env) / CONFIG_FILE_NAME


_XDG = {"config": ("XDG_CONFIG_HOME", "~/.config"), "state": ("XDG_STATE_HOME", "~/.local/state")}


def _user_dir(kind: str, env: Mapping[str, str]) -> Path:
    """platformdirs' user config/state dir for tbctl. On Linux that is the XDG rule, computed here: importing
    platformdirs would add ~10 ms to the start-up of every command."""
    if sys.platform.startswith("linux"):
        variable, default = _XDG[kind]
        return Path(env.get(variable, "").strip() or os.path.expanduser(default)) / "tbctl"
    import platformdirs

    return Path(platformdirs.user_config_path("tbctl") if kind == "config" else platformdirs.user_state_path("tbctl"))


# --- what the file may say -----------------------------------------------------------------------------------


def _port(value: Any) -> int | None:
    return value if type(value) is int and 1 <= value <= 65535 else None


def _seconds(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and value > 0 else None


def _seconds_or_zero(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and value >= 0 else None


def _backend(value: Any) -> str | None:
    return value if value in SSH_BACKENDS else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _args(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


# key -> (check returning the value, or None when it is wrong; what a right value looks like)
_CHECKS: dict[str, tuple[Any, str]] = {
    "port": (_port, "a port number from 1 to 65535"),
    "local_port": (_port, "a port number from 1 to 65535"),
    "timeout": (_seconds, "a positive number of seconds"),
    "stop_timeout": (_seconds, "a positive number of seconds"),
    "connect_timeout": (_seconds, "a positive number of seconds"),
    "logdir": (_text, "a non-empty string (a path)"),
    "tensorboard": (_text, "a non-empty string (the path of the tensorboard executable)"),
    "env": (_text, "a non-empty string (a venv or conda prefix on that host)"),
    "tensorboard_args": (_args, 'a list of strings, e.g. ["--samples_per_plugin", "scalars=1000"]'),
    "ssh": (_backend, '"openssh" or "paramiko"'),
    "ssh_persist": (_seconds_or_zero, "a number of seconds, 0 or more"),
}
TOP_LEVEL_KEYS = ("logdir", "port", "timeout", "stop_timeout", "connect_timeout", "tensorboard", "tensorboard_args",
                  "ssh", "ssh_persist")
HOST_KEYS = ("logdir", "port", "local_port", "tensorboard", "env", "tensorboard_args", "connect_timeout", "ssh",
             "ssh_persist")
_HOST_FIELDS = {"logdir": "logdir", "port": "port", "local_port": "local_port", "tensorboard": "tensorboard",
                 "env": "env_prefix", "tensorboard_args": "extra_args", "connect_timeout": "connect_timeout",
                 "ssh": "ssh", "ssh_persist": "ssh_persist"}


@dataclass(frozen=True)
class ConfigFile:
    """The file's content, checked: top-level values and each host's own section (not yet merged)."""

    path: Path
    top: Mapping[str, Any]
    hosts: Mapping[str, Mapping[str, Any]]


def read_config(path: Path) -> ConfigFile | None:
    """The checked content of `path`, None when there is no such file; ConfigError when it is malformed."""
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
    data = _parse_toml(path, text)
    top: dict[str, Any] = {}
    hosts: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key == "hosts":
            if not isinstance(value, dict):
                _fail(path, text, ("hosts",), "must be a table of [hosts.NAME] sections")
            for name, section in value.items():
                if not isinstance(section, dict):
                    _fail(path, text, ("hosts", name), "must be a table, e.g. [hosts.NAME] with keys under it")
                hosts[name] = {k: _check(path, text, ("hosts", name, k), v, HOST_KEYS) for k, v in section.items()}
        else:
            top[key] = _check(path, text, (key,), value, TOP_LEVEL_KEYS)
    return ConfigFile(path=path, top=top, hosts=hosts)


def _check(path: Path, text: str, key: tuple[str, ...], value: Any, allowed: tuple[str, ...]) -> Any:
    name = key[-1]
    where = f"[hosts.{dotted(key[1:2])}]" if len(key) == 3 else "the top level"
    if name not in allowed:
        hint = f"known keys in {where}: {', '.join(allowed)}"
        if len(key) == 1 and isinstance(value, dict):
            hint = f"a host's section is [hosts.{dotted((name,))}]; {hint}"
        elif len(key) == 1 and name in HOST_KEYS:
            hint = f"{name} belongs in a [hosts.NAME] section; {hint}"
        _fail(path, text, key, f"unknown key in {where}", hint=hint)
    check, expected = _CHECKS[name]
    checked = check(value)
    if checked is None:
        _fail(path, text, key, f"expected {expected}, got {_toml_repr(value)}")
    return checked


def _fail(path: Path, text: str, key: tuple[str, ...], problem: str, *, hint: str | None = None) -> None:
    line = locate_key(text, key)
    line_text = text.splitlines()[line - 1] if line is not None else None
    raise ConfigError(path, problem, line=line, key=dotted(key), line_text=line_text, hint=hint)


def _toml_repr(value: Any) -> str:
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
        line_text = lines[line - 1] if line is not None and 0 < line <= len(lines) else None
        key = key_of_line(line_text) if line_text is not None else None
        raise ConfigError(path, f"invalid TOML: {problem}", line=line, key=key, line_text=line_text) from None


# --- the environment -----------------------------------------------------------------------------------------


def _env_seconds(env: Mapping[str, str], name: str, *, zero_ok: bool = False) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name}={raw!r} must be {'0 or more' if zero_ok else 'positive'}")
    return value


def state_dir_path(env: Mapping[str, str] | None = None) -> Path:
    """`TBCTL_STATE_DIR`, else the user state dir (records, logs, locks). Not a config file setting, so
    TAB completion finds it even when the config file is broken."""
    env = os.environ if env is None else env
    state_dir = env.get("TBCTL_STATE_DIR")
    if state_dir:
        return Path(state_dir).expanduser()
    return _user_dir("state", env)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    state_path = state_dir_path(env)
    path = config_path(env)
    conf = read_config(path)
    top = conf.top if conf is not None else {}
    sources: dict[str, str] = {}

    def pick(key: str, env_name: str | None, env_value: Any, default: Any) -> Any:
        # one value through the chain: default < file < environment
        if env_value is not None:
            sources[key] = f"env:{env_name}"
            return env_value
        if key in top:
            sources[key] = "file"
            return top[key]
        sources[key] = "default"
        return default

    env_port = parse_port(env["TBCTL_PORT"], source="TBCTL_PORT") if env.get("TBCTL_PORT") else None
    env_logdir = env.get("TBCTL_LOGDIR") or None
    env_ssh = env.get("TBCTL_SSH") or None
    if env_ssh is not None and env_ssh not in SSH_BACKENDS:
        raise UsageError(f"TBCTL_SSH={env_ssh!r} is not an SSH backend", hint="use openssh or paramiko")
    env_persist = _env_seconds(env, "TBCTL_SSH_PERSIST", zero_ok=True)
    defaults = HostSettings(
        tensorboard=pick("tensorboard", None, None, None),
        extra_args=pick("tensorboard_args", None, None, ()),
        connect_timeout=pick("connect_timeout", None, None, None),
        ssh=pick("ssh", "TBCTL_SSH", env_ssh, None),
        ssh_persist=pick("ssh_persist", "TBCTL_SSH_PERSIST", env_persist, DEFAULT_SSH_PERSIST),
    )
    hosts: dict[str, HostSettings] = {}
    for name, section in (conf.hosts if conf is not None else {}).items():
        own = {_HOST_FIELDS[k]: v for k, v in section.items()}
        # The environment beats the file, a host's section included.
        if env_port is not None:
            own["port"] = env_port
        if env_logdir is not None:
            own["logdir"] = env_logdir
        if env_ssh is not None:
            own["ssh"] = env_ssh
        if env_persist is not None:
            own["ssh_persist"] = env_persist
        hosts[name] = replace(defaults, **own)
    return Settings(
        state_dir=state_path,
        start_timeout=pick("timeout", "TBCTL_TIMEOUT", _env_seconds(env, "TBCTL_TIMEOUT"), DEFAULT_START_TIMEOUT),
        stop_timeout=pick("stop_timeout", "TBCTL_STOP_TIMEOUT", _env_seconds(env, "TBCTL_STOP_TIMEOUT"),
                          DEFAULT_STOP_TIMEOUT),
        default_port=pick("port", "TBCTL_PORT", env_port, DEFAULT_PORT),
        default_logdir=pick("logdir", "TBCTL_LOGDIR", env_logdir, DEFAULT_LOGDIR),
        hosts=hosts,
        defaults=defaults,
        config_file=path,
        config_loaded=conf is not None,
        sources=sources,
    )


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """The effective settings, keyed as in the config file (what `tbctl config show` prints)."""

    def host_view(h: HostSettings) -> dict[str, Any]:
        return {key: (list(v) if isinstance(v := getattr(h, attr), tuple) else v) for key, attr in _HOST_FIELDS.items()}

    return {
        "config_file": str(settings.config_file) if settings.config_file else None,
        "config_loaded": settings.config_loaded,
        "state_dir": str(settings.state_dir),
        "logdir": settings.default_logdir,
        "port": settings.default_port,
        "timeout": settings.start_timeout,
        "stop_timeout": settings.stop_timeout,
        # Unset here means the ssh_config's ConnectTimeout, else this default (what `--help` promises).
        "connect_timeout": settings.defaults.connect_timeout if settings.defaults.connect_timeout is not None
        else _default_connect_timeout(),
        "tensorboard": settings.defaults.tensorboard,
        "tensorboard_args": list(settings.defaults.extra_args),
        "ssh": settings.defaults.ssh,
        "ssh_persist": settings.defaults.ssh_persist,
        "hosts": {name: host_view(h) for name, h in sorted(settings.hosts.items())},
        "sources": dict(sorted(settings.sources.items())),
    }


def _default_connect_timeout() -> float:
    from tbctl.hosts.ssh_config import DEFAULT_CONNECT_TIMEOUT  # the one place that applies it

    return DEFAULT_CONNECT_TIMEOUT


def parse_port(raw: str | int, *, source: str = "port") -> int:
    """A TCP port a server can listen on: 1..65535 (0 would mean 'any', which we never want silently)."""
    text = str(raw).strip()
    if not text.isdigit():
        raise UsageError(f"{source} {raw!r} is not a port number", hint="use a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{source} {port} is out of range", hint="use a number from 1 to 65535")
    return port

