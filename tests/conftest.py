"""Fixtures shared by the suite: an isolated tbctl state dir, real logdirs, a process reaper, and one
helper that drives the CLI in-process and shows stderr when the exit code is not the expected one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from examples.make_example_logdir import write_example_logdir
from tests.support.procs import ProcessReaper, free_port
from tbctl.cli.app import app


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs `tbctl ARGS` in-process (Typer's CliRunner) and adopts every TensorBoard it reports, so the
    reaper stops it by pid even when the test fails half way."""

    def __init__(self, reaper: ProcessReaper) -> None:
        self.reaper = reaper
        self.runner = CliRunner()

    def __call__(self, *args: str, exit_code: int = 0, input: str | None = None) -> CliResult:
        result = self.runner.invoke(app, list(args), input=input, catch_exceptions=False)
        out = CliResult(result.exit_code, result.stdout, result.stderr)
        assert out.exit_code == exit_code, (
            f"tbctl {' '.join(args)} exited {out.exit_code}, expected {exit_code}\n"
            f"--- stdout ---\n{out.stdout}\n--- stderr ---\n{out.stderr}"
        )
        if "--json" in args and args and args[0] == "up" and out.exit_code == 0:
            inst = out.json()["instance"]
            self.reaper.adopt(inst["pid"], inst["create_time"])
        return out

    def up(self, *args: str, exit_code: int = 0) -> dict[str, Any]:
        """`tbctl up --json ARGS`, returning the parsed record."""
        result = self("up", "--json", *args, exit_code=exit_code)
        return result.json() if exit_code == 0 else {"stderr": result.stderr}


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own tbctl state (records, logs, locks): `state`, or where TBCTL_TEST_STATE_SUBDIR
    says under the test's tmp dir (.ci/run's macOS-like layer: "Library/Application Support/tbctl")."""
    path = tmp_path / os.environ.get("TBCTL_TEST_STATE_SUBDIR", "state")
    monkeypatch.setenv("TBCTL_STATE_DIR", str(path))
    monkeypatch.delenv("TBCTL_PORT", raising=False)
    monkeypatch.delenv("TBCTL_TIMEOUT", raising=False)
    yield path
    close_masters_of(path)


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never the developer's own config file: TBCTL_CONFIG names one that is not there, until a test writes it."""
    path = tmp_path / "config.toml"
    monkeypatch.setenv("TBCTL_CONFIG", str(path))
    return path


def close_masters_of(state_dir: Path) -> None:
    """The SSH ControlMasters tbctl started for a test persist for minutes by design: close them with the
    test, and fail it if one does not go (nothing the suite starts may outlive it)."""
    from tbctl.hosts.openssh.masters import close_kept_connections, kept_connections

    close_kept_connections(state_dir)
    left = kept_connections(state_dir)
    assert not left, f"ControlMasters left running: {left}"


# --- the real user's home stays untouched ---------------------------------------------------------------

XDG_DIRS = {"XDG_CONFIG_HOME": ".config", "XDG_CACHE_HOME": ".cache", "XDG_STATE_HOME": ".local/state",
            "XDG_DATA_HOME": ".local/share"}


def _real_tbctl_dirs() -> list[Path]:
    """Where tbctl run by this user, with nothing overridden, writes: its state dir here and, on a
    "remote" that is this same machine, its cache dir; for HOME as set and as passwd says (what sshd uses)."""
    import platformdirs

    homes = {Path(os.environ.get("HOME") or "~").expanduser()}
    try:
        import pwd
    except ImportError:  # Windows: no passwd; platformdirs names its dirs below
        pass
    else:
        homes.add(Path(pwd.getpwuid(os.getuid()).pw_dir))
    dirs = {home / sub / "tbctl" for home in homes for sub in (".local/state", ".cache")}
    dirs |= {Path(platformdirs.user_state_dir("tbctl")), Path(platformdirs.user_cache_dir("tbctl"))}
    dirs |= {Path(os.environ[var]) / "tbctl" for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME") if os.environ.get(var)}
    return sorted(dirs)


def _snapshot(dirs: list[Path]) -> dict[Path, int]:
    found: dict[Path, int] = {}
    for top in dirs:
        if top.exists():
            found[top] = top.stat().st_mtime_ns
            for path in top.rglob("*"):
                try:
                    found[path] = path.lstat().st_mtime_ns
                except FileNotFoundError:
                    pass
    return found


# Taken when the suite starts, before any test runs; compared when it ends (pytest_sessionfinish).
REAL_TBCTL_DIRS = _real_tbctl_dirs()
_REAL_BEFORE = _snapshot(REAL_TBCTL_DIRS)


_BASETEMP: list[Path] = []  # this run's tmp_path root: every path a test hands to tbctl is under it


@pytest.fixture(scope="session", autouse=True)
def _remember_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    _BASETEMP.append(tmp_path_factory.getbasetemp())


def _mentions_this_run(path: Path) -> bool:
    markers = {str(b) for base in _BASETEMP for b in (base, base.resolve())}
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return False
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return any(m in text for m in markers)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test wrote under the real user's tbctl dirs: a record left there shows up in
    that user's `tbctl ls` and `tbctl down --all`. What changed there names this run's tmp dirs when a test
    wrote it (records hold logdirs); other changes (the user's own tbctl, another checkout's suite running
    meanwhile) are listed, not failed. tests/test_suite_hygiene.py checks the isolation itself, remote too."""
    after = _snapshot(REAL_TBCTL_DIRS)
    changed = sorted(p for p, mtime in after.items() if _REAL_BEFORE.get(p) != mtime)
    if not changed:
        return
    ours = [p for p in changed if _mentions_this_run(p)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        head = "tests wrote under the real home's tbctl dirs" if ours else "changed meanwhile (not by this run)"
        reporter.write_line("")
        reporter.write_line(f"{head}: {', '.join(map(str, REAL_TBCTL_DIRS))}", red=bool(ours), bold=bool(ours))
        for p in (ours or changed)[:20]:
            reporter.write_line(f"  {p}")
    if ours:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own HOME and XDG dirs, so nothing reaches the real user's ~/.local/state/tbctl,
    ~/.cache/tbctl, ~/.config or ~/.ssh/config, in this process or in any process a test starts (they
    inherit it). The remote's sessions have their own (tests/support/remote.py)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var, sub in XDG_DIRS.items():
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    return home


@pytest.fixture
def reaper() -> Iterator[ProcessReaper]:
    with ProcessReaper() as r:
        yield r


@pytest.fixture
def cli(reaper: ProcessReaper) -> Cli:
    return Cli(reaper)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    write_example_logdir(path)
    return path


@pytest.fixture
def port() -> int:
    """A port free right now, away from 6006 so a developer's own TensorBoard is never in the way."""
    return free_port()


def tensorboard_pids_for(logdir: Path) -> list[int]:
    """Live TensorBoard processes serving `logdir` (however they were started)."""
    import psutil

    from tbctl.probe import tensorboard_args

    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and tensorboard_args(cmd) is not None and str(logdir) in cmd:
            out.append(p.info["pid"])
    return out


os.environ.setdefault("NO_COLOR", "1")


SSH_BACKENDS = ("openssh", "paramiko")


@pytest.fixture(params=SSH_BACKENDS)
def ssh_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test of a remote host runs once per SSH backend (the test IDs say which)."""
    monkeypatch.setenv("TBCTL_SSH", request.param)
    return str(request.param)


@pytest.fixture
def remote(remote_server: Any, ssh_backend: str) -> Any:
    """The remote machine, reached over the SSH backend of this run of the test."""
    return remote_server


@pytest.fixture(scope="session")
def remote_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real sshd as the remote host: in its own network namespace (plus a jump host) when the suite
    may create namespaces (root, as in CI), else on loopback."""
    from tests.support.remote import start_remote, stop_remote
    from tests.support.sshd import sshd_available

    yield from _service_or_skip(sshd_available, start_remote, stop_remote, tmp_path_factory, "remote")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Slurm: a login node and a compute node, each a machine of its own (tests/support/slurm.py)."""
    from tests.support.slurm import slurm_available, start_cluster, stop_cluster

    yield from _service_or_skip(slurm_available, start_cluster, stop_cluster, tmp_path_factory, "slurm")


def _service_or_skip(available: Callable[[], tuple[bool, str]], start: Callable[[Path], Any],
                     stop: Callable[[Any], None], factory: pytest.TempPathFactory, name: str) -> Iterator[Any]:
    """A service the session's tests share, started in its own temporary dir and stopped after the last
    of them; or each of them skipped, saying why the service cannot run here."""
    ok, why = available()
    if not ok:
        pytest.skip(why)
    service = start(factory.mktemp(name))
    try:
        yield service
    finally:
        stop(service)


@pytest.fixture
def ssh_env(remote: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """tbctl reads the test's ssh_config (aliases tbremote, tbjump, tbviajump)."""
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(remote.ssh_config))
    return remote


@pytest.fixture
def netns_remote(ssh_env: Any) -> Any:
    if ssh_env.netns is None:
        from tests.support.sshd import netns_available

        pytest.skip(f"the remote is not isolated in a network namespace: {netns_available()[1]}")
    return ssh_env
