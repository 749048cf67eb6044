"""Tunnels that hold up: faults against the real sshd in its network namespace, kill -9s, load, and
background forwards that outlive the shell that started them."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Cli
from tests.support.foreground import Foreground
from tests.support.forwarders import adopt_forwarder
from tests.support.procs import TENSORBOARD, ProcessReaper, alive, answers, http_get, listeners_on, wait_until
from tests.support.sshd import link_down, link_up, restart_sshd

RECOVERY_SECONDS = 10.0


class Poller:
    """A browser-like client: GET the URL every 0.2 s on a new connection, remembering what happened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = http_get(self.url + "data/logdir", timeout=3)[0] == 200
            except OSError:
                ok = False
            self.results.append((time.monotonic(), ok))
            self._stop.wait(0.2)

    def ok_after(self, moment: float, timeout: float) -> float | None:
        """Seconds from `moment` to the first success after it, if one comes within `timeout`."""
        deadline = moment + timeout
        while time.monotonic() < deadline + 1:
            for at, ok in list(self.results):
                if at > moment and ok:
                    return at - moment
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def detached(ssh_env: Any, cli: Cli, reaper: ProcessReaper, state_dir: Path, logdir: Path) -> Iterator[dict[str, Any]]:
    """`tbctl up --host tbremote --detach`: a TensorBoard there and a background forwarder here."""
    data = cli.up("--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD, "--detach", "--port", "6800")
    forwarder = adopt_forwarder(reaper, state_dir, ssh_env.alias)
    yield {"url": data["url"], "pid": data["instance"]["pid"], "forwarder": forwarder, "remote": ssh_env}
    cli("down", "--host", ssh_env.alias)  # ends the forward, stops the TensorBoard, the forwarder exits


def test_detach_returns_and_ls_shows_both_healths(detached: dict[str, Any], cli: Cli) -> None:
    assert http_get(detached["url"] + "data/logdir")[0] == 200
    def healths() -> list[tuple[str, str, int]]:
        return [(f["tunnel"], f["tensorboard"], f["instance_pid"]) for f in cli("ls", "--json").json()["forwards"]]

    assert wait_until(lambda: healths() == [("up", "serving", detached["pid"])], 5), healths()
    assert alive(detached["forwarder"])
    port = int(detached["url"].rsplit(":", 1)[1].strip("/"))
    listens = listeners_on(port)
    assert listens == ["127.0.0.1"]  # held by the forwarder (paramiko) or by the ssh master (OpenSSH)
    rows = cli("ls", "--host", detached["remote"].alias, "--json").json()["instances"]
    assert [r["url"] for r in rows if r["pid"] == detached["pid"]] == [detached["url"]]


@pytest.mark.parametrize("mode", ["detached", "foreground"])
def test_sshd_restart_while_a_client_polls(mode: str, ssh_env: Any, cli: Cli, reaper: ProcessReaper,
                                           state_dir: Path, logdir: Path, request: pytest.FixtureRequest) -> None:
    if mode == "detached":
        url = request.getfixturevalue("detached")["url"]
        fg = None
    else:
        fg = Foreground(reaper, state_dir, "up", "--host", ssh_env.alias, str(logdir), "--tensorboard", TENSORBOARD,
                        "--port", "6801")
        reaper.adopt(fg.pid_from_stderr())
        url = fg.url
    poller = Poller(url)
    try:
        assert wait_until(lambda: any(ok for _, ok in poller.results), 10)
        fault = time.monotonic()
        restart_sshd(ssh_env.server)  # drops every connection, as a server restart does
        took = poller.ok_after(fault, RECOVERY_SECONDS)
        assert took is not None, f"no success within {RECOVERY_SECONDS} s after the restart" + (fg.stderr if fg else "")
        assert url == poller.url  # the same local port throughout
    finally:
        poller.stop()
    if fg is not None:
        assert fg.wait_stderr("reconnecting") and fg.wait_stderr(": up")
        assert fg.interrupt() == 0


def test_link_down_for_five_seconds(detached: dict[str, Any]) -> None:
    remote = detached["remote"]
    if remote.netns is None:
        pytest.skip("needs the remote in a network namespace")
    poller = Poller(detached["url"])
    try:
        assert wait_until(lambda: any(ok for _, ok in poller.results), 10)
        link_down(remote.netns)
        try:
            time.sleep(5)
        finally:
            link_up(remote.netns)
        back = time.monotonic()
        took = poller.ok_after(back, RECOVERY_SECONDS)
        assert took is not None, f"no success within {RECOVERY_SECONDS} s after the link came back"
    finally:
        poller.stop()


def test_a_connection_that_can_never_come_back_is_replaced(detached: dict[str, Any], cli: Cli) -> None:
    """While the link is down, sshd's end of the connection is killed: no FIN or RST can reach this machine,
    so nothing but a new connection gets through once the link is back (TCP retransmits alone, which carry
    a mere outage, are answered with a reset). The forward must reconnect, on the same local port."""
    remote = detached["remote"]
    if remote.netns is None:
        pytest.skip("needs the remote in a network namespace")
    logins = remote.server.log.read_text(errors="replace").count("Accepted publickey")
    poller = Poller(detached["url"])
    try:
        assert wait_until(lambda: any(ok for _, ok in poller.results), 10)
        link_down(remote.netns)
        try:
            sessions = [p for p in psutil.Process(remote.server.pid).children(recursive=True) if p.name() == "sshd"]
            for p in sessions:
                p.kill()  # sshd's end of every connection: gone, and nobody can tell this machine
            psutil.wait_procs(sessions, timeout=5)
        finally:
            link_up(remote.netns)
        back = time.monotonic()
        took = poller.ok_after(back, RECOVERY_SECONDS + 15)  # the dead link is noticed by keepalive or a reset
        assert took is not None, "no success after the link came back: the forward did not reconnect"
    finally:
        poller.stop()
    assert remote.server.log.read_text(errors="replace").count("Accepted publickey") > logins, "no new connection"
    forwards = cli("ls", "--json").json()["forwards"]
    assert [(f["tunnel"], f["url"]) for f in forwards] == [("up", detached["url"])]


def test_kill_9_of_the_remote_tensorboard_closes_its_forward(detached: dict[str, Any], cli: Cli) -> None:
    os.kill(detached["pid"], signal.SIGKILL)
    assert wait_until(lambda: not cli("ls", "--json").json()["forwards"], 15), "the forward should close"
    rows = cli("ls", "--host", detached["remote"].alias, "--json").json()["instances"]
    assert [r["status"] for r in rows if r["pid"] == detached["pid"]] == ["stale"]  # dead, never "serving"
    assert wait_until(lambda: not alive(detached["forwarder"]), 10)


def test_kill_9_of_the_background_forwarder_is_stale_then_cleaned(
    detached: dict[str, Any], cli: Cli, state_dir: Path
) -> None:
    os.kill(detached["forwarder"], signal.SIGKILL)
    assert wait_until(lambda: [f["tunnel"] for f in cli("ls", "--json").json()["forwards"]] == ["stale"], 5)
    assert "stale" in cli("ls").stdout
    cli("down", "--host", detached["remote"].alias)  # --all would also stop this user's local TensorBoards
    assert cli("ls", "--json").json()["forwards"] == []
    assert not (state_dir / "forwarders" / f"{detached['remote'].alias}.json").exists()
    assert wait_until(lambda: not psutil.pid_exists(detached["pid"]), 10), "tbctl started it: it stops too"


def test_detach_survives_the_launching_shell(ssh_env: Any, reaper: ProcessReaper, state_dir: Path, logdir: Path,
                                             cli: Cli) -> None:
    """A shell in its own session runs `tbctl up --detach` and exits; then its session gets SIGHUP."""
    env = dict(os.environ, TBCTL_STATE_DIR=str(state_dir))
    script = (f"{sys.executable} -m tbctl up --host {ssh_env.alias} {logdir} --tensorboard {TENSORBOARD} "
              f"--port 6810 --detach > {state_dir.parent}/url.txt")
    shell = reaper.popen(["bash", "-c", script], env=env, start_new_session=True)
    assert shell.wait(timeout=60) == 0
    try:
        os.killpg(shell.pid, signal.SIGHUP)  # the terminal closing
    except ProcessLookupError:
        pass
    url = (state_dir.parent / "url.txt").read_text().strip()
    adopt_forwarder(reaper, state_dir, ssh_env.alias)
    assert wait_until(lambda: answers(url + "data/logdir"), 10), "the forward should outlive the shell"
    cli("down", "--host", ssh_env.alias)


def test_load_32_clients_by_1000_requests_through_one_forward(detached: dict[str, Any]) -> None:
    proc = psutil.Process(detached["forwarder"])
    port = int(detached["url"].rsplit(":", 1)[1].strip("/"))
    http_get(detached["url"] + "data/logdir")
    time.sleep(0.5)
    idle_fds, idle_threads = proc.num_fds(), proc.num_threads()
    errors: list[str] = []
    count = [0]
    lock = threading.Lock()

    def client() -> None:
        for _ in range(1000):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/data/logdir")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or b"logdir" not in body:
                    errors.append(f"HTTP {resp.status}")
            except OSError as exc:
                errors.append(repr(exc))
            finally:
                conn.close()
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=client) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert count[0] == 32_000
    assert errors == [], f"{len(errors)} errors, e.g. {errors[:3]}"
    assert wait_until(lambda: proc.num_fds() <= idle_fds and proc.num_threads() <= idle_threads, 15), (
        f"fds {proc.num_fds()} (idle {idle_fds}), threads {proc.num_threads()} (idle {idle_threads})")
