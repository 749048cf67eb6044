"""What the commands decide, run in-process against FakeHosts and a fake browser through the injected
Environment (tests/support/cli_env.py): which TensorBoards `ls`, `down` and `open` pick, what `free-port`
asks and refuses, what `config` reports and when the browser is handed a URL, with their exit codes and
output. Milliseconds each; the same commands against real processes, sshd and $BROWSER are in
tests/test_ls.py, test_down.py, test_free_port.py, test_logs_open.py and test_config.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbctl.errors import Unreachable
from tests.support.cli_env import FakeBrowser, InProcess
from tests.support.fake_host import OTHER_RUNS, RUNS, FakeHost, FakeHosts, gpu_server, started, this_machine


@pytest.fixture
def local() -> FakeHost:
    return this_machine()


@pytest.fixture
def gpu1() -> FakeHost:
    return gpu_server()


@pytest.fixture
def tbctl(local: FakeHost, gpu1: FakeHost, tmp_path: Path) -> InProcess:
    return InProcess(FakeHosts(local, gpu1), tmp_path)


# --- ls ----------------------------------------------------------------------------------------------------


def test_ls_with_nothing_running_is_not_an_error(tbctl: InProcess) -> None:
    assert tbctl("ls", "--json").json() == {"instances": [], "forwards": [], "errors": [], "pulls": []}
    assert tbctl.hosts.opened == [None]


def test_ls_tells_what_tbctl_started_from_what_someone_else_did(tbctl: InProcess, local: FakeHost) -> None:
    ours = started(local, tbctl.store)
    by_hand = local.add_tensorboard(OTHER_RUNS, port=6100)
    rows = {r["pid"]: r for r in tbctl("ls", "--json").json()["instances"]}
    assert (rows[ours.pid]["started_by"], rows[by_hand.pid]["started_by"]) == ("tbctl", "other")
    assert {r["status"] for r in rows.values()} == {"serving"}
    table = tbctl("ls").stdout
    assert str(ours.pid) in table and str(by_hand.pid) in table


def test_ls_shows_a_stale_info_file_once_its_tensorboard_was_killed(tbctl: InProcess, local: FakeHost) -> None:
    tb = local.add_tensorboard(RUNS, port=6006)
    local.exit(tb.pid, cleanly=False)
    (row,) = tbctl("ls", "--json").json()["instances"]
    assert (row["pid"], row["status"]) == (tb.pid, "stale")


def test_ls_of_an_unreachable_host_fails_with_its_exit_code_and_keeps_the_error_row(tbctl: InProcess) -> None:
    tbctl.hosts.unreachable["gpu9"] = Unreachable("ssh: connect to host gpu9 port 22: Connection refused")
    run = tbctl("ls", "--host", "gpu9", "--json", exit_code=5)
    assert run.json()["errors"] == [{"host": "gpu9", "error": "ssh: connect to host gpu9 port 22: Connection refused",
                                     "exit_code": 5}]
    assert "Connection refused" in run.stderr


def test_ls_all_hosts_lists_every_known_host_and_a_dead_one_is_a_row(tbctl: InProcess, local: FakeHost,
                                                                      gpu1: FakeHost) -> None:
    started(gpu1, tbctl.store)
    tbctl.config_file.write_text("[hosts.gpu9]\nport = 6010\n")
    tbctl.hosts.unreachable["gpu9"] = Unreachable("no route to gpu9")
    data = tbctl("ls", "--all-hosts", "--json").json()  # several hosts: a dead one does not fail the command
    assert [(i["host"], i["port"]) for i in data["instances"]] == [("gpu1", 6006)]
    assert [e["host"] for e in data["errors"]] == ["gpu9"]
    assert sorted(tbctl.hosts.opened, key=str) == sorted([None, "gpu9", "gpu1"], key=str)


# --- down --------------------------------------------------------------------------------------------------


def test_down_needs_a_target(tbctl: InProcess) -> None:
    assert "--all" in tbctl("down", exit_code=2).stderr


def test_down_of_nothing_is_not_found_and_changes_nothing(tbctl: InProcess, local: FakeHost) -> None:
    tb = started(local, tbctl.store)
    assert "no TensorBoard matching" in tbctl("down", "65000", exit_code=4).stderr
    tbctl("down", "/data/nowhere", exit_code=4)
    assert local.signals == [] and local.alive(tb.pid or 0, None)


def test_down_touches_only_tensorboards(tbctl: InProcess, local: FakeHost) -> None:
    server = local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006])
    tbctl("down", "6006", exit_code=4)
    tbctl("down", str(server.pid), exit_code=4)
    assert local.signals == []


@pytest.mark.parametrize("by", ["port", "pid", "logdir"])
def test_down_by_port_pid_or_logdir(tbctl: InProcess, local: FakeHost, by: str) -> None:
    tb = started(local, tbctl.store)
    target = {"port": "6006", "pid": str(tb.pid), "logdir": RUNS}[by]
    data = tbctl("down", target, "--json").json()
    assert [(o["instance"]["pid"], o["outcome"]) for o in data["instances"]] == [(tb.pid, "stopped")]
    assert local.signals == [(tb.pid, "SIGTERM")] and tbctl.store.load() == []


def test_down_of_another_users_tensorboard_is_refused_with_exit_1(tbctl: InProcess, local: FakeHost) -> None:
    theirs = local.add_tensorboard(RUNS, port=6006, user="someone")
    run = tbctl("down", "6006", exit_code=1)
    assert "could not be stopped" in run.stderr and local.signals == []
    assert local.alive(theirs.pid, None)


def test_down_force_kills_and_removes_the_info_file(tbctl: InProcess, local: FakeHost) -> None:
    tb = started(local, tbctl.store)
    tbctl("down", "6006", "--force")
    assert local.signals == [(tb.pid, "SIGKILL")] and local.info_files == {}


# --- open --------------------------------------------------------------------------------------------------


def test_open_hands_the_url_to_the_browser_and_prints_it(tbctl: InProcess, local: FakeHost) -> None:
    started(local, tbctl.store)
    run = tbctl("open", "6006")
    url = "http://127.0.0.1:6006/"
    assert run.stdout == f"{url}\n" and tbctl.browser.opened == [url]
    assert f"opened {url} in the browser" in run.stderr
    data = tbctl("open", RUNS, "--json").json()
    assert (data["url"], data["opened"], data["port"], data["host"]) == (url, True, 6006, "localhost")


def test_open_without_a_browser_prints_the_url_and_says_so(local: FakeHost, gpu1: FakeHost, tmp_path: Path) -> None:
    tbctl = InProcess(FakeHosts(local, gpu1), tmp_path, browser=FakeBrowser(present=False))
    tb = started(local, tbctl.store)
    run = tbctl("open")  # the only one running
    assert run.stdout == "http://127.0.0.1:6006/\n" and "no browser available" in run.stderr
    assert tbctl("open", "6006", "--json").json() == {"url": "http://127.0.0.1:6006/", "opened": False,
                                                      "host": "localhost", "pid": tb.pid, "port": 6006, "logdir": RUNS}


def test_open_needs_a_target_when_several_run(tbctl: InProcess, local: FakeHost) -> None:
    started(local, tbctl.store)
    started(local, tbctl.store, OTHER_RUNS, 6100)
    err = tbctl("open", exit_code=2).stderr
    assert "TensorBoards are running on localhost" in err and "6006" in err and "6100" in err
    assert "no TensorBoard matching '1'" in tbctl("open", "1", exit_code=4).stderr
    assert tbctl.browser.opened == []


def test_open_of_a_remote_tensorboard_needs_a_forward(tbctl: InProcess, gpu1: FakeHost) -> None:
    gpu1.add_tensorboard(RUNS, port=6650)
    err = tbctl("open", "6650", "--host", "gpu1", exit_code=4).stderr
    assert "has no forward to this machine" in err and "tbctl tunnel gpu1 6650" in err
    assert tbctl.browser.opened == []


# --- free-port ---------------------------------------------------------------------------------------------


@pytest.fixture
def brief_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder that survives keeps the port for good here: no need to watch it for the real 2 s."""
    from tbctl.core import free_port

    monkeypatch.setattr(free_port, "VERIFY_SECONDS", 0.05)


def test_a_free_port_is_reported_free(tbctl: InProcess) -> None:
    assert "port 6006 is free" in tbctl("free-port", "6006").stdout
    assert tbctl("free-port", "6006", "--json").json()["holders"] == []


def test_free_port_dry_run_only_shows(tbctl: InProcess, local: FakeHost) -> None:
    holder = local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006])
    run = tbctl("free-port", "6006", "--dry-run")
    assert f"pid {holder.pid}" in run.stdout and "dry run" in run.stdout
    data = tbctl("free-port", "6006", "--dry-run", "--json").json()
    assert [h["pid"] for h in data["holders"]] == [holder.pid] and data["dry_run"] is True
    assert local.signals == []


def test_free_port_without_a_terminal_and_without_yes_refuses(tbctl: InProcess, local: FakeHost) -> None:
    local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006])
    run = tbctl("free-port", "6006", exit_code=3)
    assert "without confirmation" in run.stderr and "--yes" in run.stderr and local.signals == []


@pytest.mark.parametrize("answer,stopped", [("y\n", True), ("n\n", False), ("\n", False)])
def test_free_port_asks_on_a_terminal(tbctl: InProcess, local: FakeHost, answer: str, stopped: bool) -> None:
    holder = local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006])
    run = tbctl("free-port", "6006", stdin=answer, tty=True, exit_code=0 if stopped else 3)
    assert f"stop pid {holder.pid}? [y/N]" in run.stderr
    assert local.signals == ([(holder.pid, "SIGTERM")] if stopped else [])


def test_free_port_with_yes_stops_the_holder_and_verifies(tbctl: InProcess, local: FakeHost) -> None:
    holder = local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006])
    run = tbctl("free-port", "6006", "--yes")
    assert f"stopped pid {holder.pid}" in run.stdout and "port 6006 is free" in run.stdout


def test_free_port_force_kills_at_once_and_a_survivor_keeps_the_port_busy(tbctl: InProcess, local: FakeHost,
                                                                           brief_verify: None) -> None:
    stuck = local.add_process(["python3", "-m", "http.server", "6006"], listen=[6006], unkillable=True)
    tbctl("free-port", "6006", "--yes", "--force", exit_code=3)
    assert local.signals == [(stuck.pid, "SIGKILL")]


def test_free_port_stops_its_own_tensorboard_without_asking(tbctl: InProcess, local: FakeHost) -> None:
    tb = local.add_tensorboard(RUNS, port=6006)
    assert f"stopped pid {tb.pid}" in tbctl("free-port", "6006").stdout  # no --yes, no terminal


def test_free_port_explains_another_users_holder_and_does_not_signal_it(tbctl: InProcess, local: FakeHost,
                                                                        brief_verify: None) -> None:
    local.add_process(["nginx"], listen=[6006], user="www-data")
    run = tbctl("free-port", "6006", "--yes", exit_code=3)
    assert "www-data" in run.stdout + run.stderr and local.signals == []


# --- config, and the `open` setting ------------------------------------------------------------------------


def test_config_show_reports_each_value_and_where_it_came_from(local: FakeHost, gpu1: FakeHost,
                                                               tmp_path: Path) -> None:
    tbctl = InProcess(FakeHosts(local, gpu1), tmp_path, environ={"TBCTL_TIMEOUT": "12", "TBCTL_SSH": "paramiko"})
    tbctl.config_file.write_text('port = 7000\nlogdir = "file-runs"\n[hosts.gpu1]\nport = 7100\n')
    shown = tbctl("config", "show", "--json").json()
    assert (shown["config_file"], shown["config_loaded"]) == (str(tbctl.config_file), True)
    assert (shown["port"], shown["timeout"], shown["logdir"]) == (7000, 12.0, "file-runs")
    assert shown["sources"]["port"] == "file" and shown["sources"]["timeout"] == "env:TBCTL_TIMEOUT"
    assert shown["hosts"]["gpu1"]["port"] == 7100
    assert (shown["ssh_in_effect"], shown["ssh_reason"]) == ("paramiko", "set by env:TBCTL_SSH")
    text = tbctl("config", "show").stdout
    assert "port = 7000" in text and "# env:TBCTL_TIMEOUT" in text and "[hosts.gpu1]" in text
    assert tbctl.hosts.opened == []


def test_config_path_answers_even_when_the_file_is_broken(tbctl: InProcess) -> None:
    assert tbctl("config", "path", "--json").json() == {"path": str(tbctl.config_file), "exists": False}
    tbctl.config_file.write_text("[hosts.x\n")
    assert tbctl("config", "path").stdout == f"{tbctl.config_file}\n"
    err = tbctl("config", "show", exit_code=2).stderr
    assert str(tbctl.config_file) in err and "line 1" in err


@pytest.mark.parametrize("file,environ,flags,opens", [
    ("open = true\n", {}, [], True),
    ("open = true\n", {}, ["--no-open"], False),
    ("open = true\n", {"TBCTL_OPEN": "0"}, [], False),
    ("", {"TBCTL_OPEN": "0"}, ["--open"], True),
    ("[hosts.gpu1]\nopen = true\n", {}, [], False),  # another host's section
    ("", {}, [], False),
])
def test_up_opens_the_browser_as_the_flag_then_the_environment_then_the_file_say(
        local: FakeHost, gpu1: FakeHost, tmp_path: Path, file: str, environ: dict[str, str], flags: list[str],
        opens: bool) -> None:
    tbctl = InProcess(FakeHosts(local, gpu1), tmp_path, environ=environ)
    tbctl.config_file.write_text(file)
    run = tbctl("up", RUNS, *flags)
    url = run.stdout.strip().splitlines()[-1]
    assert tbctl.browser.opened == ([url] if opens else [])
    assert (f"opened {url} in the browser" in run.stderr) is opens
