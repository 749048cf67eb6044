"""Where TensorBoard listens: tbctl reads the flags after `--` as TensorBoard's own parser does (argparse
takes any unambiguous prefix: `--hos` is `--host`), refuses a bind beyond loopback unless
`--expose-to-network` says so, and `ls` shows an exposed instance as such."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.conftest import Cli, tensorboard_pids_for
from tbctl.models import is_loopback
from tbctl.tensorboard import network_bind, parse_flags, tensorboard_flag

SHAPES = [
    [], ["--host", "127.0.0.1"], ["--host", "0.0.0.0"], ["--hos", "0.0.0.0"], ["--ho=0.0.0.0"], ["--bind_all"],
    ["--bind"], ["--b"], ["--host=::"], ["--host", "localhost"], ["--host", "::1"], ["--window_title", "x"],
    ["--samples_per_plugin", "scalars=10", "--hos", "10.1.2.3"], ["--host", "0.0.0.0", "--host", "127.0.0.1"],
    ["--reload_interval=5", "--bind_al"], ["--db", "x"], ["--path_prefix=/a", "--host", "evil.example"],
    ["--window_title=--host"], ["--pa", "/p"],
]


def _tensorboards_reading(args: list[str]) -> tuple[str | None, bool, str | None] | None:
    """(host, bind_all, path_prefix) as TensorBoard's own parser reads `args`; None where it refuses them."""
    from tensorboard import default, program

    tb = program.TensorBoard(default.get_plugins())
    try:
        tb.configure(argv=["tensorboard", "--logdir", "x", *args])
    except SystemExit:
        return None
    return tb.flags.host, tb.flags.bind_all, tb.flags.path_prefix


@pytest.mark.parametrize("args", SHAPES, ids=[" ".join(a) or "none" for a in SHAPES])
def test_flags_are_read_as_tensorboards_parser_reads_them(args: list[str]) -> None:
    theirs = _tensorboards_reading(args)
    assert theirs is not None, f"TensorBoard refuses {args}"
    host, bind_all, path_prefix = theirs
    assert tensorboard_flag(args, "host") == host
    assert any(flag == "bind_all" for flag, _, _ in parse_flags(args)) == bind_all
    assert (tensorboard_flag(args, "path_prefix") or "") == (path_prefix or "")
    beyond_loopback = bind_all or (host is not None and not is_loopback(host))
    assert (network_bind(args) is not None) == beyond_loopback, args


@pytest.mark.parametrize("flags", [["--bind_all"], ["--host", "0.0.0.0"], ["--hos", "0.0.0.0"], ["--ho=::"],
                                   ["--b"], ["--flagfile", "/tmp/x"]])
def test_a_bind_beyond_loopback_is_refused_without_expose(cli: Cli, logdir: Path, port: int, flags: list[str]) -> None:
    err = cli("up", str(logdir), "--port", str(port), "--", *flags, exit_code=2).stderr
    assert "would serve TensorBoard to the network" in err and "--expose-to-network" in err, err
    assert flags[0] in err
    assert tensorboard_pids_for(logdir) == []


def test_the_config_files_tensorboard_args_are_checked_too(cli: Cli, logdir: Path, port: int,
                                                          no_config_file: Path) -> None:
    no_config_file.write_text('tensorboard_args = ["--hos", "0.0.0.0"]\n')
    err = cli("up", str(logdir), "--port", str(port), exit_code=2).stderr
    assert "--hos 0.0.0.0 would serve TensorBoard to the network" in err, err
    assert tensorboard_pids_for(logdir) == []


def test_managed_flags_are_refused_abbreviated_too(cli: Cli, logdir: Path, port: int) -> None:
    err = cli("up", str(logdir), "--port", str(port), "--", "--por", "7000", exit_code=2).stderr
    assert "--port is set by tbctl itself" in err and "--por" in err, err


def test_expose_to_network_binds_every_interface_and_ls_says_so(cli: Cli, logdir: Path, port: int) -> None:
    result = cli.up(str(logdir), "--port", str(port), "--expose-to-network")
    inst = result["instance"]
    assert inst["exposure"] == "network"
    listens = [c for c in psutil.Process(inst["pid"]).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.ip for c in listens if c.laddr.port == port} == {"::"}
    assert result["url"] == f"http://127.0.0.1:{port}/"  # the browser still goes through loopback
    listed = {i["pid"]: i for i in json.loads(cli("ls", "--json").stdout)["instances"]}
    assert listed[inst["pid"]]["exposure"] == "network"
    line = next(x for x in cli("ls").stdout.splitlines() if f" {port} " in x)
    assert line.split()[-2:] == ["network", "serving"], line  # the exposure column, then the status


def test_a_loopback_instance_is_listed_as_loopback(cli: Cli, logdir: Path, port: int) -> None:
    inst = cli.up(str(logdir), "--port", str(port))["instance"]
    assert inst["exposure"] == "loopback"
    listed = {i["pid"]: i for i in json.loads(cli("ls", "--json").stdout)["instances"]}
    assert listed[inst["pid"]]["exposure"] == "loopback"
    line = next(x for x in cli("ls").stdout.splitlines() if f" {port} " in x)
    assert line.split()[-2:] == ["loopback", "serving"], line
