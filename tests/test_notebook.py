"""`%load_ext tbctl` and `%tbctl` in a real IPython kernel (nbclient runs the cells), and behind a real Jupyter
server with jupyter-server-proxy, loaded in headless Chromium. The kernels inherit the test's own HOME and
TBCTL_STATE_DIR; every kernel, server and TensorBoard started here is reaped by pid."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import tbctl
from tbctl.cli.environment import Environment
from tests.conftest import tensorboard_pids_for
from tests.support.chromium import assert_scalars_rendered, chromium_or_skip, render_scalars
from tests.support.notebook import browser_beside_the_kernel, frame_url, notebook, result_of, stream
from tests.support.procs import ProcessReaper, alive, free_port, http_get, wait_until



@pytest.fixture(autouse=True)
def _browser_beside_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    browser_beside_the_kernel(monkeypatch)


def _answers(url: str, logdir: Path) -> bool:
    status, body = http_get(url + "data/logdir")
    return status == 200 and json.loads(body)["logdir"] == str(logdir)


def _others_running(pids: set[int]) -> list[int]:
    """This user's live TensorBoards besides `pids` (another test's, or the developer's own)."""
    me = psutil.Process().username()
    return [i.pid for i in tbctl.ls().instances if i.status in ("serving", "starting") and i.user == me
            and i.pid not in pids and i.pid is not None]


def test_magic_shows_a_frame_that_answers_and_never_reuses_a_killed_tensorboard(
        reaper: ProcessReaper, logdir: Path, port: int, tmp_path: Path) -> None:
    with notebook(reaper, tmp_path) as nb:
        assert nb.run("%load_ext tbctl") == []
        cell = f"board = %tbctl up {logdir} --port {port}\nboard.pid"
        first = nb.run(cell)
        pid = int(result_of(first))
        reaper.adopt(pid)
        url = frame_url(first)
        assert url == f"http://127.0.0.1:{port}/" and _answers(url, logdir)
        os.kill(pid, 9)  # TensorBoard's info file stays behind, as after a crash
        assert wait_until(lambda: not alive(pid), 10)
        again = nb.run(cell)
        new_pid = int(result_of(again))
        reaper.adopt(new_pid)
        assert new_pid != pid and "reused" not in frame_url(again)
        assert _answers(frame_url(again), logdir)
        listing = stream(nb.run("%tbctl ls"), "stdout")
        assert str(new_pid) in listing and "serving" in listing
        # --all stops every TensorBoard of this user: only where nothing else of ours runs (as in CI)
        target = "--all" if not _others_running({new_pid}) else str(port)
        ended = stream(nb.run(f"%tbctl down {target}"), "stdout")
        assert f"stopped pid {new_pid}" in ended
        assert not tensorboard_pids_for(logdir) and not alive(new_pid)
        errors = nb.run("%tbctl up --port 70000")
        assert stream(errors, "stderr").startswith("tbctl: ") and "Traceback" not in json.dumps(errors)


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """One real Jupyter server (with jupyter-server-proxy, enabled by its install) for this module: its
    port and its token. Its HOME and Jupyter dirs are its own."""
    root = tmp_path_factory.mktemp("jupyter")
    home = root / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_DATA_DIR=str(root / "data"), JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    port, token = free_port(), secrets.token_hex(16)
    with ProcessReaper() as reaper:
        server = reaper.popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                               "--allow-root"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(root / "server.log", "wb"))  # noqa: SIM115 (the reaper outlives it)
        def answering() -> bool:
            try:
                return http_get(f"http://127.0.0.1:{port}/api/status?token={token}")[0] == 200
            except OSError:  # not listening yet
                return False

        up = wait_until(lambda: server.poll() is not None or answering(), 60, 0.2)
        assert up and server.poll() is None, (root / "server.log").read_text()[-3000:]
        yield port, token


def test_behind_jupyter_server_proxy_the_frame_goes_through_the_server(
        jupyter_server: tuple[int, str], reaper: ProcessReaper, logdir: Path, port: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server_port, token = jupyter_server
    monkeypatch.setenv("TENSORBOARD_PROXY_URL", "/proxy/%PORT%/")  # the kernel's environment
    with notebook(reaper, tmp_path) as nb:
        nb.run("%load_ext tbctl")
        shown = nb.run(f"board = %tbctl up {logdir} --port {port}\nboard.pid")
        reaper.adopt(int(result_of(shown)))
        src = frame_url(shown)
        assert src == f"/proxy/{port}/"  # relative to the Jupyter server the page came from
        through = f"http://127.0.0.1:{server_port}{src}"
        status, body = http_get(f"{through}data/logdir?token={token}")
        assert status == 200 and json.loads(body)["logdir"] == str(logdir)
        assert str(logdir).encode() not in http_get(f"{through}data/logdir")[1]  # the server's token guards it
        if chromium_or_skip():
            facts, png = render_scalars(reaper, f"{through}?token={token}", "notebook-proxy-scalars")
            assert_scalars_rendered(facts, png)
        nb.run(f"%tbctl down {port}")
        assert not tensorboard_pids_for(logdir)


# --- which URL the frame shows, in-process -------------------------------------------------------------------


def _magic(line: str, environ: dict[str, str]) -> tuple[Any, str]:
    from tbctl.notebook import run

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()):  # IPython's display() outside a kernel prints a repr
        result = run(line, Environment(stdout=io.StringIO(), stderr=err), environ=environ)
    return result, err.getvalue()


def test_a_kernel_in_an_ssh_session_prints_the_tunnel_line_for_the_laptop(reaper: ProcessReaper, logdir: Path,
                                                                          port: int) -> None:
    remote_kernel = {"SSH_CONNECTION": "192.0.2.7 51000 192.0.2.1 22"}
    board, said = _magic(f"up {logdir} --port {port}", remote_kernel)
    reaper.adopt(board.pid)
    with board:
        assert f"tbctl tunnel {socket.gethostname()} {port} --local-port {port}\n" in said
        _, said = _magic(f"up {logdir} --port {port} --notebook-url direct", remote_kernel)  # the option forces it
        assert "tbctl tunnel" not in said


@pytest.mark.parametrize(("environ", "setting", "expected"), [
    ({}, "auto", "direct"),
    ({"SSH_CONNECTION": "x"}, "auto", "tunnel"),
    ({"SSH_CONNECTION": "x", "TENSORBOARD_PROXY_URL": "/proxy/%PORT%/"}, "auto", "proxy"),
    ({"JUPYTERHUB_SERVICE_PREFIX": "/user/me/"}, "auto", "proxy"),
    ({"JUPYTERHUB_SERVICE_PREFIX": "/user/me/"}, "direct", "direct"),
    ({}, "tunnel", "tunnel"),
])
def test_url_mode_follows_the_environment_unless_forced(environ: dict[str, str], setting: str, expected: str) -> None:
    from tbctl.notebook import url_mode

    assert url_mode(setting, environ) == expected


@pytest.mark.parametrize(("environ", "prefix", "expected"), [
    ({"TENSORBOARD_PROXY_URL": "/proxy/%PORT%/"}, "", "/proxy/6010/"),
    ({"TENSORBOARD_PROXY_URL": "https://hub.example/user/me/proxy/%PORT%"}, "/tb", "https://hub.example/user/me/proxy/6010/tb/"),
    ({"JUPYTERHUB_SERVICE_PREFIX": "/user/me/"}, "", "/user/me/proxy/6010/"),
])
def test_proxied_url(environ: dict[str, str], prefix: str, expected: str) -> None:
    from tbctl.notebook import proxied_url

    assert proxied_url(6010, prefix, environ) == expected


def test_the_notebook_url_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch, reaper: ProcessReaper) -> None:
    from tbctl.errors import UsageError

    monkeypatch.setenv("TBCTL_NOTEBOOK_URL", "sideways")
    with pytest.raises(UsageError, match="TBCTL_NOTEBOOK_URL='sideways'"):
        _magic("up --port 1", {})


def test_the_magic_prints_errors_as_the_command_does_and_its_help(logdir: Path, port: int,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tbctl.notebook import tbctl_magic

    assert tbctl_magic(f"up {logdir} --port {port} -- --no_such_flag=1") is None
    out, err = capsys.readouterr()
    assert "\ntbctl: TensorBoard" in err and "last lines of " in err and "no_such_flag" in err, err
    assert "Traceback" not in out + err
    assert tbctl_magic("up --help") is None
    out, err = capsys.readouterr()
    assert out.startswith("Usage: %tbctl up [OPTIONS] [LOGDIR]") and "--notebook-url" in out and "--host" in out, out
    assert tbctl_magic("up --json") is None
    assert capsys.readouterr().err.startswith("tbctl: --open/--no-open and --json do not apply in a notebook")
    assert tbctl_magic("sideways") is None
    assert capsys.readouterr().err.startswith("tbctl: use %tbctl up [LOGDIR] [OPTIONS], %tbctl ls or %tbctl down")
    assert tbctl_magic("down --bogus") is None
    assert "No such option: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("ssh_backend", ["openssh"], indirect=True)
def test_the_magic_takes_tbctls_global_ssh_before_or_among_the_verbs_options(
        ssh_env: Any, ssh_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`%tbctl --ssh paramiko ls --host H` as `tbctl --ssh paramiko ls --host H`. The setting says openssh and
    there is no ssh client on PATH, so only the paramiko backend, asked for in the line, reaches the host."""
    from tbctl.errors import UsageError
    from tbctl.notebook import run

    monkeypatch.setenv("PATH", str(tmp_path))

    def magic(line: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        run(line, Environment(stdout=out, stderr=err), environ={})
        return out.getvalue() + err.getvalue()

    assert "error: no OpenSSH client (`ssh`) on PATH" in magic(f"ls --host {ssh_env.alias}")
    for line in (f"--ssh paramiko ls --host {ssh_env.alias}", f"ls --host {ssh_env.alias} --ssh=paramiko"):
        said = magic(line)
        assert said and "error" not in said and "warning" not in said and "OpenSSH" not in said, said  # reached
    with pytest.raises(UsageError, match="unknown SSH backend 'nope'"):
        magic(f"--ssh=nope down --all --host {ssh_env.alias}")
