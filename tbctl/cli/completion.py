"""TAB completion. Runs on every TAB press: never imports paramiko, reads only local files, and never fails
loudly (a broken config file must not print a traceback into the user's command line).

The shell scripts in completions/ come from Typer's completion environment variable:
`_TBCTL_COMPLETE=source_bash tbctl` (or source_zsh, source_fish, source_powershell), which is also what
`tbctl completion SHELL` prints. The app is built with
`add_completion=False` (no --install-completion/--show-completion options), which also leaves Typer's
completion classes unregistered; `register_shells()` registers them when that variable is set.
"""

from __future__ import annotations

COMPLETE_VAR = "_TBCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish", "powershell")
SCRIPT_FILES = {"bash": "tbctl.bash", "zsh": "tbctl.zsh", "fish": "tbctl.fish", "powershell": "tbctl.ps1"}  # under completions/


def complete_hosts(incomplete: str) -> list[str]:
    """`--host`: Host aliases from ~/.ssh/config (no patterns), then the config file's [hosts.NAME]."""
    from tbctl.hosts.host_spec import config_aliases

    names = list(dict.fromkeys([*config_aliases(), *_config_hosts()]))
    return [n for n in names if n.startswith(incomplete)]


def _config_hosts() -> list[str]:
    from tbctl.config import config_path, read_config
    from tbctl.errors import TbctlError

    try:
        conf = read_config(config_path())
    except TbctlError:  # a malformed file is reported by commands, not by TAB
        return []
    return list(conf.hosts) if conf is not None else []


def complete_targets(incomplete: str) -> list[str]:
    """The target of `down`, `logs` and `open`: ports of this user's TensorBoards running here (not one that
    exited, which `down` only cleans up, nor another user's, which none of them may act on)."""
    from tbctl.config import state_dir_path
    from tbctl.core.instances import list_instances
    from tbctl.errors import TbctlError
    from tbctl.hosts.local import LocalHost
    from tbctl.state import StateStore

    state_dir = state_dir_path()
    host = LocalHost(state_dir)
    try:
        instances = list_instances(host, StateStore(state_dir))
    except TbctlError:
        return []
    ports = sorted({i.port for i in instances if i.port is not None and i.is_running
                    and i.user == host.user})
    return [str(p) for p in ports if str(p).startswith(incomplete)]


def register_shells() -> None:
    """Make `_TBCTL_COMPLETE=source_SHELL|complete_SHELL` work: Typer registers its bash/zsh/fish classes
    only when the app has the --install-completion options, which tbctl does not want."""
    from typer.completion import completion_init

    completion_init()


def _register_if_completing() -> None:
    import os

    if os.environ.get(COMPLETE_VAR):
        register_shells()


# Imported by cli/options.py (and so by cli/app.py) while the app is built, i.e. before Typer looks at the variable.
_register_if_completing()
