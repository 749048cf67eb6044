"""Host specs and Slurm node names are checked before any SSH backend sees them: paramiko runs ssh_config's
`Match exec` through a shell with %h filled in, so a name with shell characters would run locally. A
user's typo is exit 2, before any progress line; a name a remote gave (squeue's batch host) is exit 5
naming that remote."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.fake_host import FakeHost
from tbctl.errors import ExitCode, TbctlError, UsageError
from tbctl.hosts.host_spec import parse_spec

GOOD_SPECS = ["gpu1", "me@gpu-1.cluster_x", "gpu1:2222", "me@10.0.0.7:22", "[::1]:2222", "me@[fe80::1%eth0]"]
BAD_SPECS = ["x;touch {m}", "x|touch {m}", "x&touch {m}", "$(touch {m})", "`touch {m}`", "x'y", "a b", "(x)",
             "x>{m}", "u@h@h", "h:", "[::1;touch {m}]"]


@pytest.mark.parametrize("spec", GOOD_SPECS)
def test_every_usual_spec_is_a_host(spec: str) -> None:
    parse_spec(spec)


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_shell_characters_are_no_host(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(spec.format(m="/tmp/x"))


@pytest.fixture
def exec_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ssh_config whose `Match exec` hands %h to a shell, as paramiko's config lookup runs it."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text('Match exec "test %h = never-this-host"\n  User nobody\n')
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(cfg))
    return cfg


@pytest.mark.parametrize("spec", ["x;id>{m}", "$(id>{m})", "x`id>{m}`", "x|id>{m}", "x&&id>{m}"])
def test_paramiko_never_hands_a_hostile_host_to_its_config_lookup(spec: str, exec_config: Path,
                                                                   tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    result = _tbctl("--ssh", "paramiko", "ls", "--host", spec.format(m=marker))
    time.sleep(0.3)
    assert not marker.exists(), "a host name ran as a shell command"
    assert result.returncode == 2, result.stderr
    assert "is not a host" in result.stderr and "connecting to" not in result.stderr, result.stderr


def _tbctl(*args: str) -> subprocess.CompletedProcess[str]:
    """tbctl as its own process, as a user runs it. paramiko reads `Match exec` only when invoke was
    importable at its first import, which is decided once per process (tbctl/hosts/paramiko/library.py)."""
    return subprocess.run([sys.executable, "-m", "tbctl", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=str(Path(__file__).parent.parent))


@pytest.mark.parametrize("argv", [
    ["ls", "--host", "-oProxyCommand=touch {m}"],
    ["ls", "--host", "gpu1", "--host", "x;id>{m}", "--json"],
    ["up", "--host", "-oProxyCommand=touch {m}", "runs"],
    ["tunnel", "--", "-oProxyCommand=touch {m}", "6006"],
    ["down", "--all", "--host", "x;id>{m}"],
])
def test_a_bad_host_is_refused_before_any_progress_line(argv: list[str], cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    result = cli(*[a.format(m=marker) for a in argv], exit_code=2)
    assert "connecting to" not in result.stderr, result.stderr
    assert "not a host" in result.stderr or "must not start with" in result.stderr, result.stderr
    assert not marker.exists()


class LyingLogin(FakeHost):
    """A login node whose squeue reports a batch host no Slurm would print (the remote is hostile)."""

    def __init__(self, batch_host: str) -> None:
        super().__init__("evil", remote=True, directories=["/work", "/work/runs"])
        self.batch_host = batch_host

    def _op_run(self, argv: list[str], timeout: float) -> dict[str, Any]:
        from tbctl.core.slurm import SEP

        if argv[0] != "squeue":
            return {"rc": 1, "stdout": "", "stderr": f"{argv[0]}: not here"}
        fields = ["123", "123", "RUNNING", "None", self.batch_host, "n1", "me", "2026-12-07T07:00:00", "train", "/work"]
        return {"rc": 0, "stdout": SEP.join(fields) + "\n", "stderr": ""}


def test_a_batch_host_with_shell_characters_from_squeue_is_exit_5_naming_the_login_node(
    exec_config: Path, tmp_path: Path, state_dir: Path
) -> None:
    """The node name enters where the login node's squeue answer is read (core.slurm.choose_node); the
    node is then opened through the login node on the backend in use, here paramiko, whose config lookup
    would run the name. Slurm itself cannot be made to print such a name, so a lying login node says it."""
    from tbctl.config import load_settings
    from tbctl.core.job_up import JobUpRequest, up_job
    from tbctl.core.reach import Reach
    from tbctl.state import StateStore

    marker = tmp_path / "MARKER"
    login = LyingLogin(f"n;id>{marker}")
    reach = Reach(load_settings(), ssh="paramiko")
    request = JobUpRequest(job="123", job_name=None, node=None, logdir="runs", port=6006, timeout=5.0)
    opened: list[str] = []

    def open_node(name: str) -> Any:
        opened.append(name)
        return reach.open(name, jump=login.name)

    with pytest.raises(Exception) as caught:
        up_job(login, open_node, StateStore(state_dir), request)
    time.sleep(0.5)  # the node is opened in the background: had it been, its config lookup has run by now
    assert opened == [], "the login node's answer reached the SSH backend"
    assert not marker.exists(), "squeue's answer ran as a shell command here"
    assert isinstance(caught.value, TbctlError) and caught.value.exit_code == ExitCode.SSH, caught.value
    assert caught.value.message.startswith("evil named 'n;id>"), caught.value.message


def test_a_node_asked_for_with_shell_characters_is_a_usage_error(exec_config: Path, state_dir: Path) -> None:
    from tbctl.core.slurm import Job, choose_node

    job = Job("123", "123", "RUNNING", "None", "n1", "n1", "me", "", "train", "/work")
    with pytest.raises(UsageError):
        choose_node(LyingLogin("n1"), job, "n1;id")


def test_a_login_node_whose_squeue_names_a_hostile_batch_host_is_exit_5_on_real_slurm(
    slurm_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real test cluster, reached over paramiko, with a login node that lies: its sessions find an
    `squeue` first on PATH that runs the real one and replaces the batch host field (Slurm itself would
    never print such a name, so the lie is the only made-up part)."""
    import shutil

    from tbctl.core.slurm import SEP

    marker = tmp_path / "MARKER"
    hostile = f"n;id>{marker}"
    lying = tmp_path / "lying-bin"
    lying.mkdir()
    (lying / "squeue").write_text(
        "#!/usr/bin/python3\n"
        "import subprocess, sys\n"
        f"res = subprocess.run([{shutil.which('squeue')!r}, *sys.argv[1:]], capture_output=True, text=True)\n"
        "for line in res.stdout.splitlines(True):\n"
        f"    parts = line.split({SEP!r})\n"
        "    if len(parts) == 10:\n"
        f"        parts[4] = {hostile!r}\n"
        f"    sys.stdout.write({SEP!r}.join(parts))\n"
        "sys.stderr.write(res.stderr)\n"
        "sys.exit(res.returncode)\n")
    (lying / "squeue").chmod(0o755)
    bashrc = slurm_cluster.dir / "home" / ".bashrc"
    before = bashrc.read_text() if bashrc.exists() else None
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "test %h = never-this-host"\n  User nobody\n' + slurm_cluster.ssh_config.read_text())
    config.chmod(0o600)
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(config))
    (tmp_path / "job").mkdir()
    job = slurm_cluster.sbatch("--wrap", "sleep 600", workdir=tmp_path / "job")
    try:
        assert slurm_cluster.wait_state(job, "RUNNING"), slurm_cluster.job_state(job)
        bashrc.write_text((before or "") + f"\nexport PATH={lying}:$PATH\n")
        result = _tbctl("--ssh", "paramiko", "up", "--host", "login", "--job", job, "runs")
        time.sleep(0.5)
        assert not marker.exists(), "the login node's answer ran as a shell command here"
        assert result.returncode == 5, result.stderr
        assert f"tbctl: login named {hostile!r} as job {job}'s batch host" in result.stderr, result.stderr
    finally:
        if before is None:
            bashrc.unlink(missing_ok=True)
        else:
            bashrc.write_text(before)
        slurm_cluster.cancel_all()
