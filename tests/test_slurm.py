"""`up --job` against a real Slurm: a login node (slurmctld) and a compute node (slurmd), each its own
machine in network namespaces, the compute node reachable only through the login node (tests/support/slurm.py).

TensorBoard must run as a step of the job, be served through the login node to this machine, end with its
step on Ctrl-C (the job running on), and show the job's end when the job ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.make_example_logdir import write_example_logdir
from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.forwarders import adopt_forwarders
from tests.support.procs import TENSORBOARD, ProcessReaper, answers, http_get, wait_until
from tests.support.schemas import LS, UP, conforms
from tests.support.slurm import LOGIN, NODE, Cluster
from tests.support.squatter import start_squatter

EXAMPLE_RUNS = Path(__file__).resolve().parent.parent / "examples" / "runs"


@pytest.fixture
def cluster(slurm_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, reaper: ProcessReaper) -> Iterator[Cluster]:
    """The cluster as this test's ssh config names it; every job the test submitted ends with the test."""
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(slurm_cluster.ssh_config))
    monkeypatch.setenv("TBCTL_SSH", "openssh")
    try:
        yield slurm_cluster
    finally:
        slurm_cluster.cancel_all()


def _forwarder_logs(state_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (state_dir / "forwarders").glob("*.log"))


def inst_step(up: dict[str, Any]) -> str:
    return str(up["instance"]["step"])


def _job_dir(tmp_path: Path, name: str = "job") -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def _training_job(cluster: Cluster, workdir: Path, *args: str) -> str:
    """A batch job that writes real event files into runs/ of its WorkDir, then keeps running."""
    job = cluster.sbatch(*args, "--wrap", f"cp -r {EXAMPLE_RUNS} runs && sleep 600", workdir=workdir)
    assert cluster.wait_state(job, "RUNNING"), cluster.job_state(job)
    assert wait_until(lambda: (workdir / "runs" / "lr_0.1").is_dir(), 20)
    return job


def _tb_steps(cluster: Cluster, job: str) -> list[str]:
    return [s for s in cluster.steps(job) if "tbctl-tensorboard" in s]


BOTH = pytest.mark.parametrize("backend", ["openssh", "paramiko"])


@BOTH
def test_up_job_serves_its_runs_through_the_login_node_as_a_step(cluster: Cluster, cli: Cli, tmp_path: Path,
                                                                 reaper: ProcessReaper, state_dir: Path,
                                                                 backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_SSH", backend)
    work = _job_dir(tmp_path)
    job = _training_job(cluster, work)
    up = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--detach")
    adopt_forwarders(reaper, state_dir)
    conforms(up, UP)
    inst = up["instance"]
    assert inst["logdir"] == str(work / "runs")  # relative to the job's WorkDir
    assert (inst["job"], inst["node"], inst["job_state"]) == (job, NODE, "RUNNING")
    assert up["url"] == f"http://127.0.0.1:{inst['port'] + 10000}/"
    status, body = http_get(up["url"] + "data/runs")
    assert status == 200 and b"lr_0.1" in body and b"lr_0.01" in body
    steps = _tb_steps(cluster, job)
    assert [s.split()[0] for s in steps] == [inst["step"]] and steps[0].endswith(NODE), cluster.steps(job)
    # the node's TensorBoard is not reachable from here except through the forward
    assert not answers(f"http://{cluster.node.addr}:{inst['port']}/data/logdir", timeout=1)
    rows = cli("ls", "--host", LOGIN, "--json").json()
    conforms(rows, LS)
    mine = [r for r in rows["instances"] if r["job"] == job]
    assert [(r["status"], r["step"], r["url"]) for r in mine] == [("serving", inst["step"], up["url"])]
    assert [f["host"] for f in rows["forwards"]] == [f"{LOGIN}/{NODE}"]
    # a second `up` of the same job and logdir reuses the step
    again = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--detach")
    assert again["reused"] and again["instance"]["step"] == inst["step"]
    assert again["url"] == up["url"]  # and its forward
    assert len(cli("ls", "--json").json()["forwards"]) == 1
    # `down --job` ends the step and its forward, not the job
    out = cli("down", "--job", job, "--host", LOGIN)
    assert f"step {inst['step']} of job {job}" in out.stdout
    assert wait_until(lambda: not _tb_steps(cluster, job), 15), cluster.steps(job)
    assert cluster.job_state(job) == "RUNNING"
    assert wait_until(lambda: not answers(up["url"] + "data/logdir", timeout=1), 15)


def test_a_squatter_on_the_compute_node_is_not_taken_for_tensorboard(cluster: Cluster, cli: Cli, tmp_path: Path,
                                                                     reaper: ProcessReaper, state_dir: Path) -> None:
    """Another user of the node reads the step's --port from /proc and binds it first (tests/support/squatter.py):
    what answers there is not the step's TensorBoard, so it is not forwarded; the next port is used."""
    job = _training_job(cluster, _job_dir(tmp_path))
    squatter = start_squatter(reaper, 6444, enter=cluster.node.enter)
    result = cli("up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--port", "6444", "--detach", "--json")
    adopt_forwarders(reaper, state_dir)
    up = result.json()
    assert f"port 6444 on {NODE} was taken by" in result.stderr and "nobody" in result.stderr, result.stderr
    assert up["instance"]["port"] == 6445, up
    status, body = http_get(up["url"] + "data/logdir")
    assert status == 200 and json.loads(body) == {"logdir": up["instance"]["logdir"]}, body
    assert squatter.poll() is None
    assert len(_tb_steps(cluster, job)) == 1, cluster.steps(job)  # the step that lost the port has ended


@BOTH
def test_ctrl_c_ends_the_step_and_leaves_the_job_running(cluster: Cluster, tmp_path: Path, reaper: ProcessReaper,
                                                         state_dir: Path, backend: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_SSH", backend)
    job = _training_job(cluster, _job_dir(tmp_path))
    fg = Foreground(reaper, state_dir, "up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD)
    reaper.adopt(fg.pid_from_stderr())
    assert answers(fg.url + "data/logdir")
    assert len(_tb_steps(cluster, job)) == 1
    assert fg.interrupt() == 0, fg.stderr
    assert "ended step" in fg.stderr and "keeps running" in fg.stderr
    assert wait_until(lambda: not _tb_steps(cluster, job), 15), cluster.steps(job)
    assert cluster.job_state(job) == "RUNNING"
    assert not answers(fg.url + "data/logdir", timeout=1)


def test_the_foreground_forward_ends_when_the_job_does(cluster: Cluster, tmp_path: Path, reaper: ProcessReaper,
                                                       state_dir: Path) -> None:
    job = _training_job(cluster, _job_dir(tmp_path))
    fg = Foreground(reaper, state_dir, "up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD)
    reaper.adopt(fg.pid_from_stderr())
    cluster.run("scancel", job)
    assert fg.proc.wait(timeout=30) == 0
    assert fg.wait_stderr(f"job {job} ended (CANCELLED), and TensorBoard's step with it"), fg.stderr
    assert fg.wait_stderr("forward closed")


def test_pending_job_is_refused_with_its_reason_and_unknown_is_exit_4(cluster: Cluster, cli: Cli,
                                                                      tmp_path: Path) -> None:
    work = _job_dir(tmp_path)
    _training_job(cluster, work)  # holds one of the node's two CPUs
    pending = cluster.sbatch("--cpus-per-task=2", "--wrap", "sleep 600", workdir=work)
    assert wait_until(lambda: "Resources" in cluster.run("squeue", "-h", "-j", pending, "-o", "%r").stdout, 15)
    err = cli("up", "--host", LOGIN, "--job", pending, "--tensorboard", TENSORBOARD, exit_code=4).stderr
    assert f"job {pending} is pending (reason: Resources)" in err and "hint: --wait" in err
    assert "Traceback" not in err
    err = cli("up", "--host", LOGIN, "--job", "987654", "--tensorboard", TENSORBOARD, exit_code=4).stderr
    assert "job 987654 is not known to Slurm" in err and "Invalid job id" in err
    running = cluster.run("squeue", "-h", "-t", "R", "-o", "%A").stdout.split()[0]
    err = cli("up", "--host", LOGIN, "--job", running, "--node", "node9", exit_code=2).stderr
    assert f"tbctl: node node9 is not one of job {running}'s nodes ({NODE})" in err
    err = cli("up", "--host", LOGIN, "--job", "12;x", exit_code=2).stderr
    assert err.startswith("tbctl: '12;x' is not a Slurm job id\nhint: ")


def test_wait_waits_for_a_pending_job_and_an_array_task_is_served_on_its_own(
        cluster: Cluster, cli: Cli, tmp_path: Path, reaper: ProcessReaper, state_dir: Path) -> None:
    work = _job_dir(tmp_path)
    blocker = _training_job(cluster, work, "--cpus-per-task=2")  # the whole node
    array = cluster.sbatch("--array=3-4", "--wrap", f"cp -r {EXAMPLE_RUNS} runs; sleep 600", workdir=work)
    proc = reaper.popen([sys.executable, "-m", "tbctl", "up", "--host", LOGIN, "--job", f"{array}_4", "--wait",
                         "--tensorboard", TENSORBOARD, "--detach", "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                        env=dict(os.environ, TBCTL_STATE_DIR=str(state_dir)))
    assert proc.stderr is not None
    said = ""
    while "waiting for job" not in said:  # progress lines, plain on a pipe
        line = proc.stderr.readline()
        assert line, said
        said += line
    assert f"waiting for job {array}_4 to start (pending: " in said  # Resources or Priority
    cluster.run("scancel", blocker)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    adopt_forwarders(reaper, state_dir)
    inst = json.loads(out)["instance"]
    assert inst["job"] == f"{array}_4"
    assert [s.split()[0] for s in _tb_steps(cluster, f"{array}_4")] == [f"{array}_4.{inst['step'].split('.')[1]}"]
    assert answers(json.loads(out)["url"] + "data/logdir")


def test_job_name_picks_the_newest_running_job_of_that_name(cluster: Cluster, cli: Cli, tmp_path: Path,
                                                            reaper: ProcessReaper, state_dir: Path) -> None:
    older = _training_job(cluster, _job_dir(tmp_path, "a"), "--job-name=train")
    newer = _training_job(cluster, _job_dir(tmp_path, "b"), "--job-name=train")
    up = cli.up("--host", LOGIN, "--job-name", "train", "--tensorboard", TENSORBOARD, "--detach")
    adopt_forwarders(reaper, state_dir)
    assert up["instance"]["job"] == newer != older
    assert up["instance"]["logdir"] == str(tmp_path / "b" / "runs")
    assert answers(up["url"] + "data/logdir")
    err = cli("up", "--host", LOGIN, "--job-name", "nosuchname", exit_code=4).stderr
    assert "no job of yours named 'nosuchname'" in err


@BOTH
def test_scancel_shows_the_instance_ended_cancelled_and_closes_the_forward(
        cluster: Cluster, cli: Cli, tmp_path: Path, reaper: ProcessReaper, state_dir: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_SSH", backend)
    job = _training_job(cluster, _job_dir(tmp_path))
    up = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--detach")
    adopt_forwarders(reaper, state_dir)
    assert answers(up["url"] + "data/logdir"), _forwarder_logs(state_dir)
    cluster.run("scancel", job)

    def mine() -> list[tuple[str, str | None]]:
        return [(r["status"], r["job_state"]) for r in cli("ls", "--host", LOGIN, "--json").json()["instances"]
                if r["job"] == job]

    assert wait_until(lambda: mine() == [("exited", "CANCELLED")], 20), mine()
    assert "exited (job %s CANCELLED)" % job in cli("ls", "--host", LOGIN).stdout
    assert wait_until(lambda: not cli("ls", "--json").json()["forwards"], 20), "the forwarder should close the forward"
    assert not answers(up["url"] + "data/logdir", timeout=1)
    out = cli("down", "--job", job, "--host", LOGIN).stdout  # only the record is left to remove
    assert f"removed stale record of step {inst_step(up)} of job {job}" in out and "CANCELLED" in out
    assert not [r for r in cli("ls", "--host", LOGIN, "--json").json()["instances"] if r["job"] == job]


def test_hostile_logdir_and_job_names_execute_nothing(cluster: Cluster, cli: Cli, tmp_path: Path,
                                                      reaper: ProcessReaper, state_dir: Path) -> None:
    marker = tmp_path / "marker"
    work = _job_dir(tmp_path)
    hostile = f"$(touch {marker});touch {marker}`touch {marker}` -x"
    write_example_logdir(work / hostile)
    name = f"n$(touch {marker})'\";touch {marker}"
    job = _training_job(cluster, work, f"--job-name={name}")
    up = cli.up("--host", LOGIN, "--job-name", name, hostile, "--tensorboard", TENSORBOARD, "--detach")
    adopt_forwarders(reaper, state_dir)
    assert up["instance"]["job"] == job and up["instance"]["logdir"] == str(work / hostile)
    status, body = http_get(up["url"] + "data/logdir")
    assert status == 200 and hostile.encode() in body
    cli("down", "--job", job, "--host", LOGIN)
    assert not marker.exists()


def test_a_node_that_refuses_ssh_is_said_plainly_and_the_fallback_only_when_asked(
        cluster: Cluster, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: ProcessReaper,
        state_dir: Path) -> None:
    config = tmp_path / "ssh_config"
    text = cluster.ssh_config.read_text()
    config.write_text(text.replace(f"Host {NODE}\n  Port 22", f"Host {NODE}\n  Port 2222"))  # nothing listens there
    config.chmod(0o600)
    monkeypatch.setenv("TBCTL_SSH_CONFIG", str(config))
    job = _training_job(cluster, _job_dir(tmp_path))
    err = cli("up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, exit_code=5).stderr
    assert f"tbctl: cannot reach compute node {NODE} through {LOGIN}" in err
    assert "--bind-node-address" in err.split("hint:", 1)[1]
    assert not _tb_steps(cluster, job)  # nothing started
    # asked for, the fallback: TensorBoard on the node's cluster address, forwarded from the login node
    fg = Foreground(reaper, state_dir, "up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD,
                    "--bind-node-address")
    reaper.adopt(fg.pid_from_stderr())
    assert fg.wait_stderr("warning: TensorBoard listens on")
    assert f"{NODE}'s cluster address {cluster.node.addr}: everyone on the cluster network can reach it" in fg.stderr
    status, body = http_get(fg.url + "data/logdir")
    assert status == 200 and str(tmp_path / "job" / "runs").encode() in body
    [step] = _tb_steps(cluster, job)
    listening = cluster.run("ss", "-Hltn", on=NODE).stdout
    assert f"{cluster.node.addr}:" in listening
    assert fg.interrupt() == 0, fg.stderr
    assert wait_until(lambda: not _tb_steps(cluster, job), 15), cluster.steps(job)
    assert cluster.job_state(job) == "RUNNING"


def test_chromium_renders_the_jobs_scalars_through_the_forward(cluster: Cluster, cli: Cli, tmp_path: Path,
                                                               reaper: ProcessReaper, state_dir: Path) -> None:
    from tests.support.chromium import assert_scalars_rendered, chromium_or_skip, render_scalars

    chromium_or_skip()  # skips, saying why, where Chromium is absent
    work = _job_dir(tmp_path)
    job = _training_job(cluster, work)
    up = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--detach")
    adopt_forwarders(reaper, state_dir)
    facts, png = render_scalars(reaper, up["url"], "browser-job-scalars")
    assert_scalars_rendered(facts, png)
    cli("down", "--job", job, "--host", LOGIN)


@BOTH
def test_up_job_private_serves_a_socket_on_the_node_through_the_login_node(
        cluster: Cluster, cli: Cli, tmp_path: Path, reaper: ProcessReaper, state_dir: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBCTL_SSH", backend)
    job = _training_job(cluster, _job_dir(tmp_path))
    up = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--private", "--detach")
    adopt_forwarders(reaper, state_dir)
    inst = up["instance"]
    assert (inst["exposure"], inst["port"], inst["node"]) == ("private", None, NODE) and inst["socket"], inst
    status, body = http_get(up["url"] + "data/runs")
    assert status == 200 and b"lr_0.1" in body
    # the step's TensorBoard listens on no TCP port of the node; its socket is there, in a 0700 directory
    listeners = cluster.run("ss", "-Hltnp", on=NODE).stdout
    assert f"pid={inst['pid']}," not in listeners, listeners
    assert cluster.run("stat", "-c", "%a", inst["socket"].rsplit("/", 1)[0], on=NODE).stdout.strip() == "700"
    rows = [r for r in cli("ls", "--host", LOGIN, "--json").json()["instances"] if r["job"] == job]
    assert [(r["exposure"], r["socket"], r["url"]) for r in rows] == [("private", inst["socket"], up["url"])]
    again = cli.up("--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD, "--private", "--detach")
    assert again["reused"] and again["url"] == up["url"]
    cli("down", "--job", job, "--host", LOGIN)
    assert wait_until(lambda: not _tb_steps(cluster, job), 15), cluster.steps(job)
    assert wait_until(lambda: not answers(up["url"] + "data/logdir", timeout=1), 15)


def test_up_job_logs_in_to_the_login_node_once(cluster: Cluster, tmp_path: Path, reaper: ProcessReaper,
                                               state_dir: Path) -> None:
    """The compute node is reached through tbctl's own connection to the login node, not by a second login
    there (a second 2FA code where the login node asks for one): its sshd logs one "Accepted"."""
    login_log = cluster.servers[0].log

    def logins() -> int:
        return login_log.read_text(errors="replace").count("Accepted publickey")

    job = _training_job(cluster, _job_dir(tmp_path))
    before = logins()
    fg = Foreground(reaper, state_dir, "up", "--host", LOGIN, "--job", job, "--tensorboard", TENSORBOARD)
    reaper.adopt(fg.pid_from_stderr())
    assert answers(fg.url + "data/logdir")
    assert fg.interrupt() == 0, fg.stderr
    assert logins() == before + 1, login_log.read_text(errors="replace").splitlines()[-6:]
