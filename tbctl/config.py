"""Settings: defaults < TBCTL_* environment < flags (the config file joins between defaults and env later)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tbctl.errors import UsageError

DEFAULT_PORT = 6006
DEFAULT_LOGDIR = "runs"  # SummaryWriter's default
PORT_SEARCH_SPAN = 100  # TensorBoard itself scans 6006..6105
REMOTE_FORWARD_OFFSET = 10000  # 6006 -> 16006, as users already type it


@dataclass(frozen=True)
class HostSettings:
    """Per-host defaults (a `[hosts.NAME]` section of the config file); None means "not set"."""

    tensorboard: str | None = None
    env_prefix: str | None = None
    logdir: str | None = None
    port: int | None = None
    local_port: int | None = None
    extra_args: tuple[str, ...] = ()
    connect_timeout: float | None = None


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    start_timeout: float = 60.0
    stop_timeout: float = 10.0
    default_port: int = DEFAULT_PORT
    default_logdir: str = DEFAULT_LOGDIR
    hosts: Mapping[str, HostSettings] = field(default_factory=dict)

    def for_host(self, name: str | None) -> HostSettings:
        if name is None:
            return HostSettings()
        return self.hosts.get(name, HostSettings())


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UsageError(f"{name}={raw!r} must be positive")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    state_dir = env.get("TBCTL_STATE_DIR")
    if state_dir:
        path = Path(state_dir).expanduser()
    else:
        from platformdirs import user_state_path

        path = user_state_path("tbctl")
    port_raw = env.get("TBCTL_PORT")
    port = DEFAULT_PORT
    if port_raw:
        port = parse_port(port_raw, source="TBCTL_PORT")
    return Settings(
        state_dir=path,
        start_timeout=_float(env, "TBCTL_TIMEOUT", 60.0),
        stop_timeout=_float(env, "TBCTL_STOP_TIMEOUT", 10.0),
        default_port=port,
        default_logdir=env.get("TBCTL_LOGDIR") or DEFAULT_LOGDIR,
    )


def parse_port(raw: str | int, *, source: str = "port") -> int:
    """A TCP port a server can listen on: 1..65535 (0 would mean 'any', which we never want silently)."""
    text = str(raw).strip()
    if not text.isdigit():
        raise UsageError(f"{source} {raw!r} is not a port number", hint="use a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{source} {port} is out of range", hint="use a number from 1 to 65535")
    return port
