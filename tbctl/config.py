"""Settings: built-in defaults < config file < TBCTL_* environment < flags.

The config file is TOML at platformdirs' user config dir (`~/.config/tbctl/config.toml` on Linux), or
wherever `TBCTL_CONFIG` points. Top-level keys are defaults for every host; a `[hosts.NAME]` section
applies when `--host NAME` is given, over the top level. An environment variable beats anything the file
says for the same value (including a host section), and a flag beats everything. Keys are the long
option names with underscores, so what a user types on the command line is what they write in the file.

Every setting is one row of SETTINGS: its key, what a value may be, its TBCTL_* variable, where in the file it
may be set, its default and a line of help. That table drives the file's checks, the precedence, `tbctl config
show` and the README's list of settings (a test keeps the list and the table the same).

Reading the file costs a TOML import only when the file exists; TAB completion reads it too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tbctl.config_lines import ConfigError, dotted, fail_at, locate_key, read_toml, toml_repr  # noqa: F401  (ConfigError: re-exported)
from tbctl.errors import UsageError

DEFAULT_PORT = 6006
DEFAULT_LOGDIR = "runs"  # SummaryWriter's default
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
PORT_SEARCH_SPAN = 100  # TensorBoard itself scans 6006..6105
REMOTE_FORWARD_OFFSET = 10000  # 6006 -> 16006, as users already type it
CONFIG_FILE_NAME = "config.toml"
DEFAULT_SSH_PERSIST = 600.0  # seconds tbctl's own ControlMaster stays after the last command that used it
DEFAULT_PULL_INTERVAL = 2.0  # seconds between two polls of a pulled logdir that is growing
DEFAULT_PULL_BUDGET = 4 << 20  # bytes one poll may fetch from a host, so a first sync does not starve the link
SSH_BACKENDS = ("openssh", "paramiko")
# How the notebook magic's inline dashboard is reached from the browser: `auto` picks one of the others.
NOTEBOOK_URLS = ("auto", "direct", "proxy", "tunnel")


@dataclass(frozen=True)
class HostSettings:
    """What applies on one host: its [hosts.NAME] section over the top level, the environment over both (a
    host without a section gets what an empty one would). One field per row of SETTINGS a section may set;
    None means "not set"."""

    logdir: str | None
    port: int | None
    local_port: int | None
    connect_timeout: float | None
    tensorboard: str | None
    env: str | None
    tensorboard_args: tuple[str, ...]
    ssh: str | None  # the SSH backend; None: the best available
    ssh_persist: float
    open: bool  # up and tunnel open the URL in a browser
    private: bool  # up --host serves on a unix socket only this user can open (--private)


@dataclass(frozen=True)
class Settings:
    """The settings in effect. The top level's value of a row is a field here when the commands fall back to
    it themselves (see Setting.sections_inherit), else a field of `defaults`."""

    state_dir: Path
    logdir: str
    port: int
    timeout: float
    stop_timeout: float
    notebook_url: str  # one of NOTEBOOK_URLS
    pull: tuple[str, ...]  # `up --pulls`: HOST:LOGDIR sources
    pull_interval: float  # seconds between polls of a pulled logdir
    pull_budget: int  # bytes one poll of a pulled logdir may fetch
    hosts: Mapping[str, HostSettings]  # each [hosts.NAME] section, merged over the top level
    defaults: HostSettings  # what a host without a section gets, this machine included
    config_file: Path | None  # the file consulted (it may not exist)
    config_loaded: bool  # whether it existed and was read
    sources: Mapping[str, str]  # top-level setting -> "default" | "file" | "env:NAME"
    file_lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)  # a key of the file -> its line

    def for_host(self, name: str | None) -> HostSettings:
        if name is None:
            return self.defaults
        return self.hosts.get(name, self.defaults)

    def origin(self, name: str, host: str | None) -> str:
        """Where the value of setting `name` on `host` came from, for a message about it: the TBCTL_*
        variable, `FILE:LINE` (with the host's section), or "default". (A flag is named by its caller.)"""
        setting = BY_NAME[name]
        if setting.env is not None and self.sources.get(name) == f"env:{setting.env}":
            return setting.env
        if host is not None and ("hosts", host, name) in self.file_lines:
            return f"{self.config_file}:{self.file_lines['hosts', host, name]} ([hosts.{dotted((host,))}])"
        if (name,) in self.file_lines:
            return f"{self.config_file}:{self.file_lines[name,]}"
        return "default"


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


def state_dir_path(env: Mapping[str, str] | None = None) -> Path:
    """`TBCTL_STATE_DIR`, else the user state dir (records, logs, locks). Not a config file setting, so
    TAB completion finds it even when the config file is broken."""
    env = os.environ if env is None else env
    state_dir = env.get("TBCTL_STATE_DIR")
    if state_dir:
        return Path(state_dir).expanduser()
    return _user_dir("state", env)


# --- the settings -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a setting's value may be: the check of the file's value, the words for a right one (in the error
    when it is wrong), and how the text of a TBCTL_* variable becomes one."""

    expected: str
    check: Callable[[Any], Any]  # the file's value -> the setting's value, or None when it is not one
    from_env: Callable[[str, str], Any] | None = None  # (variable, its non-empty text) -> value; UsageError


def _seconds_kind(*, zero_ok: bool) -> Kind:
    def check(value: Any) -> float | None:
        number = type(value) in (int, float)
        return float(value) if number and (value > 0 or (zero_ok and value == 0)) else None

    def from_env(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
        if value < 0 or (value == 0 and not zero_ok):
            raise UsageError(f"{name}={raw!r} must be {'0 or more' if zero_ok else 'positive'}")
        return value

    return Kind("a number of seconds, 0 or more" if zero_ok else "a positive number of seconds", check, from_env)


def _text_kind(what: str) -> Kind:
    return Kind(f"a non-empty string ({what})", lambda v: v if isinstance(v, str) and v.strip() else None,
                lambda name, raw: raw)


def _args_check(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _backend_from_env(name: str, raw: str) -> str:
    if raw not in SSH_BACKENDS:
        raise UsageError(f"{name}={raw!r} is not an SSH backend", hint="use openssh or paramiko")
    return raw


_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool_from_env(name: str, raw: str) -> bool:
    if raw.strip().lower() not in _YES + _NO:
        raise UsageError(f"{name}={raw!r} is not true or false", hint="use 1 or 0 (or true/false, yes/no, on/off)")
    return raw.strip().lower() in _YES


def _notebook_url_from_env(name: str, raw: str) -> str:
    if raw not in NOTEBOOK_URLS:
        raise UsageError(f"{name}={raw!r} is not a way to reach the notebook's dashboard",
                         hint="use " + ", ".join(NOTEBOOK_URLS))
    return raw


PORT = Kind("a port number from 1 to 65535", lambda v: v if type(v) is int and 1 <= v <= 65535 else None,
            lambda name, raw: parse_port(raw, source=name))
SECONDS = _seconds_kind(zero_ok=False)
SECONDS_OR_ZERO = _seconds_kind(zero_ok=True)
ARGS = Kind('a list of strings, e.g. ["--samples_per_plugin", "scalars=1000"]', _args_check)
BACKEND = Kind('"openssh" or "paramiko"', lambda v: v if v in SSH_BACKENDS else None, _backend_from_env)
NOTEBOOK_URL = Kind(", ".join(f'"{u}"' for u in NOTEBOOK_URLS[:-1]) + f' or "{NOTEBOOK_URLS[-1]}"',
                    lambda v: v if v in NOTEBOOK_URLS else None, _notebook_url_from_env)
BOOL = Kind("true or false", lambda v: v if type(v) is bool else None, _bool_from_env)


def _bytes_from_env(name: str, raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise UsageError(f"{name}={raw!r} is not a positive number of bytes")
    return int(raw)


BYTES = Kind("a positive whole number of bytes", lambda v: v if type(v) is int and v > 0 else None, _bytes_from_env)
SOURCES = Kind('a list of "HOST:LOGDIR" strings, e.g. ["gpu1:runs", "gpu2:exp/runs"]', _args_check)

Scope = Literal["top", "host", "both"]  # the top level, [hosts.NAME] sections, or either


@dataclass(frozen=True)
class Setting:
    """One row of the table: a key of the config file and everything tbctl knows about it."""

    name: str  # the TOML key: the long option's name with underscores
    kind: Kind
    default: Any  # when nothing sets it; None: unset, which the code that uses it resolves
    help: str  # one line, for the README's list
    _: KW_ONLY
    env: str | None = None  # the TBCTL_* variable that beats the file, host sections included
    scope: Scope = "both"
    # Whether a host's section that does not set it takes the top level's value. False for port and logdir:
    # their top-level values are the commands' own defaults (Settings.port), which the commands
    # fall back to; a section shows them only when it (or the environment) sets them.
    sections_inherit: bool = True
    shown_unset: Callable[[], Any] | None = None  # what `config show` prints when it is unset: what then applies


def _default_connect_timeout() -> float:
    from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT  # the one place that applies it

    return DEFAULT_CONNECT_TIMEOUT


# In this order `config show` lists them and the README's list shows them.
SETTINGS: tuple[Setting, ...] = (
    Setting("logdir", _text_kind("a path"), DEFAULT_LOGDIR, "`up`'s LOGDIR", env="TBCTL_LOGDIR",
            sections_inherit=False),
    Setting("port", PORT, DEFAULT_PORT, "the first port `up` tries", env="TBCTL_PORT", sections_inherit=False),
    Setting("local_port", PORT, None, "`--local-port`: the local end of the forward (default: port + 10000)",
            scope="host"),
    Setting("timeout", SECONDS, DEFAULT_START_TIMEOUT, "seconds `up` waits for TensorBoard", env="TBCTL_TIMEOUT",
            scope="top"),
    Setting("stop_timeout", SECONDS, DEFAULT_STOP_TIMEOUT, "seconds `down` and `free-port` wait after SIGTERM",
            env="TBCTL_STOP_TIMEOUT", scope="top"),
    Setting("connect_timeout", SECONDS, None, "seconds to connect over SSH (default: the ssh_config's "
            "`ConnectTimeout`, else 10)", shown_unset=_default_connect_timeout),
    Setting("tensorboard", _text_kind("the path of the tensorboard executable"), None,
            "`--tensorboard`: the tensorboard executable"),
    Setting("env", _text_kind("a venv or conda prefix on that host"), None,
            "`--env`: python and tensorboard from this venv or conda prefix there", scope="host"),
    Setting("tensorboard_args", ARGS, (), "flags for TensorBoard, before any `up … -- FLAGS`"),
    Setting("ssh", BACKEND, None, "`--ssh`: openssh or paramiko (default: openssh where usable)", env="TBCTL_SSH"),
    Setting("ssh_persist", SECONDS_OR_ZERO, DEFAULT_SSH_PERSIST,
            "seconds tbctl's own ControlMaster stays idle; 0: it ends with the command", env="TBCTL_SSH_PERSIST"),
    Setting("open", BOOL, False, "`--open`: `up` and `tunnel` open the URL in a browser", env="TBCTL_OPEN"),
    Setting("private", BOOL, False, "`--private`: `up --host` serves TensorBoard on a unix socket only you can open"),
    Setting("notebook_url", NOTEBOOK_URL, "auto", "`%tbctl up --notebook-url`: how the notebook's browser reaches "
            "the dashboard: `direct`, `proxy` (jupyter-server-proxy) or `tunnel` (prints the `tbctl tunnel` line); "
            "`auto` picks", env="TBCTL_NOTEBOOK_URL", scope="top"),
    Setting("pull", SOURCES, (), "what `up --pulls` pulls: `HOST:LOGDIR` sources, as `--pull` takes them",
            scope="top"),
    Setting("pull_interval", SECONDS, DEFAULT_PULL_INTERVAL, "seconds between polls of a pulled logdir that grows "
            "(up to 3× that while it does not)", env="TBCTL_PULL_INTERVAL", scope="top"),
    Setting("pull_budget", BYTES, DEFAULT_PULL_BUDGET, "bytes one poll may fetch from a host (a first sync takes "
            "several polls)", env="TBCTL_PULL_BUDGET", scope="top"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
TOP_LEVEL_KEYS = tuple(s.name for s in SETTINGS if s.scope != "host")
HOST_KEYS = tuple(s.name for s in SETTINGS if s.scope != "top")


def on_settings(setting: Setting) -> bool:
    """Whether the top level's value is a field of Settings (else of HostSettings, as `defaults`)."""
    return setting.scope == "top" or (setting.scope == "both" and not setting.sections_inherit)


@dataclass(frozen=True)
class ConfigFile:
    """The file's content, checked: top-level values and each host's own section (not yet merged)."""

    path: Path
    top: Mapping[str, Any]
    hosts: Mapping[str, Mapping[str, Any]]
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)  # each key set -> the line setting it


def read_config(path: Path) -> ConfigFile | None:
    """The checked content of `path`, None when there is no such file; ConfigError when it is malformed."""
    read = read_toml(path)
    if read is None:
        return None
    text, data = read
    top: dict[str, Any] = {}
    hosts: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key == "hosts":
            if not isinstance(value, dict):
                fail_at(path, text, ("hosts",), "must be a table of [hosts.NAME] sections")
            for name, section in value.items():
                if not isinstance(section, dict):
                    fail_at(path, text, ("hosts", name), "must be a table, e.g. [hosts.NAME] with keys under it")
                hosts[name] = {k: _check(path, text, ("hosts", name, k), v, HOST_KEYS) for k, v in section.items()}
        else:
            top[key] = _check(path, text, (key,), value, TOP_LEVEL_KEYS)
    keys: list[tuple[str, ...]] = [(key,) for key in top]
    keys += [("hosts", name, key) for name, section in hosts.items() for key in section]
    lines = {key: line for key in keys if (line := locate_key(text, key)) is not None}
    return ConfigFile(path=path, top=top, hosts=hosts, lines=lines)


def _check(path: Path, text: str, key: tuple[str, ...], value: Any, allowed: tuple[str, ...]) -> Any:
    name = key[-1]
    where = f"[hosts.{dotted(key[1:2])}]" if len(key) == 3 else "the top level"
    if name not in allowed:
        hint = f"known keys in {where}: {', '.join(allowed)}"
        if len(key) == 1 and isinstance(value, dict):
            hint = f"a host's section is [hosts.{dotted((name,))}]; {hint}"
        elif len(key) == 1 and name in HOST_KEYS:
            hint = f"{name} belongs in a [hosts.NAME] section; {hint}"
        fail_at(path, text, key, f"unknown key in {where}", hint=hint)
    kind = BY_NAME[name].kind
    checked = kind.check(value)
    if checked is None:
        fail_at(path, text, key, f"expected {kind.expected}, got {toml_repr(value)}")
    return checked


# --- what is in effect ---------------------------------------------------------------------------------------


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Each setting through the chain: its default < the file's top level < a host's section < its variable."""
    env = os.environ if env is None else env
    state_path = state_dir_path(env)
    path = config_path(env)
    conf = read_config(path)
    in_file = conf.top if conf is not None else {}
    from_env = {s.name: s.kind.from_env(s.env, env[s.env]) for s in SETTINGS
                if s.env is not None and s.kind.from_env is not None and env.get(s.env)}
    top: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.scope == "host":
            continue
        if setting.name in from_env:
            top[setting.name], sources[setting.name] = from_env[setting.name], f"env:{setting.env}"
        elif setting.name in in_file:
            top[setting.name], sources[setting.name] = in_file[setting.name], "file"
        else:
            top[setting.name], sources[setting.name] = setting.default, "default"

    def host(section: Mapping[str, Any]) -> HostSettings:
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.scope == "top":
                continue
            name = setting.name
            if name in from_env:
                value = from_env[name]
            elif name in section:
                value = section[name]
            elif setting.scope == "both" and setting.sections_inherit:
                value = top[name]
            else:
                value = setting.default if setting.scope == "host" else None
            values[name] = value
        return HostSettings(**values)

    return Settings(
        state_dir=state_path,
        **{s.name: top[s.name] for s in SETTINGS if on_settings(s)},
        hosts={name: host(section) for name, section in (conf.hosts if conf is not None else {}).items()},
        defaults=host({}),
        config_file=path,
        config_loaded=conf is not None,
        sources=sources,
        file_lines=conf.lines if conf is not None else {},
    )


@dataclass(frozen=True)
class ShownSetting:
    """One top-level line of `tbctl config show`."""

    key: str
    value: Any  # as JSON has it (a list, not a tuple); None: not set
    source: str  # "default", "file" or "env:NAME"


def top_level_rows(settings: Settings) -> list[ShownSetting]:
    """The top level's settings in effect, in the table's order, each with where its value came from."""
    rows = []
    for setting in SETTINGS:
        if setting.scope == "host":
            continue
        value = getattr(settings if on_settings(setting) else settings.defaults, setting.name)
        if value is None and setting.shown_unset is not None:
            value = setting.shown_unset()
        rows.append(ShownSetting(setting.name, _as_json(value), settings.sources[setting.name]))
    return rows


def host_rows(host: HostSettings) -> dict[str, Any]:
    """A host's settings in effect, keyed as in its section."""
    return {s.name: _as_json(getattr(host, s.name)) for s in SETTINGS if s.scope != "top"}


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """The effective settings, keyed as in the config file (what `tbctl config show --json` prints)."""
    return {
        "config_file": str(settings.config_file) if settings.config_file else None,
        "config_loaded": settings.config_loaded,
        "state_dir": str(settings.state_dir),
        **{row.key: row.value for row in top_level_rows(settings)},
        "hosts": {name: host_rows(h) for name, h in sorted(settings.hosts.items())},
        "sources": dict(sorted(settings.sources.items())),
    }


def _as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def parse_port(raw: str | int, *, source: str = "port") -> int:
    """A TCP port a server can listen on: 1..65535 (0 would mean 'any', which we never want silently)."""
    text = str(raw).strip()
    if not text.isdigit():
        raise UsageError(f"{source} {raw!r} is not a port number", hint="use a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{source} {port} is out of range", hint="use a number from 1 to 65535")
    return port

