"""The test's "remote" machines: a real sshd in its own network namespace (so a TensorBoard there is
reachable only through a forward), a jump host in a second namespace, and an ssh_config naming them.

Topology (only our own namespaces' addresses are ever used):
    root ns ── veth ── R (remote, sshd on R's address; also on the J–R link address)
    root ns ── veth ── J (jump host, sshd on J's address) ── veth ── R
`tbviajump` reaches R's sshd at the J–R address, which only J can route to: it works only through J.

Without the privilege to create namespaces, the remote sshd runs on loopback and no jump host exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import ProcessReaper, wait_until
from tests.support.sshd import (
    Netns,
    SshServer,
    _run,
    create_netns,
    delete_netns,
    netns_available,
    restart_sshd,
    start_sshd,
    stop_sshd,
)

REMOTE_ALIAS = "tbremote"
JUMP_ALIAS = "tbjump"
VIA_JUMP_ALIAS = "tbviajump"


@dataclass
class Remote:
    server: SshServer
    ssh_config: Path
    netns: Netns | None
    jump: SshServer | None
    jump_netns: Netns | None
    link: tuple[str, str] | None  # (J end, R end) interface names of the J–R veth

    alias = REMOTE_ALIAS

    @property
    def home(self) -> Path:
        """HOME (XDG dirs under it) of every session on the remote: the real user's, from passwd, stays
        untouched."""
        return self.server.workdir.parent / "home"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command on the remote machine (inside its namespace), for assertions."""
        cmd = ["ip", "netns", "exec", self.netns.name, *argv] if self.netns else list(argv)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)

    def listeners(self) -> list[tuple[str, int, int | None]]:
        """(address, port, pid) of every LISTEN TCP socket on the remote machine."""
        out = self.run("ss", "-Hltnp").stdout
        rows = []
        for line in out.splitlines():
            parts = line.split()
            local = parts[3]
            addr, _, port = local.rpartition(":")
            pid = None
            if "pid=" in line:
                pid = int(line.split("pid=")[1].split(",")[0])
            rows.append((addr.strip("[]"), int(port), pid))
        return rows


def _tag(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:6]


def start_remote(workdir: Path) -> Remote:
    """The remote machines; their sessions get HOME=`workdir`/home (see Remote.home), never the real one."""
    home = workdir / "home"
    ok, _ = netns_available()
    if not ok:
        server = start_sshd(workdir / "remote", alias=REMOTE_ALIAS, home=home)
        config = workdir / "ssh_config"
        config.write_text(server.ssh_config.read_text())
        return Remote(server, config, None, None, None, None)
    pid = os.getpid() % 250 + 1  # own addresses per test run, so two runs on one machine do not clash
    r_ns = create_netns(f"tbr{os.getpid()}", f"10.231.{pid}.1", f"10.231.{pid}.2")
    j_ns = link = None
    server = jump = None
    try:
        server = start_sshd(workdir / "remote", alias=REMOTE_ALIAS, netns=r_ns.name, listen=r_ns.ns_addr, home=home)
        j_ns = create_netns(f"tbj{os.getpid()}", f"10.231.{pid}.5", f"10.231.{pid}.6")
        jump = start_sshd(workdir / "jump", alias=JUMP_ALIAS, netns=j_ns.name, listen=j_ns.ns_addr, home=home)
        # J–R link: J can route to R at its own address on this link; the root namespace cannot.
        j_end, r_end = f"tbj{_tag(j_ns.name)}", f"tbr{_tag(r_ns.name)}"
        link_r_addr = f"10.231.{pid}.10"
        _run("ip", "link", "add", j_end, "netns", j_ns.name, "type", "veth", "peer", "name", r_end, "netns", r_ns.name)
        link = (j_end, r_end)
        _run("ip", "-n", j_ns.name, "addr", "add", f"10.231.{pid}.9/30", "dev", j_end)
        _run("ip", "-n", r_ns.name, "addr", "add", f"{link_r_addr}/30", "dev", r_end)
        _run("ip", "-n", j_ns.name, "link", "set", j_end, "up")
        _run("ip", "-n", r_ns.name, "link", "set", r_end, "up")
        # R's sshd also listens on the link address (restart re-checks it on R's root-link address only).
        with open(server.sshd_config, "a") as f:
            f.write(f"ListenAddress {link_r_addr}\n")
        server = restart_sshd(server)
        host_key = server.host_key_pub.read_text().split()
        with open(server.known_hosts, "a") as f:
            f.write(f"[{link_r_addr}]:{server.port} {host_key[0]} {host_key[1]}\n")
        config = workdir / "ssh_config"
        remote_cfg = server.ssh_config.read_text()
        via = remote_cfg.replace(f"Host {REMOTE_ALIAS}", f"Host {VIA_JUMP_ALIAS}").replace(
            f"HostName {server.host}", f"HostName {link_r_addr}\n  ProxyJump {JUMP_ALIAS}"
        )
        config.write_text(remote_cfg + "\n" + jump.ssh_config.read_text() + "\n" + via)
    except BaseException:
        for s in (jump, server):
            if s is not None:
                stop_sshd(s)
        for ns in (j_ns, r_ns):
            if ns is not None:
                delete_netns(ns)
        raise
    return Remote(server, config, r_ns, jump, j_ns, link)


def stop_remote(remote: Remote) -> None:
    for server in (remote.jump, remote.server):
        if server is not None:
            stop_sshd(server)
    for ns in (remote.jump_netns, remote.netns):
        if ns is not None:
            delete_netns(ns)  # also kills what still runs inside and removes the veths


def start_remote_listener(remote: Remote, reaper: ProcessReaper, port: int, *, banner: bytes) -> None:
    """A server on the remote's own loopback that speaks first (as SSH, SMTP or a database does)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('127.0.0.1',{port}));s.listen(8)\n"
        "while True:\n"
        f"    c,_=s.accept();c.sendall({banner!r});c.close()\n"
    )
    argv = [sys.executable, "-c", code]
    if remote.netns is not None:
        argv = ["ip", "netns", "exec", remote.netns.name, *argv]
    reaper.popen(argv)
    assert wait_until(lambda: any(p == port for _, p, _ in remote.listeners()), 10)
