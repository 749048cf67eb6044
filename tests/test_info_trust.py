"""TensorBoard's info files live in a directory every user may write to (/tmp/.tensorboard-info, 0777): tbctl
believes one only when it is owned by the user of the process it names and that process listens on the port
it names; every browser URL is built from a loopback address tbctl chose. And another user's TensorBoard,
whose sockets a normal user cannot see, is never `starting` for as long as it runs.

The hostile neighbour and the other user are real users (`nobody`, through setpriv), so these need root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support.browser_process import fake_browser, tbctl_process
from tests.support.fake_host import RUNS, FakeHost, info_content
from tests.support.procs import FAKE_TENSORBOARD, ProcessReaper, answers, free_port, wait_until
from tbctl.tensorboard import classify

NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # nobody may run it (a per-user interpreter may not be theirs to run)

# --- fast: what classify believes -----------------------------------------------------------------------------


def _classify(host: FakeHost) -> list:
    return classify(host.scan(), host=host.name)


def test_an_info_file_owned_by_someone_else_does_not_speak_for_the_process() -> None:
    host = FakeHost()
    tb = host.add_tensorboard(RUNS, port=6006)
    host.add_info_file(info_content(tb.pid, port=7450, logdir=RUNS, start_time=tb.create_time + 1), owner="mallory")
    [inst] = _classify(host)
    assert (inst.port, inst.status, inst.url) == (6006, "serving", "http://127.0.0.1:6006/")


def test_an_info_file_naming_a_port_its_process_does_not_listen_on_is_not_believed() -> None:
    host = FakeHost()
    tb = host.add_tensorboard(RUNS, port=6006, info_file=False)
    host.add_info_file(info_content(tb.pid, port=7450, logdir=RUNS, start_time=tb.create_time + 1))
    [inst] = _classify(host)
    assert (inst.port, inst.info_file) == (6006, None)


def test_the_url_is_loopback_whatever_the_command_line_says() -> None:
    host = FakeHost()
    host.others_sockets = "by_user"  # the bind then comes from the command line, not from a socket
    host.add_process(["tensorboard", "--logdir", RUNS, "--port", "7450", "--host", "evil.example/phish?"],
                     listen=[7450], user="mallory")
    v6 = host.add_process(["tensorboard", "--logdir", RUNS, "--port", "7451", "--host", "::1"], listen=[("::1", 7451)],
                          user="mallory")
    urls = {i.pid: i.url for i in _classify(host)}
    assert urls[v6.pid] == "http://[::1]:7451/"
    assert sorted(urls.values()) == ["http://127.0.0.1:7450/", "http://[::1]:7451/"]


def test_a_planted_file_with_no_process_is_no_row_but_our_own_stale_one_is() -> None:
    host = FakeHost(user="me")
    host.add_info_file(info_content(424242, port=7450, logdir=RUNS, start_time=1.0), owner="mallory")
    assert _classify(host) == []
    host.add_info_file(info_content(424243, port=7451, logdir=RUNS, start_time=1.0), owner="me")
    [inst] = _classify(host)
    assert (inst.pid, inst.status) == (424243, "stale")


def test_another_users_tensorboard_is_serving_from_the_socket_table_or_unknown_never_starting() -> None:
    host = FakeHost(user="me")
    theirs = host.add_tensorboard(RUNS, port=6006, user="alice")
    host.others_sockets = "by_user"  # Linux, a normal user: which ports alice listens on, not which process
    [inst] = _classify(host)
    assert (inst.pid, inst.status, inst.port, inst.info_file) == (theirs.pid, "serving", 6006, inst.info_file)
    assert inst.info_file is not None
    host.others_sockets = "hidden"  # macOS, a normal user: nothing
    [inst] = _classify(host)
    assert inst.status == "unknown" and "another user's" in inst.note


# --- real users and processes ----------------------------------------------------------------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A TMPDIR every user may use, as /tmp is: TensorBoard's info directory goes under it (not the real
    /tmp/.tensorboard-info, which other test runs use)."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root (to act as another user), setpriv and /usr/bin/python3")
    path = Path(tempfile.mkdtemp(prefix="tbctl-shared-tmp-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=30,
                          env=env, cwd="/")


# A web server, as nobody, that answers everything with 200 "attacker".
ATTACKER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"attacker")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

REPLACE_INFO = r"""
import json, os, sys
path, port = sys.argv[1], int(sys.argv[2])
content = json.load(open(path))
content["port"] = port
os.unlink(path)  # the directory is 0777 without the sticky bit: anyone may replace anyone's file
with open(path, "w") as f:
    json.dump(content, f)
"""


def test_a_replaced_info_file_does_not_make_open_go_to_another_listener(
    cli: Cli, reaper: ProcessReaper, logdir: Path, port: int, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    up = cli.up(str(logdir), "--port", str(port), "--", "--load_fast", "false")
    pid = up["instance"]["pid"]
    info_dir = shared_tmp / ".tensorboard-info"
    info_dir.chmod(0o777)  # what TensorBoard makes it (its umask here may differ)
    info = info_dir / f"pid-{pid}.info"
    assert wait_until(info.exists, 10)
    bad_port = free_port()
    attacker = reaper.popen([*NOBODY, SYSTEM_PYTHON, "-c", ATTACKER, str(bad_port)], cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_until(lambda: answers(f"http://127.0.0.1:{bad_port}/"), 10), "the attacker's server listens"
    done = _as_nobody(REPLACE_INFO, str(info), str(bad_port))
    assert done.returncode == 0, done.stderr
    assert json.loads(info.read_text())["port"] == bad_port and info.stat().st_uid != 0
    browser, got = fake_browser(tmp_path)
    opened = tbctl_process("open", str(logdir), env=dict(os.environ, BROWSER=browser))
    assert opened.returncode == 0, opened.stderr
    assert got.read_text() == f"http://127.0.0.1:{port}/\n"
    listed = json.loads(cli("ls", "--json").stdout)["instances"]
    assert [i["port"] for i in listed if i["pid"] == pid] == [port]
    assert not [i for i in listed if i["port"] == bad_port]





def test_a_fake_tensorboard_with_a_hostile_host_flag_gets_a_loopback_url(
    reaper: ProcessReaper, tmp_path: Path, port: int, shared_tmp: Path
) -> None:
    """Another user's (here root's) fake TensorBoard, seen by a normal user, who cannot see its socket."""
    script = tmp_path / "bin" / "tensorboard"
    script.parent.mkdir()
    script.write_text(FAKE_TENSORBOARD)
    reaper.popen([sys.executable, str(script), "--logdir", str(tmp_path), "--port", str(port),
                  "--host", "evil.example/phish?"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), 10)
    browser, got = fake_browser(shared_tmp)
    opened = _tbctl_as_nobody(shared_tmp, "open", str(port), BROWSER=browser)
    assert opened.returncode == 0, opened.stderr
    assert got.read_text() == f"http://127.0.0.1:{port}/\n"
    assert "evil" not in opened.stdout


PLANT = r"""
import json, os, sys
d = os.path.join(sys.argv[1], ".tensorboard-info")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "pid-999999999.info"), "w") as f:
    json.dump({"pid": 999999999, "port": 7450, "logdir": "/planted", "start_time": 1, "path_prefix": "",
               "version": "2.21.0", "db": "", "cache_key": ""}, f)
"""


def test_a_planted_orphan_info_file_is_no_row(cli: Cli, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    done = _as_nobody(PLANT, str(shared_tmp))
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli("ls", "--json").stdout)["instances"]
    assert not [i for i in listed if i["logdir"] == "/planted" or i["pid"] == 999999999], listed


def _tbctl_as_nobody(shared_tmp: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """tbctl run by a normal user (nobody), with a state dir and HOME of its own."""
    env = dict(os.environ, TMPDIR=str(shared_tmp), TBCTL_STATE_DIR=str(shared_tmp / "nobody-state"),
               HOME=str(shared_tmp), TBCTL_CONFIG=str(shared_tmp / "none.toml"), **extra_env)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        env.pop(var, None)
    done = subprocess.run([*NOBODY, sys.executable, "-m", "tbctl", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(Path(__file__).parent.parent))
    if "Permission denied" in done.stderr and "python" in done.stderr.lower():
        pytest.skip(f"nobody cannot run this interpreter: {done.stderr.strip()}")
    return done


def _ls_as_nobody(shared_tmp: Path, **extra_env: str) -> list[dict]:
    done = _tbctl_as_nobody(shared_tmp, "ls", "--json", **extra_env)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["instances"])


def test_another_users_tensorboard_is_not_starting_for_a_normal_user(
    cli: Cli, logdir: Path, port: int, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    up = cli.up(str(logdir), "--port", str(port))
    pid = up["instance"]["pid"]
    [seen] = [i for i in _ls_as_nobody(shared_tmp) if i["pid"] == pid]
    assert (seen["status"], seen["port"], seen["user"]) == ("serving", port, "root"), seen
    assert seen["info_file"] is not None  # believed: root's file, and root listens on that port
    # psutil, as on macOS, where a normal user learns nothing of another user's sockets
    [seen] = [i for i in _ls_as_nobody(shared_tmp, TBCTL_PROBE_PSUTIL="1") if i["pid"] == pid]
    assert seen["status"] == "unknown" and "another user's" in seen["note"], seen
