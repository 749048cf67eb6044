"""core's decisions against an in-memory FakeHost (tests/support/fake_host.py), each in milliseconds: which
TensorBoards and forwards `down` ends, which port `up` takes and what it says about the ones it skipped, and
the SSH link's reconnect policy. (How a scan becomes instances: tests/test_classify.py.)

tbctl's own records are made as tbctl makes them (`up`, `add_forward`), never written here by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tbctl.config import PORT_SEARCH_SPAN
from tbctl.core.down import DownResult, down_with_forwards
from tbctl.core.forwards import add_forward
from tbctl.core.up import _choose_port
from tbctl.errors import AuthFailed, InstanceNotFound, PortBusy, SSHError, TensorBoardFailed, UsageError
from tbctl.hosts import link as link_policy
from tbctl.hosts.link import BACKOFF_FIRST, BACKOFF_MAX, LinkState, backoff_delay
from tbctl.models import TensorBoardInstance
from tbctl.state import StateStore
from tests.support.fake_host import OTHER_RUNS, RUNS, FakeHost, FakeHosts, gpu_server, started, this_machine



@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "fake-state")


@pytest.fixture
def local() -> FakeHost:
    return this_machine()


@pytest.fixture
def gpu1() -> FakeHost:
    return gpu_server()


@pytest.fixture
def hosts(local: FakeHost, gpu1: FakeHost) -> FakeHosts:
    return FakeHosts(local, gpu1)


def forwarded(store: StateStore, inst: TensorBoardInstance, local_port: int, *, stop_instance: bool,
              create_time: float | None = None) -> None:
    """A detached forward from `local_port` here to `inst` (which it stops when it ends, with stop_instance)."""
    add_forward(store, host=inst.host, local_port=local_port, remote_port=inst.port or 0, instance_pid=inst.pid,
                instance_create_time=inst.create_time if create_time is None else create_time,
                logdir=inst.logdir, path_prefix="", stop_instance=stop_instance)


def two_forwarded(host: FakeHost, store: StateStore, *, stop_instance: bool
                  ) -> tuple[TensorBoardInstance, TensorBoardInstance]:
    """Two TensorBoards tbctl started on `host` (6006 and 6100), forwarded from 16006 and 16100."""
    first, second = started(host, store), started(host, store, OTHER_RUNS, 6100)
    forwarded(store, first, 16006, stop_instance=stop_instance)
    forwarded(store, second, 16100, stop_instance=stop_instance)
    return first, second


def run_down(hosts: FakeHosts, store: StateStore, target: str | None, *, host_spec: str | None = None,
             all_instances: bool = False, force: bool = False) -> DownResult:
    return down_with_forwards(hosts, store, target, host_spec=host_spec, all_instances=all_instances, force=force,
                              timeout=1.0)


def outcomes(result: DownResult) -> list[tuple[str, int | None]]:
    return sorted((o.outcome, o.instance.pid) for o in result.outcomes)


def ended_ports(result: DownResult) -> list[int]:
    return sorted(f.local_port for f in result.closed_forwards)


def kept_ports(store: StateStore) -> list[int]:
    return sorted(f.local_port for f in store.forwards())


def running(host: FakeHost, pid: int | None) -> bool:
    return host.alive(pid or 0, None)


# --- down_with_forwards --------------------------------------------------------------------------------------


def test_a_forwards_local_port_ends_that_forward_and_the_tensorboard_started_for_it(
        hosts: FakeHosts, gpu1: FakeHost, store: StateStore) -> None:
    inst, other = two_forwarded(gpu1, store, stop_instance=True)
    result = run_down(hosts, store, "16006")
    assert ended_ports(result) == [16006] and kept_ports(store) == [16100]
    assert outcomes(result) == [("stopped", inst.pid)] and result.warnings == []
    assert hosts.opened == ["gpu1"], "only the forward's host, to stop its TensorBoard"
    assert not running(gpu1, inst.pid) and running(gpu1, other.pid)
    assert [r.pid for r in store.for_host("gpu1")] == [other.pid]


def test_a_forward_to_a_tensorboard_it_did_not_start_leaves_it_running(
        hosts: FakeHosts, gpu1: FakeHost, store: StateStore) -> None:
    inst = started(gpu1, store)
    forwarded(store, inst, 16006, stop_instance=False)
    result = run_down(hosts, store, "16006")
    assert ended_ports(result) == [16006] and result.outcomes == []
    assert hosts.opened == [], "ending a forward needs no connection"
    assert running(gpu1, inst.pid)


def test_a_forwards_tensorboard_is_stopped_only_if_it_is_still_that_process(
        hosts: FakeHosts, gpu1: FakeHost, store: StateStore) -> None:
    """The forward names (pid, start): a process that has the pid now, started at another time, is spared."""
    inst = started(gpu1, store)
    forwarded(store, inst, 16006, stop_instance=True, create_time=(inst.create_time or 0) - 100)
    assert run_down(hosts, store, "16006").outcomes == []
    assert running(gpu1, inst.pid) and gpu1.signals == []


def test_a_host_that_cannot_be_reached_to_stop_a_forwards_tensorboard_is_a_warning(
        hosts: FakeHosts, gpu1: FakeHost, store: StateStore) -> None:
    forwarded(store, started(gpu1, store), 16006, stop_instance=True)
    hosts.unreachable["gpu1"] = SSHError("connection refused")
    result = run_down(hosts, store, "16006")
    assert ended_ports(result) == [16006] and result.outcomes == []
    assert result.warnings == ["could not stop the TensorBoard(s) tbctl started on gpu1: connection refused"]


def test_host_alone_ends_every_forward_to_that_host_only(hosts: FakeHosts, local: FakeHost, gpu1: FakeHost,
                                                         store: StateStore) -> None:
    two_forwarded(gpu1, store, stop_instance=False)
    forwarded(store, started(local, store), 17006, stop_instance=False)
    result = run_down(hosts, store, None, host_spec="gpu1")
    assert ended_ports(result) == [16006, 16100] and kept_ports(store) == [17006]
    assert result.outcomes == [] and hosts.opened == []


def test_a_port_that_is_no_forward_stops_the_tensorboard_on_it_and_the_forwards_to_it(
        hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    inst, _ = two_forwarded(local, store, stop_instance=False)
    result = run_down(hosts, store, "6006")
    assert outcomes(result) == [("stopped", inst.pid)] and local.signals == [(inst.pid, "SIGTERM")]
    assert ended_ports(result) == [16006] and kept_ports(store) == [16100]
    assert hosts.opened == [None]
    assert not local.info_files.get(f"/tmp/.tensorboard-info/pid-{inst.pid}.info"), "SIGTERM: TensorBoard removes it"


def test_a_pid_and_a_logdir_name_a_tensorboard_too(hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    by_pid, by_logdir = started(local, store), started(local, store, OTHER_RUNS, 6100)
    assert outcomes(run_down(hosts, store, str(by_pid.pid))) == [("stopped", by_pid.pid)]
    assert outcomes(run_down(hosts, store, "/data/./other/")) == [("stopped", by_logdir.pid)]
    assert store.load() == []


def test_the_host_option_with_a_target_stops_it_on_that_host(hosts: FakeHosts, local: FakeHost, gpu1: FakeHost,
                                                             store: StateStore) -> None:
    here, there = started(local, store), started(gpu1, store)
    forwarded(store, there, 16006, stop_instance=True)
    result = run_down(hosts, store, "6006", host_spec="gpu1")
    assert outcomes(result) == [("stopped", there.pid)] and ended_ports(result) == [16006]
    assert hosts.opened == ["gpu1"], "the forwarded TensorBoard is stopped once, not again after its forward"
    assert running(local, here.pid)


def test_nothing_matched_is_not_found_and_changes_nothing(hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    inst = started(local, store)
    forwarded(store, inst, 16006, stop_instance=True)
    for target in ("6100", "4242424", "/data/nowhere"):
        with pytest.raises(InstanceNotFound, match="no TensorBoard matching"):
            run_down(hosts, store, target)
    assert running(local, inst.pid) and kept_ports(store) == [16006] and len(store.load()) == 1


@pytest.mark.parametrize(("target", "all_instances", "message"), [
    (None, False, "say which TensorBoard to stop"),
    ("6006", True, "give a target or --all, not both"),
    ("-3", False, "is neither a port, a pid nor a logdir"),
    ("0", False, "port"),
])
def test_a_target_that_names_nothing_sensible_is_a_usage_error(hosts: FakeHosts, store: StateStore,
                                                               target: str | None, all_instances: bool,
                                                               message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run_down(hosts, store, target, all_instances=all_instances)


def test_all_here_stops_this_users_tensorboards_and_ends_every_forward(
        hosts: FakeHosts, local: FakeHost, gpu1: FakeHost, store: StateStore) -> None:
    mine = started(local, store)
    theirs = local.add_tensorboard(OTHER_RUNS, port=6100, user="alice")
    remote = started(gpu1, store)
    kept_remote = started(gpu1, store, OTHER_RUNS, 6100)
    forwarded(store, remote, 16006, stop_instance=True)
    forwarded(store, kept_remote, 16100, stop_instance=False)
    result = run_down(hosts, store, None, all_instances=True)
    assert outcomes(result) == sorted([("stopped", mine.pid), ("stopped", remote.pid)])
    assert ended_ports(result) == [16006, 16100] and kept_ports(store) == []
    assert running(local, theirs.pid) and running(gpu1, kept_remote.pid)


def test_the_same_pid_on_two_hosts_is_two_processes(local: FakeHost, store: StateStore) -> None:
    twin = FakeHost("gpu1", remote=True, directories=[RUNS])  # numbers its pids as `local` does
    mine, remote = started(local, store), started(twin, store)
    assert mine.pid == remote.pid
    forwarded(store, remote, 16006, stop_instance=True)
    result = run_down(FakeHosts(local, twin), store, None, all_instances=True)
    assert [(o.outcome, o.instance.host) for o in result.outcomes] == [("stopped", "localhost"), ("stopped", "gpu1")]


def test_all_on_a_host_ends_only_the_forwards_to_it(hosts: FakeHosts, local: FakeHost, gpu1: FakeHost,
                                                    store: StateStore) -> None:
    remote = started(gpu1, store)
    forwarded(store, remote, 16006, stop_instance=False)
    forwarded(store, started(local, store), 17006, stop_instance=False)
    result = run_down(hosts, store, None, host_spec="gpu1", all_instances=True)
    assert outcomes(result) == [("stopped", remote.pid)]
    assert ended_ports(result) == [16006] and kept_ports(store) == [17006]


def test_another_users_tensorboard_is_denied_untouched_and_root_stops_it(store: StateStore) -> None:
    for user, expected in (("me", "denied"), ("root", "stopped")):
        host = FakeHost(user=user)
        theirs = host.add_tensorboard(RUNS, port=6006, user="alice")
        result = run_down(FakeHosts(host), store, "6006")
        assert outcomes(result) == [(expected, theirs.pid)]
        assert host.signals == ([] if expected == "denied" else [(theirs.pid, "SIGTERM")])


def test_what_ignores_sigterm_is_killed_and_its_info_file_removed(hosts: FakeHosts, local: FakeHost,
                                                                  store: StateStore) -> None:
    stubborn = local.add_tensorboard(RUNS, port=6006, ignores_sigterm=True)
    result = run_down(hosts, store, "6006")
    assert outcomes(result) == [("killed", stubborn.pid)] and result.outcomes[0].info_file_removed
    assert local.signals == [(stubborn.pid, "SIGTERM"), (stubborn.pid, "SIGKILL")] and local.info_files == {}


def test_a_tensorboard_that_stops_without_removing_its_info_file_has_it_removed(hosts: FakeHosts, local: FakeHost,
                                                                                store: StateStore) -> None:
    """On Windows the graceful stop is a CTRL_BREAK, and TensorBoard ends on it without removing its info file."""
    inst = local.add_tensorboard(RUNS, port=6006, stops_uncleanly=True)
    result = run_down(hosts, store, "6006")
    assert outcomes(result) == [("stopped", inst.pid)] and result.outcomes[0].info_file_removed
    assert local.signals == [(inst.pid, "SIGTERM")] and local.info_files == {}


def test_force_kills_at_once(hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    inst = started(local, store)
    assert outcomes(run_down(hosts, store, "6006", force=True)) == [("killed", inst.pid)]
    assert local.signals == [(inst.pid, "SIGKILL")] and local.info_files == {}


def test_a_survivor_keeps_its_record(hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    inst = started(local, store)
    local.processes[inst.pid or 0].unkillable = True
    assert outcomes(run_down(hosts, store, "6006")) == [("survived", inst.pid)]
    assert [r.pid for r in store.load()] == [inst.pid]


def test_what_a_killed_tensorboard_left_is_cleaned(hosts: FakeHosts, local: FakeHost, store: StateStore) -> None:
    inst = started(local, store)
    local.exit(inst.pid or 0, cleanly=False)  # SIGKILL from elsewhere: its info file stays
    result = run_down(hosts, store, "6006")
    assert outcomes(result) == [("cleaned", inst.pid)] and result.outcomes[0].info_file_removed
    assert local.info_files == {} and store.load() == [] and local.signals == []


# --- up: the port it takes (_choose_port), and a bind race -------------------------------------------------


def test_the_wanted_port_when_it_is_free(local: FakeHost) -> None:
    assert _choose_port(local, 6006) == (6006, "")


def test_skipped_ports_are_named_with_who_holds_each(local: FakeHost) -> None:
    tb = local.add_tensorboard("/x/runs", port=6006, extra_args=["--reload_interval", "5"])
    server = local.add_process(["/usr/bin/python3", "-m", "http.server", "6007"], listen=[6007, ("::1", 6007)])
    local.unbindable.add(6008)
    port, note = _choose_port(local, 6006)
    assert port == 6009
    assert note == (f"port 6006 is held by pid {tb.pid} (tensorboard --logdir /x/runs …) on 127.0.0.1, "
                    f"6007 by pid {server.pid} (python3 -m http.server 6007) on 127.0.0.1 and ::1, "
                    "6008 by something that is not listening yet; using 6009")


def test_no_free_port_in_the_span_is_port_busy_with_the_wanted_ports_holders(local: FakeHost) -> None:
    holder = local.add_process(["nginx"], listen=[6006])
    local.unbindable.update(range(6007, 6006 + PORT_SEARCH_SPAN))
    with pytest.raises(PortBusy) as caught:
        _choose_port(local, 6006)
    assert caught.value.message == f"no free port in 6006-{6006 + PORT_SEARCH_SPAN - 1} on localhost"
    assert caught.value.port == 6006 and [h.pid for h in caught.value.holders] == [holder.pid]
    assert "tbctl free-port 6006" in (caught.value.hint or "")


def test_the_span_ends_at_the_last_port(local: FakeHost) -> None:
    local.unbindable.update(range(65530, 65536))
    with pytest.raises(PortBusy, match="no free port in 65530-65535 on localhost"):
        _choose_port(local, 65530)


def test_up_takes_the_next_port_when_another_server_binds_the_chosen_one_first(local: FakeHost,
                                                                               store: StateStore) -> None:
    local.launch_fails_with = "OSError: [Errno 98] Address already in use"
    inst = started(local, store)
    assert inst.port == 6007 and [r.port for r in store.load()] == [6007]


def test_up_that_fails_otherwise_says_why_and_keeps_no_record(local: FakeHost, store: StateStore) -> None:
    local.launch_fails_with = "ImportError: no module named tensorboard"
    with pytest.raises(TensorBoardFailed, match="exited before it was ready") as caught:
        started(local, store)
    assert "ImportError" in caught.value.log_tail and store.load() == []


# --- the link: backoff and reconnect state -------------------------------------------------------------------


def test_backoff_doubles_from_the_first_delay_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_policy.random, "uniform", lambda low, high: 1.0)
    assert [backoff_delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10**9) == BACKOFF_MAX, "a link down for days must not overflow the exponent"


def test_backoff_jitter_stays_within_a_fifth() -> None:
    for attempts, base in ((0, BACKOFF_FIRST), (3, 4.0), (50, BACKOFF_MAX)):
        delays = {backoff_delay(attempts) for _ in range(200)}
        assert all(0.8 * base <= d <= 1.2 * base for d in delays) and len(delays) > 1


class _Reconnects:
    """The parts of an SSHHost that the link's watcher uses; `reconnect` answers with `results` in turn
    (an exception is raised, None connects)."""

    def __init__(self, results: list[BaseException | None], *, asked_for: str = "") -> None:
        self.name = "gpu1"
        self.target = SimpleNamespace(server_alive_interval=60.0, server_alive_interval_set=False,
                                      server_alive_count_max=3)
        self.asked_for = asked_for
        self.results = results
        self.reconnects = 0
        self.current_transport = SimpleNamespace(is_active=lambda: True)

    def reconnect(self) -> None:
        self.reconnects += 1
        result = self.results.pop(0)
        if result is not None:
            raise result

    def ping(self, timeout: float) -> None:
        pass


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run a link that starts disconnected until it settles (up or down); its states in order."""
    from tbctl.hosts.paramiko import link as ssh_link

    monkeypatch.setattr(ssh_link, "backoff_delay", lambda attempts: 0.0)
    links: list[Any] = []

    def run(host: _Reconnects) -> list[LinkState]:
        states: list[LinkState] = []
        settled = threading.Event()

        def seen(state: LinkState) -> None:
            states.append(state)
            if state.state != "reconnecting":
                settled.set()

        link = ssh_link.Link(host, on_change=seen, connected=False)  # type: ignore[arg-type]
        links.append(link.start())
        assert settled.wait(5), states
        return states

    yield run
    for link in links:
        link.close()


def test_failures_are_retried_counting_attempts_until_the_link_is_up(watch: Any) -> None:
    host = _Reconnects([SSHError("connection refused"), ValueError("garbled greeting"), None])
    states = watch(host)
    assert [(s.state, s.attempts, s.error) for s in states] == [
        ("reconnecting", 1, "connection refused"), ("reconnecting", 2, "ValueError: garbled greeting"),
        ("up", 0, "")]
    assert states[0].since == states[1].since, "an outage is dated from its start"
    assert host.reconnects == 3


def test_a_refusal_no_retry_changes_ends_the_link(watch: Any) -> None:
    host = _Reconnects([AuthFailed("authentication failed for gpu1"), None])
    states = watch(host)
    assert (states[-1].state, states[-1].attempts, states[-1].error) == ("down", 1, "authentication failed for gpu1")
    assert host.reconnects == 1


def test_a_link_that_needed_a_person_is_down_at_once(watch: Any) -> None:
    host = _Reconnects([None], asked_for="a passphrase")
    [state] = watch(host)
    assert state.state == "down" and "ssh-add the key" in state.error and host.reconnects == 0


def test_a_wait_that_fails_stops_the_tensorboard_just_launched(local: FakeHost, store: StateStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The launch and the wait for it go out together: when the wait fails (not only on Ctrl-C), what the
    launch started is stopped, not left running."""
    from tbctl.core.up import UpRequest, up

    def broken_wait(port: int, path: str, timeout: float) -> dict[str, Any]:
        raise RuntimeError("the wait broke")

    monkeypatch.setattr(local, "_op_wait_launched", broken_wait)
    with pytest.raises(RuntimeError, match="the wait broke"):
        up(local, store, UpRequest(logdir=RUNS, port=6006, timeout=5, new=True))
    launched = local.last_launch["pid"]
    assert (launched, "SIGTERM") in local.signals and not local.processes[launched].running
