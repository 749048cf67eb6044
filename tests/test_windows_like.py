"""A Windows-like layer: tbctl's local side where Windows' Python lacks what POSIX has.

Nothing here runs Windows. The stand-in is an interpreter that cannot import `pwd` or `fcntl` and has no
`os.getuid`, `os.geteuid`, `signal.SIGKILL`, `signal.SIGHUP`, `os.WNOHANG` or `os.O_NOFOLLOW` (all absent from
Windows' CPython), whose `msvcrt.locking` behaves as Windows' does (built here on POSIX record locks), and
which runs the psutil backend as Windows does (there is no /proc there). What only Windows' kernel can
answer (creation flags, CTRL_BREAK, TerminateProcess) is tested in tests/test_process_control.py against
psutil's API; the real thing runs on the windows runner of .github/workflows/tests.yml.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli, tensorboard_pids_for
from tests.support.procs import TENSORBOARD, ProcessReaper, wait_until

REPO = Path(__file__).resolve().parent.parent

# Run before tbctl is imported: what Windows' CPython does not have is made absent. On Windows itself (the
# CI workflow's windows job) there is nothing to take away, and these tests run tbctl as it is.
STAND_IN = """
import importlib.abc, os, signal, subprocess, sys, types

# subprocess and psutil are other implementations on Windows, which need none of what goes below: the
# POSIX ones running here keep theirs (psutil its pwd, imported now; subprocess whole copies of os and signal).
import psutil
for _name in ("os", "signal"):
    _whole = types.ModuleType(_name)
    _whole.__dict__.update(getattr(subprocess, _name).__dict__)
    setattr(subprocess, _name, _whole)

class _AbsentOnWindows(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("pwd", "fcntl"):
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return None

# msvcrt, as Windows' C runtime has it: locking(fd, mode, n) locks n bytes from the current position, and
# LK_LOCK tries ten times, one second apart (here 20 ms), then raises EDEADLOCK. Built on POSIX record locks
# (lockf), which also lock a byte range from the current position and are released when the process exits.
import errno as _errno, fcntl as _fcntl, time as _time
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK = 0, 1, 2

def _locking(fd, mode, nbytes):
    if mode == msvcrt.LK_UNLCK:
        _fcntl.lockf(fd, _fcntl.LOCK_UN, nbytes, 0, os.SEEK_CUR)
        return
    for _attempt in range(10 if mode == msvcrt.LK_LOCK else 1):
        try:
            _fcntl.lockf(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB, nbytes, 0, os.SEEK_CUR)
            return
        except OSError:
            _time.sleep(0.02)
    raise OSError(_errno.EDEADLK if mode == msvcrt.LK_LOCK else _errno.EACCES, "Resource deadlock avoided")

msvcrt.locking = _locking
sys.modules["msvcrt"] = msvcrt

sys.meta_path.insert(0, _AbsentOnWindows())
for _name in ("pwd", "fcntl"):
    sys.modules.pop(_name, None)
for _module, _names in ((os, ("getuid", "geteuid", "WNOHANG", "O_NOFOLLOW")), (signal, ("SIGKILL", "SIGHUP"))):
    for _attr in _names:
        if hasattr(_module, _attr):
            delattr(_module, _attr)
"""

WINDOWS_LIKE = "import os, signal, sys\n" if os.name == "nt" else STAND_IN

RUN_TBCTL = WINDOWS_LIKE + """
import runpy
sys.argv = ["tbctl"] + sys.argv[1:]
runpy.run_module("tbctl", run_name="__main__")
"""


def windows_like(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, TBCTL_PROBE_PSUTIL="1", NO_COLOR="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=full_env)


def tbctl(*args: str) -> subprocess.CompletedProcess[str]:
    return windows_like(RUN_TBCTL, *args)


@pytest.mark.timeout(60)
def test_the_stand_in_really_lacks_what_windows_lacks() -> None:
    probe = windows_like(WINDOWS_LIKE + """
import importlib
for name in ("pwd", "fcntl"):
    try:
        importlib.import_module(name)
        print("imported", name)
    except ImportError:
        pass
print(hasattr(os, "getuid"), hasattr(signal, "SIGKILL"), hasattr(signal, "SIGHUP"), hasattr(os, "WNOHANG"),
      hasattr(os, "O_NOFOLLOW"))
""")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["False"] * 5


@pytest.mark.timeout(120)
def test_help_config_show_and_ls_json_run_without_pwd_and_fcntl(state_dir: Path) -> None:
    assert tbctl("--help").returncode == 0
    shown = tbctl("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state_dir"] == str(state_dir)
    listed = tbctl("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout)["instances"], list)


@pytest.mark.timeout(180)
def test_ls_and_down_of_a_tensorboard_tbctl_started_without_pwd_and_fcntl(cli: Cli, logdir: Path, port: int) -> None:
    """Started the usual way (a launch is POSIX's here, and Windows' in test_process_control.py), then
    listed and stopped by a Windows-like tbctl: no uids, owners named by psutil, records rewritten under
    the lock without fcntl. The stop is SIGTERM here, as no escalation is needed."""
    inst = cli.up("--port", str(port), str(logdir))["instance"]
    import getpass

    listed = tbctl("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    ours = [i for i in json.loads(listed.stdout)["instances"] if i["pid"] == inst["pid"]]
    assert [(i["status"], i["started_by"], i["user"]) for i in ours] == [("serving", "tbctl", getpass.getuser())]
    stopped = tbctl("down", str(port), "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert [r["outcome"] for r in json.loads(stopped.stdout)["instances"]] == ["stopped"]
    assert not [i for i in json.loads(tbctl("ls", "--json").stdout)["instances"] if i["pid"] == inst["pid"]]


@pytest.mark.timeout(60)
def test_a_state_write_takes_the_lock_without_fcntl(state_dir: Path) -> None:
    written = windows_like(WINDOWS_LIKE + """
from pathlib import Path
from tbctl.records import InstanceRecord
from tbctl.state import StateStore

store = StateStore(Path(sys.argv[1]))
store.add(InstanceRecord(host="local", pid=4242, create_time=1.5, port=6006, logdir="runs"))
with store.lock("forwarder-gpu1"):
    store.add(InstanceRecord(host="local", pid=4243, create_time=2.5, port=6007, logdir="runs"))
print(sorted(r.pid for r in StateStore(Path(sys.argv[1])).load()))
""", str(state_dir))
    assert written.returncode == 0, written.stderr
    assert written.stdout.split() == ["[4242,", "4243]"]


@pytest.mark.timeout(60)
def test_the_lock_excludes_another_process_past_msvcrts_own_retries(state_dir: Path, tmp_path: Path) -> None:
    """One tbctl holds a lock; another, once it is trying, waits for it for 1 s, past the ten tries after which
    msvcrt.locking gives up, and gets it once the first lets go. The holder lets go only 1 s after the waiter
    says it is trying, so a slow start of either process (a busy machine) cannot make the wait look short."""
    trying = tmp_path / "trying"
    hold = WINDOWS_LIKE + """
import time
from pathlib import Path
from tbctl.state import StateStore

with StateStore(Path(sys.argv[1])).lock("state"):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.01)
    time.sleep(1.0)
"""
    holder = subprocess.Popen([sys.executable, "-c", hold, str(state_dir), str(trying)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env=dict(os.environ, TBCTL_PROBE_PSUTIL="1"))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waited = windows_like(WINDOWS_LIKE + """
import time
from pathlib import Path
from tbctl.state import StateStore

store = StateStore(Path(sys.argv[1]))
started = time.monotonic()
Path(sys.argv[2]).touch()
with store.lock("state"):
    print(round(time.monotonic() - started, 2))
""", str(state_dir), str(trying))
        assert waited.returncode == 0, waited.stderr
        assert float(waited.stdout) >= 0.5  # the holder kept it ~1 s more; the fake msvcrt gives up after 0.2 s
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.timeout(60)
def test_the_foreground_and_the_forwarder_handle_only_signals_the_platform_has(state_dir: Path) -> None:
    """Windows has no SIGHUP: holding a forward still turns SIGTERM into a clean exit, and the background
    forwarder still starts (here it finds nothing to forward and exits)."""
    done = windows_like(WINDOWS_LIKE + """
from pathlib import Path
from tbctl import daemon
from tbctl.core.expose import interrupt_on_hangup
from tbctl.errors import TbctlError
from tbctl.state import StateStore

try:
    with interrupt_on_hangup():
        signal.raise_signal(signal.SIGTERM)  # not os.kill: on Windows that is TerminateProcess
except KeyboardInterrupt:
    print("interrupted")

def no_host():
    raise TbctlError("no SSH client here")

print("exit", daemon.serve("gpu1", StateStore(Path(sys.argv[1])), no_host).name)
""", str(state_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (lines[0], lines[-1]) == ("interrupted", "exit OK"), done.stdout


def test_ssh_openssh_is_refused_on_windows_in_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' OpenSSH has no ControlMaster, so tbctl's openssh backend cannot work there: asked for by
    --ssh, TBCTL_SSH or the config file, it is a usage error (exit 2) that says so, and paramiko is the
    default. sys.platform is set to Windows' for the test only: the decision reads nothing else (platformdirs,
    which chooses its implementation when imported, is imported first)."""
    import platformdirs  # noqa: F401

    from tbctl.hosts.openssh.client import forget_openssh_client

    forget_openssh_client()  # what an earlier test found out on Linux
    monkeypatch.setattr(sys, "platform", "win32")
    try:
        _refused_with_the_reason(cli, monkeypatch)
    finally:
        forget_openssh_client()  # Windows' answer: not for the tests after this one


def _refused_with_the_reason(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = cli("--ssh", "openssh", "ls", "--host", "gpu1", exit_code=2)
    assert "tbctl: --ssh openssh cannot work on Windows: Windows' OpenSSH cannot multiplex connections" in (
        refused.stderr.splitlines())
    monkeypatch.setenv("TBCTL_SSH", "openssh")
    assert "TBCTL_SSH" in cli("config", "show", exit_code=2).stderr
    monkeypatch.delenv("TBCTL_SSH")
    shown = cli("config", "show", "--json").json()
    assert (shown["ssh_in_effect"], shown["ssh_reason"]) == (
        "paramiko", "Windows' OpenSSH cannot multiplex connections; using tbctl's own SSH client")


def test_tensorboard_is_found_in_a_windows_environments_scripts_folder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A Windows venv or conda env keeps its programs in Scripts\\ as .exe launchers, not in bin/ (os.name
    is set to Windows' for the call: nothing else here reads it before the file is found)."""
    from tbctl.probe import find_tensorboard

    exe = tmp_path / "env" / "Scripts" / "tensorboard.exe"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"MZ")
    exe.chmod(0o755)
    with monkeypatch.context() as windows:
        windows.setattr(os, "name", "nt")
        found = find_tensorboard(env_prefix=str(tmp_path / "env"))
    assert found["path"] == str(exe), found


# Windows' console-script launcher as far as this machine can show it: a process whose command line has
# TensorBoard's arguments runs `python …tensorboard ARGS` as its child with the same arguments and waits
# for it. Ending the launcher ends the child: on Windows a kill-on-close job object does that, here a
# signal handler.
LAUNCHER = """#!{python}
import signal, subprocess, sys
child = subprocess.Popen([{python!r}, {tensorboard!r}, *sys.argv[1:]])
signal.signal(signal.SIGTERM, lambda signum, frame: child.terminate())
sys.exit(child.wait())
"""


@pytest.mark.timeout(180)
def test_a_launcher_and_the_tensorboard_it_runs_are_listed_and_stopped_as_one(
        cli: Cli, logdir: Path, port: int, tmp_path: Path, reaper: ProcessReaper) -> None:
    """On Windows every pip-installed TensorBoard is a chain (Scripts\\tensorboard.exe, then python.exe
    with the same arguments, and in a venv one more python.exe): `ls` must show one instance, with the
    pid `up` printed, serving, tbctl's; `down` must end it."""
    launcher = tmp_path / "Scripts" / "tensorboard"
    launcher.parent.mkdir()
    launcher.write_text(LAUNCHER.format(python=sys.executable, tensorboard=TENSORBOARD))
    launcher.chmod(0o755)
    inst = cli.up("--tensorboard", str(launcher), "--port", str(port), "--new", str(logdir))["instance"]
    for child in __import__("psutil").Process(inst["pid"]).children(recursive=True):
        reaper.adopt(child.pid)
    rows = [i for i in cli("ls", "--json").json()["instances"] if i["port"] == port]
    assert [(r["pid"], r["status"], r["started_by"]) for r in rows] == [(inst["pid"], "serving", "tbctl")], rows
    cli("down", str(port))
    assert wait_until(lambda: not tensorboard_pids_for(logdir), 15), tensorboard_pids_for(logdir)
