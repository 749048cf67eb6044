"""A throw-away Slurm cluster for the tests: a login node and a compute node, each a machine of its own.

    this machine ── veth ── login (sshd :22, munged, slurmctld)  ── veth ── node1 (sshd :22, munged, slurmd)
    10.231.250.a            10.231.250.a+1 / 10.231.251.a                    10.231.251.a+1

Only the login node is reachable from here; node1 only through login (`ssh -J login node1`), as on a real
cluster. Each node is a network namespace plus its own mount and UTS namespaces, held open by a `sleep`
anchor: its hostname (slurmctld refuses to start unless it matches SlurmctldHost), its /etc/hosts, its
/etc/slurm and its /run (munge's socket, sshd's privsep dir). Nodes are entered with `nsenter` on the
anchor, not `ip netns exec`, which remounts /sys and loses the cgroup mounts slurmd looks at. There is no
PID namespace: the nodes' processes are visible (and reaped by pid) from here.

Teardown kills every process in the two namespaces by pid (slurmstepd ignores SIGTERM: SIGKILL follows),
then deletes the namespaces, veths and routes. Needs root and Debian's slurmctld slurmd slurm-client munge.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.procs import wait_until
from tests.support.sshd import (
    Netns,
    SshServer,
    _run,
    _terminate,
    create_netns,
    delete_netns,
    netns_available,
    start_sshd,
    stop_sshd,
)

LOGIN, NODE = "login", "node1"
NODE_CPUS = 2
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch", "/usr/bin/srun",
            "/usr/bin/nsenter", "/usr/bin/unshare")
SLOTS = 60  # /30 subnets per third octet: 4*k .. 4*k+3, k < SLOTS


def slurm_available() -> tuple[bool, str]:
    ok, why = netns_available()
    if not ok:
        return False, why
    missing = [b for b in BINARIES if not os.access(b, os.X_OK)]
    if missing:
        return False, f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurmctld slurmd slurm-client munge)"
    return True, "ok"


@dataclass
class Node:
    name: str
    netns: str
    anchor: subprocess.Popen[bytes]
    addr: str  # on the cluster network

    @property
    def enter(self) -> tuple[str, ...]:
        return ("nsenter", "-t", str(self.anchor.pid), "-n", "-m", "-u", "--")


@dataclass
class Cluster:
    dir: Path
    ssh_config: Path
    login: Node
    node: Node
    login_ns: Netns
    servers: list[SshServer] = field(default_factory=list)
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    slot: int = 0
    extra: list[str] = field(default_factory=list)  # routes to remove

    def run(self, *argv: str, on: str = LOGIN, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command on a node (as an admin would, not through ssh): for setting up and asserting."""
        node = self.login if on == LOGIN else self.node
        res = subprocess.run([*node.enter, *argv], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {on} -> rc={res.returncode}: {res.stderr.strip()}")
        return res

    def sbatch(self, *args: str, workdir: Path) -> str:
        return self.run("env", f"TMPDIR={self.dir / 'tmp'}", "sbatch", "--parsable", f"--chdir={workdir}",
                        *args).stdout.strip().split(";")[0]

    def job_state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", "-o", job, check=False).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return ""

    def wait_state(self, job: str, state: str, timeout: float = 30) -> bool:
        return wait_until(lambda: self.job_state(job) == state, timeout, 0.1)

    def steps(self, job: str) -> list[str]:
        """`squeue -s`: the job's steps as `STEPID NAME NODES`."""
        out = self.run("squeue", "-h", "-s", "-j", job, "-o", "%i %j %N", check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def cancel_all(self) -> None:
        self.run("scancel", "--user=root", check=False)
        wait_until(lambda: not self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip(), 20, 0.1)


def _free_slot() -> int:
    """A /30 per link nobody on this machine uses, so two runs (or suites) never collide."""
    used = _run("ip", "-o", "-4", "addr", "show") + _run("ip", "-4", "route", "show", "table", "all")
    names = _run("ip", "netns", "list")
    start = os.getpid() % SLOTS
    for i in range(SLOTS):
        k = (start + i) % SLOTS
        if f"10.231.250.{4 * k + 1}/" in used or f"10.231.251.{4 * k}/30" in used or f"tbsl{k}" in names:
            continue
        return k
    raise RuntimeError("no free 10.231.250-251.x slot for a Slurm test cluster")


def _anchor(name: str, netns: str, base: Path) -> subprocess.Popen[bytes]:
    """`sleep` in the node's network namespace and a mount + UTS namespace of its own, set up as the node."""
    d = base / name
    script = ('set -e; hostname "$1"; mount --bind "$2/hosts" /etc/hosts; '
              'mount --bind "$3" /etc/slurm; mount --bind "$2/run" /run; exec sleep infinity')
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "--", "unshare", "--mount", "--uts", "--propagation", "slave", "--",
         "/bin/sh", "-c", script, "anchor", name, str(d), str(base / "etc-slurm")],
        stdin=subprocess.DEVNULL, stdout=open(d / "anchor.log", "ab"), stderr=subprocess.STDOUT,
        start_new_session=True)
    if not wait_until(lambda: proc.poll() is not None or _comm(proc.pid) == "sleep", 10, 0.01) or proc.poll() is not None:
        raise RuntimeError(f"node {name} did not come up: {(d / 'anchor.log').read_text(errors='replace')}")
    return proc


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _slurm_conf(base: Path, login_addr: str, node_addr: str) -> str:
    return "\n".join([
        "ClusterName=tbtest", f"SlurmctldHost={LOGIN}({login_addr})", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", "SlurmctldPort=6817", "SlurmdPort=6818",
        f"StateSaveLocation={base / 'ctld'}", f"SlurmdSpoolDir={base / 'slurmd'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}", f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'log/slurmctld.log'}", f"SlurmdLogFile={base / 'log/slurmd.log'}",
        "SlurmctldDebug=info", "SlurmdDebug=info",
        # linuxproc: srun tasks (TensorBoard) die with their step or job; cgroups are not needed for that
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
        "MpiDefault=none", "SwitchType=switch/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MailProg=/bin/true",
        "PropagateResourceLimits=NONE", "ReturnToService=2", "SlurmdParameters=config_overrides",
        "InactiveLimit=0", "KillWait=2", "MinJobAge=300", "SchedulerParameters=sched_interval=1",
        f"NodeName={NODE} NodeAddr={node_addr} NodeHostname={NODE} CPUs={NODE_CPUS} RealMemory=1000 State=UNKNOWN",
        f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP", "",
    ])


def start_cluster(base: Path) -> Cluster:
    base = base.resolve()
    for sub in ("etc-slurm", "log", "ctld", "slurmd", f"{LOGIN}/run/sshd", f"{LOGIN}/run/munge",
                f"{NODE}/run/sshd", f"{NODE}/run/munge", "home", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for d in (base, base / LOGIN, base / NODE, base / LOGIN / "run", base / NODE / "run",
              base / LOGIN / "run/munge", base / NODE / "run/munge"):
        d.chmod(0o755)  # munged insists on its socket dir's mode
    k = _free_slot()
    up_login, up_self = f"10.231.250.{4 * k + 2}", f"10.231.250.{4 * k + 1}"
    login_addr, node_addr = f"10.231.251.{4 * k + 1}", f"10.231.251.{4 * k + 2}"
    (base / "etc-slurm/slurm.conf").write_text(_slurm_conf(base, login_addr, node_addr))
    (base / "etc-slurm/cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=yes\nConstrainCores=no\n")
    for n in (LOGIN, NODE):
        (base / n / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{login_addr} {LOGIN}\n{node_addr} {NODE}\n")
    key = base / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)

    login_ns = create_netns(f"tbsl{k}", up_self, up_login)
    node_ns = f"tbsc{k}"
    cluster: Cluster | None = None
    try:
        _run("ip", "netns", "add", node_ns)
        a, b = f"tbsla{k}", f"tbslb{k}"
        _run("ip", "link", "add", a, "netns", login_ns.name, "type", "veth", "peer", "name", b, "netns", node_ns)
        _run("ip", "-n", login_ns.name, "addr", "add", f"{login_addr}/30", "dev", a)
        _run("ip", "-n", node_ns, "addr", "add", f"{node_addr}/30", "dev", b)
        for ns, dev in ((login_ns.name, a), (node_ns, b), (node_ns, "lo")):
            _run("ip", "-n", ns, "link", "set", dev, "up")
        login = Node(LOGIN, login_ns.name, _anchor(LOGIN, login_ns.name, base), login_addr)
        node = Node(NODE, node_ns, _anchor(NODE, node_ns, base), node_addr)
        cluster = Cluster(base, base / "ssh_config", login, node, login_ns, slot=k)
        for n in (login, node):
            cluster.daemons.append(_daemon(cluster, n, "munged", [
                "/usr/sbin/munged", "-F", f"--key-file={key}", f"--log-file={base}/log/munged-{n.name}.log",
                f"--seed-file={base}/{n.name}/munged.seed", "--num-threads=2"]))
        for n in (login, node):
            sock = base / n.name / "run/munge/munge.socket.2"
            if not wait_until(sock.exists, 10, 0.01):
                raise RuntimeError(f"munged on {n.name} did not start: {_tail(base / f'log/munged-{n.name}.log')}")
        cluster.daemons.append(_daemon(cluster, login, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"]))
        cluster.daemons.append(_daemon(cluster, node, "slurmd", ["/usr/sbin/slurmd", "-D", "-N", NODE]))
        # sshd on each node, one client key for both (as one user's key works across a cluster)
        login_srv = start_sshd(base / "sshd-login", alias=LOGIN, netns=login_ns.name, listen=up_login, port=22,
                               home=base / "home", enter=login.enter, tmpdir=base / "tmp")
        cluster.servers.append(login_srv)
        node_dir = base / "sshd-node"
        node_dir.mkdir()
        for name in ("client_ed25519", "client_ed25519.pub"):
            shutil.copy2(login_srv.workdir / name, node_dir / name)
        node_srv = start_sshd(node_dir, alias=NODE, netns=node_ns, listen=node_addr, port=22, home=base / "home",
                              enter=node.enter, reachable_here=False, tmpdir=base / "tmp")
        cluster.servers.append(node_srv)
        known = base / "known_hosts"
        node_key = " ".join(node_srv.host_key_pub.read_text().split()[:2])
        login_key = " ".join(login_srv.host_key_pub.read_text().split()[:2])
        known.write_text(f"{up_login} {login_key}\n{NODE},{node_addr} {node_key}\n")
        cluster.ssh_config.write_text(ssh_config(known, login_srv.client_key, up_login))
        cluster.ssh_config.chmod(0o600)
        if not wait_until(lambda: cluster is not None and cluster.run(
                "sinfo", "-h", "-n", NODE, "-o", "%t", check=False).stdout.strip() == "idle", 30, 0.1):
            raise RuntimeError(f"{NODE} is not idle: {_tail(base / 'log/slurmctld.log')}{_tail(base / 'log/slurmd.log')}")
        ok = subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-J", LOGIN, "--", NODE, "true"],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if ok.returncode != 0:
            raise RuntimeError(f"ssh -J {LOGIN} {NODE} failed: {ok.stderr}")
    except BaseException:
        if cluster is not None:
            stop_cluster(cluster)
        else:
            _delete_ns(node_ns)
            delete_netns(login_ns)
        raise
    return cluster


def ssh_config(known: Path, key: Path, login_addr: str, node_port: int = 22) -> str:
    return "\n".join([
        f"Host {LOGIN}", f"  HostName {login_addr}",
        f"Host {NODE}", f"  Port {node_port}",
        "Host *", "  User root", f"  IdentityFile {key}", "  IdentitiesOnly yes", f"  UserKnownHostsFile {known}",
        "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  BatchMode yes", "  ConnectTimeout 5",
        "  LogLevel ERROR", "",
    ])


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:]) + "\n"
    except OSError:
        return ""


def _daemon(cluster: Cluster, node: Node, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(cluster.dir / "log" / f"{name}-{node.name}.out", "ab") as log:
        return subprocess.Popen([*node.enter, *argv], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _ns_procs(ns: str) -> list[psutil.Process]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    procs = []
    for pid in out:
        try:
            procs.append(psutil.Process(int(pid)))
        except psutil.NoSuchProcess:
            pass
    return procs


def _delete_ns(ns: str) -> None:
    _kill(_ns_procs(ns))
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _kill(procs: list[psutil.Process]) -> None:
    """slurmstepd ignores SIGTERM: SIGKILL it at once; the rest get SIGTERM, then SIGKILL."""
    for p in procs:
        try:
            if p.name() == "slurmstepd":
                p.kill()
        except psutil.Error:
            pass
    _terminate(procs)


def stop_cluster(cluster: Cluster) -> None:
    for srv in cluster.servers:
        stop_sshd(srv)
    procs = _ns_procs(cluster.node.netns) + _ns_procs(cluster.login.netns)
    _kill(procs)
    for p in [*cluster.daemons, cluster.login.anchor, cluster.node.anchor]:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    _delete_ns(cluster.node.netns)
    delete_netns(cluster.login_ns)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and cluster.node.netns in _run("ip", "netns", "list").split():
        time.sleep(0.05)
