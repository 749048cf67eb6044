"""What tbctl asks of a machine, answered from that machine.

Stdlib-only and Python 3.8-compatible on purpose: LocalHost holds a `Probe` and calls its `handle()`
in-process, SSHHost sends this file to the remote `python3` and talks to `serve()` in JSON lines over the
exec channel's stdin/stdout. So a server needs nothing installed beyond python3 and tensorboard.

How processes and sockets are seen is a backend, chosen once per process by `default_backend()`:
`ProcBackend` reads /proc (and asks the kernel's sock_diag for sockets) and never imports psutil, which
costs ~40 ms of start-up for nothing /proc does not answer; `PsutilBackend` serves where there is no /proc
(macOS), or where TBCTL_PROBE_PSUTIL=1 asks for it.

Answers are plain JSON-able facts (no judgement): `tbctl/core` decides what they mean.
"""

from __future__ import annotations

import abc
import errno
import json
import os
import signal
import socket
import stat
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # names for annotations only: importing typing would slow every remote probe's start
    from typing import Any, Callable, TextIO

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CREATE_TIME_SLACK = 0.05  # seconds; /proc and psutil round start times differently


# --- recognising TensorBoard -------------------------------------------------------------------------------


def program_name(arg: str) -> str:
    """The name a program is known by, from its path as any OS writes it: the last part of a POSIX or a Windows
    path (`/`, `\\`), lowercased and without `.exe`, since Windows matches names case-blind and macOS' framework
    Python is `…/Python.app/Contents/MacOS/Python`."""
    name = arg.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def is_python(program: str) -> bool:
    """`python`, `python3.12`, `python3.13t`, `pythonw`, framework `Python`, or Windows' `py` launcher."""
    name = program_name(program)
    return name == "py" or name.startswith("python")


_INTERPRETER_OPTIONS_WITH_VALUE = ("-X", "-W")  # `python -X importtime …`: the next word is the option's


def tensorboard_args(cmdline: list) -> list | None:
    """The arguments after the program if `cmdline` runs TensorBoard, else None.

    Shapes seen in the wild: `[python, …/bin/tensorboard, ARGS]`, `[…/bin/tensorboard, ARGS]` (exec'd
    script), `[python, -m, tensorboard.main, ARGS]`, with an optional `serve` subcommand; on Windows
    `…\\Scripts\\tensorboard.exe` and `py -3.12 -m tensorboard`. The data-server child
    (`…/tensorboard_data_server/bin/server`) and `python -c '…tensorboard…'` are not instances.
    """
    if not cmdline:
        return None
    argv = list(cmdline)
    start = None
    if program_name(argv[0]) == "tensorboard":
        start = 1
    elif is_python(argv[0]) and len(argv) > 1:
        i = 1
        while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-m", "-c"):
            # interpreter options (-u, -X importtime, py's -3.12) are rare but harmless to skip
            i += 2 if argv[i] in _INTERPRETER_OPTIONS_WITH_VALUE else 1
        if i + 1 < len(argv) and argv[i] == "-m" and argv[i + 1] in ("tensorboard", "tensorboard.main"):
            start = i + 2
        elif i < len(argv) and program_name(argv[i]) == "tensorboard":
            start = i + 1
    if start is None:
        return None
    args = argv[start:]
    if args and args[0] == "serve":
        args = args[1:]
    return args


def flag_value(args: list, name: str) -> str | None:
    """The value of `--name v` or `--name=v` (last one wins, as with absl flags)."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--" + name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--" + name + "="):
            value = arg.split("=", 1)[1]
    return value


# --- backends: how this machine's processes and sockets are seen -------------------------------------------


def username_of(uid: int) -> str:
    try:
        import pwd  # here: Windows has no pwd (nor uids: the psutil backend names owners there)
    except ImportError:
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def current_uid() -> int | None:
    """This process's uid, or None where the platform has no uids (Windows)."""
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def _split_cmdline(raw: bytes) -> list:
    """The arguments in /proc/PID/cmdline (each ends with a NUL), whatever bytes they are made of."""
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]


def _decode_addr(addr_hex: str) -> str:
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


class Backend(abc.ABC):
    """What the probe asks of the operating system; the rest of the probe is the same on every machine."""

    uses_psutil = False  # the hello tells the client (whoami's `psutil`)

    @abc.abstractmethod
    def pids(self) -> list:
        """Every pid on this machine."""

    @abc.abstractmethod
    def candidate_cmdline(self, pid: int) -> list | None:
        """The command line of `pid` if it may be TensorBoard's, else None: the cheap first pass of a scan
        (most processes are not TensorBoard, and are dropped here without reading anything else)."""

    @abc.abstractmethod
    def proc_info(self, pid: int) -> dict | None:
        """A process's facts, or None if it is gone. Fields we may not read come back as None."""

    @abc.abstractmethod
    def listening(self, ports: set | None, pids: list | None) -> list:
        """Every LISTEN TCP socket (IPv4 and IPv6) on `ports`, or of `pids` (None: any). Each row: family,
        addr, port, pid (None when the owner is another user's and we are not root), uid (None if unknown)."""

    def sockets_visible(self, pid: int) -> bool:
        """Whether this user may see `pid`'s sockets (its own processes, or any as root)."""
        return True

    def listen_ports_by_user(self) -> dict | None:
        """{user name: [ports]} of every LISTEN socket, where the system tells a socket's owner without
        telling its process (Linux: the kernel's socket table has the uid); None where it does not."""
        return None

    def ppid(self, pid: int) -> int | None:
        info = self.proc_info(pid)
        return info["ppid"] if info is not None else None

    def holds_unix(self, pids: list, path: str) -> bool:
        """Whether one of `pids` holds a listening unix socket bound to `path` (False where it cannot tell)."""
        return False

    def descendants(self, pid: int) -> list:
        """The pids of `pid`'s children, their children, and so on."""
        parents: dict = {}
        for child in self.pids():
            parents.setdefault(self.ppid(child), []).append(child)
        out, todo = [], [pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out


class ProcBackend(Backend):
    """Linux: /proc for processes, sock_diag (else /proc/net/tcp{,6}) for sockets."""

    def __init__(self) -> None:
        self._boot_time: float | None = None

    def boot_time(self) -> float:
        """/proc/stat's btime, read once: what /proc's start ticks count from, in epoch seconds."""
        if self._boot_time is None:
            value = 0.0
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("btime"):
                        value = float(line.split()[1])
                        break
            self._boot_time = value
        return self._boot_time

    def _stat(self, pid: int) -> tuple:
        """(state, ppid, create_time, start_ticks) from /proc/PID/stat.

        start_ticks (field 22: clock ticks from boot to the process's start) is what identifies a process
        with its pid: it never changes. create_time (epoch seconds, for people) adds btime, which the kernel
        derives from the wall clock when /proc/stat is read, so a clock step moves it for later readers.
        """
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        fields = data[data.rindex(")") + 2 :].split()
        ticks = int(fields[19])
        return fields[0], int(fields[1]), self.boot_time() + ticks / _CLK_TCK, ticks

    def pids(self) -> list:
        return [int(d) for d in os.listdir("/proc") if d.isdigit()]

    def sockets_visible(self, pid: int) -> bool:
        try:
            os.listdir("/proc/%d/fd" % pid)
            return True
        except PermissionError:
            return False
        except OSError:
            return True  # gone: nothing hidden

    def listen_ports_by_user(self) -> dict | None:
        out: dict = {}
        for _, _, port, _, uid in self._listen_sockets():
            out.setdefault(username_of(uid), set()).add(port)
        return {user: sorted(ports) for user, ports in out.items()}

    def ppid(self, pid: int) -> int | None:
        try:
            return self._stat(pid)[1]
        except (OSError, ValueError):
            return None

    def candidate_cmdline(self, pid: int) -> list | None:
        """One read of /proc/PID/cmdline; psutil.Process() would also read /proc/PID/stat per process."""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                raw = f.read()
        except OSError:
            return None
        if b"tensorboard" not in raw:  # nearly every process: skip the decoding
            return None
        return _split_cmdline(raw)

    def proc_info(self, pid: int) -> dict | None:
        try:
            state, ppid, create_time, start_ticks = self._stat(pid)
            uid = os.stat("/proc/%d" % pid).st_uid
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdline = _split_cmdline(f.read())
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            return {"pid": pid, "ppid": None, "create_time": None, "start_ticks": None, "zombie": False,
                    "username": None, "cmdline": [], "cwd": None}
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            cwd = None
        return {"pid": pid, "ppid": ppid, "create_time": create_time, "start_ticks": start_ticks,
                "zombie": state == "Z", "username": username_of(uid), "cmdline": cmdline, "cwd": cwd}

    def listening(self, ports: set | None, pids: list | None) -> list:
        """The sockets first and file descriptors only when there is something to attribute: psutil's
        net_connections walks every process's descriptors up front (9-60 ms here)."""
        socks = [s for s in self._listen_sockets() if ports is None or s[2] in ports]
        if not socks:
            return []
        owners: dict = {}
        if pids is not None:
            for pid in pids:
                owners.update({i: pid for i in self._fd_inodes(pid)})
        else:
            owners = self._socket_owners({s[3] for s in socks})
        return [{"family": f, "addr": a, "port": p, "pid": owners.get(i), "uid": uid}
                for f, a, p, i, uid in socks if pids is None or i in owners]

    def _listen_sockets(self) -> list:
        """(family, addr, port, inode, uid) of every LISTEN TCP socket in this network namespace."""
        try:
            return self._listen_sockets_netlink()
        except OSError:
            return self._listen_sockets_proc()

    @staticmethod
    def _listen_sockets_netlink() -> list:
        """Ask the kernel (sock_diag, as `ss` does) for LISTEN sockets only: ~0.2 ms, where reading
        /proc/net/tcp{,6} costs ~5 ms per file even when they are nearly empty."""
        out = []
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_SOCK_DIAG
            nl.settimeout(2.0)
            for family in (socket.AF_INET, socket.AF_INET6):
                # inet_diag_req_v2: family, protocol, ext, pad, states (1 << TCP_LISTEN), an empty sockid
                req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + b"\0" * 48
                # nlmsghdr: len, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, pid
                nl.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req)
                done = False
                while not done:
                    data = nl.recv(65536)
                    off = 0
                    while off + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, off)
                        if kind == 3:  # NLMSG_DONE
                            done = True
                            break
                        if kind == 2 or length < 16:  # NLMSG_ERROR
                            raise OSError("sock_diag refused the request")
                        body = data[off + 16 : off + length]
                        fam = body[0]
                        port = struct.unpack_from(">H", body, 4)[0]
                        raw = body[8:24] if fam == socket.AF_INET6 else body[8:12]
                        uid, inode = struct.unpack_from("=II", body, 64)
                        out.append(("ipv6" if fam == socket.AF_INET6 else "ipv4", socket.inet_ntop(fam, raw),
                                    port, inode, uid))
                        off += (length + 3) & ~3
        return out

    @staticmethod
    def _listen_sockets_proc() -> list:
        out = []
        for family, path in (("ipv4", "/proc/net/tcp"), ("ipv6", "/proc/net/tcp6")):
            try:
                with open(path) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if parts[3] != "0A":
                            continue
                        addr_hex, port_hex = parts[1].split(":")
                        out.append((family, _decode_addr(addr_hex), int(port_hex, 16), int(parts[9]), int(parts[7])))
            except FileNotFoundError:
                continue
        return out


    def holds_unix(self, pids: list, path: str) -> bool:
        """/proc/net/unix names each socket's inode and path; a listening one has __SO_ACCEPTCON (0x10000)
        in its flags. It lists this network namespace's sockets, which is where the probe runs."""
        inodes = set()
        try:
            with open("/proc/net/unix", "rb") as f:
                next(f)
                for line in f:
                    parts = line.split(None, 7)
                    if len(parts) == 8 and parts[7].rstrip(b"\n") == os.fsencode(path) and int(parts[3], 16) & 0x10000:
                        inodes.add(int(parts[6]))
        except (OSError, ValueError):
            return False
        return any(self._fd_inodes(pid) & inodes for pid in pids)

    def _socket_owners(self, inodes: set) -> dict:
        """inode -> pid for the sockets we may see (our own processes, or all as root)."""
        owners: dict = {}
        if not inodes:
            return owners
        for pid in self.pids():
            for inode in self._fd_inodes(pid) & inodes:
                owners[inode] = pid
        return owners

    @staticmethod
    def _fd_inodes(pid: int) -> set:
        out = set()
        fd_dir = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(fd_dir + "/" + fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
        except OSError:
            pass
        return out


class PsutilBackend(Backend):
    """psutil, where there is no /proc (macOS). ImportError where psutil is not installed."""

    uses_psutil = True

    def __init__(self) -> None:
        import psutil  # here, not at import: the /proc probe never pays for it

        self._psutil = psutil
        self._unreadable = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

    def pids(self) -> list:
        return self._psutil.pids()

    def candidate_cmdline(self, pid: int) -> list | None:
        try:
            return self._psutil.Process(pid).cmdline()
        except self._unreadable:
            return None

    def proc_info(self, pid: int) -> dict | None:
        try:
            p = self._psutil.Process(pid)
            with p.oneshot():
                return {
                    "pid": pid,
                    "ppid": p.ppid(),
                    "create_time": p.create_time(),
                    "start_ticks": None,  # psutil (macOS) tells only the create time
                    "zombie": p.status() == self._psutil.STATUS_ZOMBIE,
                    "username": self._readable(p.username),
                    "cmdline": self._readable(p.cmdline) or [],
                    "cwd": self._readable(p.cwd),
                }
        except self._psutil.NoSuchProcess:
            return None

    def _readable(self, getter: Callable[[], Any]) -> Any:
        """`getter()`, or None where this user may not read it or the process is a zombie."""
        try:
            return getter()
        except (self._psutil.AccessDenied, self._psutil.ZombieProcess):
            return None

    def sockets_visible(self, pid: int) -> bool:
        try:
            self._psutil.Process(pid).net_connections(kind="tcp")
            return True
        except self._psutil.AccessDenied:
            return False
        except (self._psutil.NoSuchProcess, self._psutil.ZombieProcess):
            return True

    def holds_unix(self, pids: list, path: str) -> bool:
        for pid in pids:
            try:
                conns = self._psutil.Process(pid).net_connections(kind="unix")
            except self._unreadable:
                continue
            if any(c.laddr == path for c in conns):
                return True
        return False

    def descendants(self, pid: int) -> list:
        try:
            return [c.pid for c in self._psutil.Process(pid).children(recursive=True)]
        except self._unreadable:
            return []

    def listening(self, ports: set | None, pids: list | None) -> list:
        if pids is not None:  # macOS: only our own processes' sockets are readable without root
            return self._rows(self._sockets_of(pids), ports)
        try:
            conns = [(c.pid, c) for c in self._psutil.net_connections(kind="tcp")]
        except self._psutil.AccessDenied:
            return self._listening_unprivileged(ports)
        return self._rows(conns, ports)

    def _sockets_of(self, pids: list) -> list:
        conns: list = []
        for pid in pids:
            try:
                conns.extend((pid, c) for c in self._psutil.Process(pid).net_connections(kind="tcp"))
            except self._unreadable:
                continue
        return conns

    def _rows(self, conns: list, ports: set | None) -> list:
        return [{"family": "ipv6" if c.family == socket.AF_INET6 else "ipv4", "addr": c.laddr.ip, "port": c.laddr.port,
                 "pid": pid, "uid": None}
                for pid, c in conns
                if c.status == self._psutil.CONN_LISTEN and (ports is None or c.laddr.port in ports)]

    def _listening_unprivileged(self, ports: set | None) -> list:
        """macOS as a normal user: psutil reads the machine's sockets by asking every process for its own,
        and another user's refuses (AccessDenied). Ours are read one process at a time; a port where
        something else answers on loopback is held by a process of another user (pid None), as the /proc
        backend tells it to a normal user: nobody here can say which process that is."""
        rows = self._rows(self._sockets_of(self.pids()), ports)
        seen = {(r["port"], r["family"]) for r in rows}
        for port in sorted(ports or ()):
            for family, addr in answering(port):
                if (port, family) not in seen:
                    rows.append({"family": family, "addr": addr, "port": port, "pid": None, "uid": None})
        return rows


def default_backend() -> Backend:
    """This machine's backend: /proc where there is one, unless TBCTL_PROBE_PSUTIL=1; else psutil; else
    /proc all the same (a host without psutil has nothing else that could answer)."""
    if os.path.isdir("/proc/self") and not os.environ.get("TBCTL_PROBE_PSUTIL"):
        return ProcBackend()
    try:
        return PsutilBackend()
    except ImportError:
        return ProcBackend()


# --- process control: launching detached, a child's exit, stopping; per OS ----------------------------------


class PosixControl:
    """Linux and macOS: a detached child leads a session of its own, so a closed terminal or SSH session
    sends it no SIGHUP; only its parent can reap it (waitpid); it is stopped with SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self._children: set = set()  # pids launch() started

    @staticmethod
    def popen_options() -> dict:
        return {"start_new_session": True}

    def remember(self, proc: Any) -> None:
        self._children.add(proc.pid)

    def child_running(self, pid: int) -> bool | None:
        """Whether `pid`, a child launch() started, still runs (reaping it once it exited); None for a pid
        that is no child of ours."""
        if pid not in self._children:
            return None
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                return True
        except OSError:
            pass
        self._children.discard(pid)
        return False

    def send(self, pid: int, sig: str, still_it: Callable[[], bool]) -> bool:
        """Send `sig` (SIGTERM or SIGKILL) to `pid` if `still_it()`; False if it was not (gone, or its pid
        reused). Raises ProcessLookupError or PermissionError as os.kill does.

        Where Linux has pidfds (Python >= 3.9, Linux >= 5.3) the process is pinned with one *before*
        `still_it()` checks its identity and signalled through it: if it exits after the check and its pid
        is reused, the signal fails instead of hitting the newcomer. Elsewhere: check, then kill (a window
        of microseconds)."""
        signum = getattr(signal, sig)
        pidfd = _pidfd_open(pid)
        try:
            if not still_it():
                return False
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return True


class WindowsControl:
    """Windows: no sessions, no signals, no waitpid (subprocess ignores start_new_session there).

    A detached child gets its own process group and a console of its own without a window
    (CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW), so closing the user's console does not end it. Not
    DETACHED_PROCESS: a process without a console cannot be sent CTRL_BREAK, the only graceful stop Windows
    has (and CREATE_NO_WINDOW is ignored beside it). SIGTERM is CTRL_BREAK_EVENT to its group, SIGKILL (or
    a process no CTRL_BREAK can reach) is TerminateProcess, through a psutil.Process made before the
    identity check, which refuses to act on a pid that now belongs to a newer process (its create time).
    """

    # subprocess names these only on Windows; the values are Windows' own
    CREATE_NEW_PROCESS_GROUP = 0x00000200
    CREATE_NO_WINDOW = 0x08000000
    CTRL_BREAK_EVENT = 1

    # A console control event reaches only the processes of the sender's console, and the child has its
    # own: this short helper leaves its console, attaches to the child's and sends the break to the child's
    # group, so tbctl's own console never sees it. Only where that console holds nothing but the process
    # and its descendants (argv: the pids of that tree): a pid that leads no group is said to get the
    # break sent to its whole console, which for a TensorBoard started in a terminal is the user's shell.
    # Exit 0: sent.
    BREAK_HELPER = (
        "import ctypes, signal, sys\n"
        "signal.signal(signal.SIGBREAK, signal.SIG_IGN)\n"
        "kernel32 = ctypes.WinDLL('kernel32', use_last_error=True)\n"
        "pid, tree = int(sys.argv[1]), {int(p) for p in sys.argv[1:]}\n"
        "kernel32.FreeConsole()\n"
        "if not kernel32.AttachConsole(pid):\n"
        "    sys.exit(1)\n"
        "pids = (ctypes.c_uint32 * 64)()\n"
        "n = kernel32.GetConsoleProcessList(pids, 64)\n"
        "others = set(pids[:min(n, 64)]) - tree - {kernel32.GetCurrentProcessId()}\n"
        "sys.exit(0 if 0 < n <= 64 and not others and kernel32.GenerateConsoleCtrlEvent(%d, pid) else 1)\n"
        % CTRL_BREAK_EVENT
    )

    def __init__(self) -> None:
        self._children: dict = {}  # pid -> the Popen launch() made: its handle tells when it exits

    @classmethod
    def popen_options(cls) -> dict:
        return {"creationflags": cls.CREATE_NEW_PROCESS_GROUP | cls.CREATE_NO_WINDOW}

    def remember(self, proc: Any) -> None:
        self._children[proc.pid] = proc

    def child_running(self, pid: int) -> bool | None:
        proc = self._children.get(pid)
        if proc is None:
            return None
        if proc.poll() is None:
            return True
        del self._children[pid]
        return False

    def send(self, pid: int, sig: str, still_it: Callable[[], bool]) -> bool:
        import psutil  # the psutil backend is the one Windows has: it is installed

        try:
            proc = psutil.Process(pid)  # pinned before the check: kill() refuses it once the pid is reused
        except psutil.NoSuchProcess:
            return False
        if not still_it():
            return False
        if sig != "SIGKILL" and self.ask_to_stop(pid):
            return True
        try:
            # Windows ends no child with its parent: a wrapper (a .cmd, a launcher without a kill-on-close
            # job object, unlike pip's Scripts\*.exe) would leave TensorBoard running in its child
            children = proc.children(recursive=True)
            proc.kill()  # TerminateProcess
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied as exc:
            raise PermissionError(str(exc)) from None
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        return True

    def break_argv(self, pid: int, descendants: list) -> list:
        return [sys.executable, "-I", "-c", self.BREAK_HELPER, str(pid)] + [str(p) for p in descendants]

    def ask_to_stop(self, pid: int) -> bool:
        """CTRL_BREAK_EVENT to the process group `pid` leads (launch() made it one); False when it could
        not be sent: a process with no console, or one sharing a console with others (started in a
        terminal, not by tbctl), which has no graceful stop from here."""
        import subprocess

        import psutil

        try:
            descendants = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return False
        try:
            done = subprocess.run(self.break_argv(pid, descendants), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=10, **self.popen_options())
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0


def default_control() -> PosixControl | WindowsControl:
    return WindowsControl() if os.name == "nt" else PosixControl()


# --- ports -------------------------------------------------------------------------------------------------


def bind_option_name(platform: str) -> str:
    """The socket option a server binds with on `platform` (sys.platform). Windows' SO_REUSEADDR would let
    a socket bind over a live listener: SO_EXCLUSIVEADDRUSE is its exclusive bind. Elsewhere SO_REUSEADDR,
    as werkzeug binds, so a port that a killed server left in TIME_WAIT counts as free."""
    return "SO_EXCLUSIVEADDRUSE" if platform == "win32" else "SO_REUSEADDR"


def bindable(port: int) -> bool:
    """Whether a server could take `port` on 127.0.0.1 now with nothing else answering there instead of
    it. Linux refuses a bind of 127.0.0.1 while anyone listens on the wildcard, but BSD rules (macOS) let
    it succeed beside a `*:PORT` listener: so nothing may accept a connection on 127.0.0.1 or ::1 either.
    On Windows a refused connection takes about a second (it retries the SYN), and its exclusive bind
    fails while any socket has the port: there both loopbacks are bound instead."""
    option = getattr(socket, bind_option_name(sys.platform))
    if sys.platform == "win32":
        return all(_binds(af, addr, port, option) for _, af, addr in LOOPBACKS)
    return not answering(port) and _binds(socket.AF_INET, "127.0.0.1", port, option)


def _binds(af: int, addr: str, port: int, option: int) -> bool:
    """Whether a socket with `option` binds addr:port now (True where this machine has no such family)."""
    try:
        sock = socket.socket(af, socket.SOCK_STREAM)
    except OSError:
        return True
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, port))
        return True
    except OSError as exc:
        return af == socket.AF_INET6 and exc.errno == errno.EADDRNOTAVAIL  # no ::1 here: nothing can clash
    finally:
        sock.close()


LOOPBACKS = (("ipv4", socket.AF_INET, "127.0.0.1"), ("ipv6", socket.AF_INET6, "::1"))


def answering(port: int) -> list:
    """(family, address) of each loopback where a connection to `port` is accepted now: someone listens
    there, whether or not we may see whose socket it is."""
    found = []
    for family, af, addr in LOOPBACKS:
        try:
            with socket.socket(af, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                # A port in the ephemeral range can be given to this very socket, which then connects to
                # itself (TCP simultaneous open): that is no listener.
                if sock.connect_ex((addr, port)) == 0 and sock.getsockname()[:2] != sock.getpeername()[:2]:
                    found.append((family, addr))
        except OSError:  # no IPv6 on this machine
            continue
    return found


# --- TensorBoard discovery ---------------------------------------------------------------------------------


def info_dirs(extra: list | None = None) -> list:
    """Where TensorBoard writes info files: `tempfile.gettempdir()` of its process, usually /tmp."""
    dirs = []
    for var in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(var):
            dirs.append(os.path.join(os.environ[var], ".tensorboard-info"))
            break
    dirs.append("/tmp/.tensorboard-info")
    for d in extra or []:
        dirs.append(d)
    seen = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_tensorboard(explicit: str | None = None, env_prefix: str | None = None, login_shell: bool = False) -> dict:
    """Locate a tensorboard executable; say everything that was searched."""
    import shutil
    import subprocess

    searched = []
    if explicit:
        path = os.path.expanduser(explicit)
        searched.append(path)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return {"path": os.path.abspath(path), "searched": searched}
        return {"path": None, "searched": searched, "explicit_bad": True}
    prefixes = []
    if env_prefix:
        prefixes.append(os.path.expanduser(env_prefix))
    else:
        prefixes.append(os.path.dirname(os.path.dirname(os.path.abspath(sys.executable))))
    # an environment keeps its programs in bin/, or on Windows in Scripts\ as .exe launchers
    programs = ("Scripts", "tensorboard.exe") if os.name == "nt" else ("bin", "tensorboard")
    for prefix in prefixes:
        candidate = os.path.join(prefix, *programs)
        searched.append(candidate)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return {"path": candidate, "searched": searched}
    if env_prefix:
        return {"path": None, "searched": searched}
    searched.append("PATH")
    found = shutil.which("tensorboard")
    if found:
        return {"path": found, "searched": searched}
    if login_shell:
        shell = os.environ.get("SHELL") or "/bin/sh"
        searched.append("%s -lc 'command -v tensorboard'" % shell)
        try:
            out = subprocess.run([shell, "-lc", "command -v tensorboard"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=15)
            line = out.stdout.decode("utf-8", "replace").strip().splitlines()
            if out.returncode == 0 and line and os.path.isabs(line[-1]):
                return {"path": line[-1], "searched": searched}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"path": None, "searched": searched}


# --- private files ------------------------------------------------------------------------------------------
# On a shared server tbctl's state, cache and log dirs are 0700 and their files 0600: logs show logdirs and
# paths, and a lock or log another user could write to is one they could tamper with. Created with the
# mode, not chmod-ed after (only a dir an older tbctl made open is tightened), and never opened through a
# symlink someone planted.

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str) -> dict:
    """Make `path` (tbctl's own directory) a directory only this user can use: created 0700 when missing,
    tightened to 0700 when an older tbctl left it open. `error` says why it may not be used, in one line:
    a symlink another user owns, or a directory that is not ours (they could read or plant files)."""
    try:
        return {"path": path, "error": _private_dir(os.path.expanduser(path))}
    except OSError as exc:
        return {"path": path, "error": "%s: %s" % (path, exc.strerror or exc)}


def _private_dir(path: str) -> str | None:
    # Windows has no uids (st_uid is 0) and its mode bits do not express who may read: there the user's
    # profile (platformdirs' dirs, the temp dir) is private by its ACL, and only the kind of file is checked.
    uid = current_uid()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=PRIVATE_DIR_MODE, exist_ok=True)
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # another tbctl made it meanwhile: judge it like any existing one
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if uid is not None and st.st_uid != uid:
            return "%s is a symlink owned by %s; refusing to use it" % (path, username_of(st.st_uid))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "%s is a symlink to nothing; refusing to use it" % path
    if not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % path
    if uid is None:
        return None
    if st.st_uid != uid:
        return "%s is owned by %s, not by %s; refusing to use it" % (path, username_of(st.st_uid), username_of(uid))
    if st.st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)  # made by a tbctl that did not yet make it private
    return None


def ensure_private_dir(path: str) -> None:
    """private_dir, raising PermissionError with its one-line reason."""
    error = private_dir(path)["error"]
    if error:
        raise PermissionError(error)


def open_private(path: str, flags: int) -> int:
    """os.open for tbctl's own files: 0600 when created, and never through a symlink (ELOOP instead).
    Windows has no O_NOFOLLOW (a symlink there needs an administrator or Developer Mode to be made), and
    opens in text mode (CRLF, and ^Z as the end) unless asked for O_BINARY."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    binary = getattr(os, "O_BINARY", 0)
    return os.open(path, flags | nofollow | binary | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)


# --- private instances: TensorBoard on a unix socket ------------------------------------------------------
# `up --private`: TensorBoard serves on a unix socket in a 0700 directory of this user's, so no other user of
# the machine can connect (127.0.0.1 is shared by all of them). TensorBoard has no option for it; its seam is
# `program.TensorBoard(server_class=…)`, and werkzeug serves `unix://PATH`. This launcher (stdlib +
# TensorBoard only) is written into the socket's directory as `tensorboard`, so `ps` and tbctl's scan see
# `python …/tensorboard --unix_socket PATH FLAGS`, and is run with the Python of the user's tensorboard.

PRIVATE_LAUNCHER = r"""'''TensorBoard on a unix socket and no TCP port, for `tbctl up --private`.

Written by tbctl into a 0700 directory of its own. Writes no TensorBoard info file (those name a TCP port,
which tensorboard.notebook and other tools would try), and removes its socket and directory when it stops.'''
import os
import signal
import sys
import threading


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--unix_socket":
        sys.stderr.write("usage: tensorboard --unix_socket PATH [TENSORBOARD_FLAGS...]\n")
        return 2
    path, flags = args[1], args[2:]
    here = os.path.dirname(os.path.abspath(__file__))
    os.umask(0o077)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        from tensorboard import default, main_lib, program
        from werkzeug import serving

        class Handler(serving.WSGIRequestHandler):
            protocol_version = "HTTP/1.1"  # as TensorBoard's own server: one connection for many requests

            def log_request(self, *args, **kwargs):
                pass

        class UnixSocketServer(serving.ThreadedWSGIServer, program.TensorBoardServer):
            daemon_threads = True

            def __init__(self, wsgi_app, tb_flags):
                serving.ThreadedWSGIServer.__init__(self, "unix://" + path, 0, wsgi_app, handler=Handler)

            def get_url(self):
                return "unix:" + path

        main_lib.global_init()
        board = program.TensorBoard(plugins=default.get_plugins(), server_class=UnixSocketServer)
        board.configure(["tensorboard"] + flags)
        board.launch()  # serves in a thread and, unlike main(), writes no info file
    except BaseException as exc:
        sys.stderr.write("ERROR: %s: %s\n" % (type(exc).__name__, exc))
        _clean(path, here)
        return 1
    from tensorboard import version

    sys.stderr.write("TensorBoard %s at unix:%s (private: no TCP port)\n" % (version.VERSION, path))
    sys.stderr.flush()
    while not stop.wait(3600):
        pass
    _clean(path, here)
    return 0


def _clean(path, here):
    for name in (path, os.path.join(here, "tensorboard")):
        try:
            os.unlink(name)
        except OSError:
            pass
    try:
        os.rmdir(here)
    except OSError:
        pass


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # TensorBoard's loader threads must not keep a stopped instance alive"""
# (The closing quotes end the last line: the probe travels without its docstrings, found as triple quotes
# that start a line.)
SOCKET_NAME = "tb.sock"  # short: the whole path must fit sun_path
# sun_path: 108 bytes on Linux, 104 on macOS and the BSDs, the terminating NUL included
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104


def tbctl_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tbctl")


def own_dir_error(path: str) -> str | None:
    """Why `path` is not a directory only this user can use (owned by us, no access for group or others,
    not a symlink), or None. Checked on every use of a private instance's socket directory."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return "%s: %s" % (path, exc.strerror or exc)
    uid = current_uid()
    if stat.S_ISLNK(st.st_mode):
        return "%s is a symlink; refusing to use it" % path
    if not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % path
    if uid is not None and st.st_uid != uid:
        return "%s is owned by %s, not by %s; refusing to use it" % (path, username_of(st.st_uid), username_of(uid))
    if uid is not None and st.st_mode & 0o077:
        return "%s is open to other users (mode %o); refusing to use it" % (path, st.st_mode & 0o777)
    return None


def socket_base() -> str:
    """Where private instances' socket directories go: `$XDG_RUNTIME_DIR/tbctl` where there is a runtime dir
    of this user's (a tmpfs that logind makes 0700 and removes at logout), else under tbctl's cache dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and own_dir_error(runtime) is None:
        return os.path.join(runtime, "tbctl")
    return os.path.join(tbctl_cache_dir(), "sockets")


def script_python(path: str) -> str | None:
    """The Python a console script (pip's `bin/tensorboard`) runs with: its `#!` line, `#!/usr/bin/env
    python3`, or pip's `#!/bin/sh` + `'''exec' PYTHON "$0" "$@"` for an interpreter path too long for `#!`."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", "replace")
    except OSError:
        return None
    if not head.startswith("#!"):
        return None
    lines = head.splitlines()
    words = lines[0][2:].split()
    if words and words[0] == "/bin/sh" and len(lines) > 1 and lines[1].startswith("'''exec' "):
        import shlex

        words = shlex.split(lines[1][len("'''exec' "):])
    elif words and program_name(words[0]) == "env" and len(words) > 1:
        import shutil

        found = shutil.which(words[1])
        words = [found] if found else []
    return words[0] if words and os.path.isabs(words[0]) else None


def private_socket_dir(path: str) -> str | None:
    """The directory of a private instance's socket if `path` is one that tbctl made (SOCKET_NAME in a
    `tb-*` directory of socket_base()), else None."""
    here = os.path.dirname(path)
    if os.path.basename(path) != SOCKET_NAME or not os.path.basename(here).startswith("tb-"):
        return None
    return here if os.path.dirname(here) == socket_base() else None


def remove_private_socket(path: str) -> dict:
    """Remove a private instance's socket, its launcher and its directory (a forced kill leaves them):
    only in a directory tbctl made, that is ours."""
    here = private_socket_dir(path)
    if here is None:
        return {"removed": False, "error": "not a private instance's socket"}
    if not os.path.lexists(here):
        return {"removed": False}
    error = own_dir_error(here)
    if error:
        return {"removed": False, "error": error}
    for name in (SOCKET_NAME, "tensorboard"):
        try:
            os.unlink(os.path.join(here, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(here)
    except OSError as exc:
        return {"removed": False, "error": "%s: %s" % (here, exc.strerror or exc)}
    return {"removed": True}


def prepare_private(executable: str) -> dict:
    """A new 0700 socket directory holding the launcher, and the command line that runs it with the
    Python of `executable` (TensorBoard's flags go after it); `error` says why not. For a process that
    someone else starts (a Slurm step), and for launch_private."""
    import tempfile

    python = script_python(os.path.expanduser(executable))
    if python is None:
        return {"error": "cannot tell which Python %s runs with (it has no #! line naming one)" % executable}
    base = socket_base()
    for d in (os.path.dirname(base), base):
        error = private_dir(d)["error"] or own_dir_error(d)
        if error:
            return {"error": error}
    here = tempfile.mkdtemp(prefix="tb-", dir=base)  # 0700, and a name nobody can guess
    path = os.path.join(here, SOCKET_NAME)
    if len(os.fsencode(path)) >= SUN_PATH_MAX:
        os.rmdir(here)
        return {"error": "the socket path %s is longer than a unix socket address may be (%d bytes)"
                         % (path, SUN_PATH_MAX - 1)}
    launcher = os.path.join(here, "tensorboard")
    with os.fdopen(open_private(launcher, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
        f.write(PRIVATE_LAUNCHER + "\n")
    return {"socket": path, "argv": [python, launcher, "--unix_socket", path]}


def _unix_http_get(path: str, url_path: str, timeout: float) -> tuple:
    import http.client

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = sock  # connected already: request() sends on it
    return _get(conn, url_path)


# --- logs, HTTP, programs, files: what needs no backend ----------------------------------------------------


def _new_log(path: str) -> tuple:
    """(fd, path) of a log file that did not exist: `path`, else `NAME-2.log`, `NAME-3.log`… Two launches on
    one port within one second are given one name, and appending both to one file would mix (or, with a
    planted symlink, misdirect) their output; O_EXCL also refuses a symlink in the file's place."""
    stem, ext = os.path.splitext(path)
    for n in range(1, 1000):
        candidate = path if n == 1 else "%s-%d%s" % (stem, n, ext)
        try:
            return open_private(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND), candidate
        except FileExistsError:
            continue
    raise FileExistsError("no free log name like %s" % path)


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid`, or None where there are none (old Python or kernel, not Linux) or the pid is
    gone already (alive() then says so)."""
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # ESRCH: gone; ENOSYS: a kernel before 5.3
        return None


def _http_get(port: int, path: str, timeout: float, host: str = "127.0.0.1") -> tuple:
    import http.client

    return _get(http.client.HTTPConnection(host, port, timeout=timeout), path)


def _get(conn: Any, path: str) -> tuple:
    """(status, body) of `GET path` on `conn`, which is closed after."""
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def http_get(port: int, path: str, timeout: float = 2.0, host: str = "127.0.0.1") -> dict:
    import http.client

    try:
        status, body = _http_get(port, path, timeout, host)
        return {"status": status, "body": body}
    except (OSError, ValueError) as exc:  # RemoteDisconnected (closed without a word) is an OSError too
        return {"status": None, "error": str(exc)}
    except http.client.HTTPException as exc:  # it answered, but not in HTTP (BadStatusLine & co)
        return {"status": None, "not_http": True, "error": f"{type(exc).__name__}: {str(exc)[:80]}"}


def wait_http(port: int | None, path: str, timeout: float, host: str = "127.0.0.1",
              socket_path: str | None = None) -> dict:
    """Poll `GET path` on host:port (or on the unix socket `socket_path`) until it answers 200 or `timeout`
    runs out (for a server this probe did not start, e.g. a Slurm job step: the caller watches its process
    elsewhere between calls)."""
    started = time.monotonic()
    while True:
        try:
            if socket_path is not None:
                status, body = _unix_http_get(socket_path, path, 2.0)
            else:
                status, body = _http_get(port, path, 2.0, host)
            if status == 200:
                return {"ready": True, "body": body, "elapsed": time.monotonic() - started}
        except Exception:
            pass
        if time.monotonic() - started >= timeout:
            return {"ready": False, "elapsed": time.monotonic() - started}
        time.sleep(0.02)


def run(argv: list, timeout: float = 30.0, cwd: str | None = None) -> dict:
    """Run a fixed argv (no shell: every word is passed as it is) and return its exit status and output,
    for questions to a program on this host (Slurm's squeue, scontrol, scancel)."""
    import subprocess

    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=timeout, cwd=os.path.expanduser(cwd) if cwd else None, close_fds=True)
    except FileNotFoundError:
        return {"rc": None, "stdout": "", "stderr": "", "error": "%s: command not found" % argv[0]}
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": "", "error": "%s did not finish within %g s" % (argv[0], timeout)}
    except OSError as exc:
        return {"rc": None, "stdout": "", "stderr": "", "error": "%s: %s" % (argv[0], exc.strerror or exc)}
    return {"rc": res.returncode, "stdout": res.stdout.decode("utf-8", "replace"),
            "stderr": res.stderr.decode("utf-8", "replace"), "error": ""}


def tail(path: str, lines: int = 20) -> dict:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return {"text": "", "error": str(exc)}
    return {"text": "\n".join(text.splitlines()[-lines:])}


def remove_info_file(path: str) -> dict:
    """Remove a TensorBoard info file (and nothing else: the name is checked)."""
    if os.path.basename(os.path.dirname(path)) != ".tensorboard-info" or not os.path.basename(path).startswith("pid-"):
        return {"removed": False, "error": "not a TensorBoard info file"}
    try:
        os.remove(path)
        return {"removed": True}
    except FileNotFoundError:
        return {"removed": False}
    except OSError as exc:
        return {"removed": False, "error": exc.strerror or str(exc)}


# --- pulling a logdir (`up --pull`): what is there, and the bytes not yet mirrored ---------------------------


def pull_wanted(parts: list) -> bool:
    """The files TensorBoard reads from a logdir: event files, the projector's config beside them, and plugin
    assets under a run's `plugins/` directory. Anything else (checkpoints, datasets) stays on the host."""
    return "tfevents" in parts[-1] or parts[-1] == "projector_config.pbtxt" or "plugins" in parts[:-1]


_PULL_KNOWN = {}  # type: dict  # logdir -> (digest, known): what the caller will have mirrored after the last answer


def pull_digest(known: dict) -> str:
    """Names a `known` map, so an unchanged one need not be sent again (the caller computes it the same way)."""
    import hashlib

    return hashlib.sha256(json.dumps(known, sort_keys=True).encode()).hexdigest()[:24]


def pull_poll(logdir: str, known: dict | None = None, budget: int = 4 << 20, encoding: str = "zlib",
              digest: str | None = None) -> dict:
    """One poll of a pulled logdir: every wanted file with its identity, and the bytes the caller lacks.

    `known` maps a path (relative, `/`-separated) to the [dev, ino, size, mtime] the caller mirrored. Sent
    whole it costs ~100 bytes a file on every poll, so the answer's `next_digest` names what the caller will
    have once it applied the answer; a caller that has exactly that sends only `digest` next time, and gets
    `resend` if this probe does not hold it (a new connection). Event
    files are append-only: bytes are read from the known size on when the identity is the same and the file
    did not shrink, else from 0 (a new, replaced or shrunk file). Any other file is read whole when anything
    about it changed. At most `budget` bytes in all; a file whose bytes did not fit says `pending`.
    Unchanged files are only counted, so an idle poll answers in a few bytes. Nothing outside the logdir is
    read: the walk does not follow symlinks, symlinked files are skipped, and the file opened must be the
    one the walk found (same dev and inode), so a directory swapped for a symlink meanwhile is not followed."""
    import base64
    import zlib

    if known is None:
        cached = _PULL_KNOWN.get(logdir)
        if digest is None or cached is None or cached[0] != digest:
            return {"resend": True}
        known = cached[1]
    root = os.path.expanduser(logdir)
    if not os.path.isabs(root):
        root = os.path.join(os.path.expanduser("~"), root)
    root = os.path.realpath(root)
    answer = {"root": root, "now": time.time(), "exists": os.path.isdir(root), "files": [], "unchanged": 0,
              "gone": [], "pending": 0, "errors": []}
    left = max(0, int(budget))
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a symlinked directory is not entered
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            parts = rel.split("/")
            if not pull_wanted(parts):
                continue
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a symlink (maybe out of the logdir), a fifo, a socket
            seen.add(rel)
            mtime = st.st_mtime
            had = known.get(rel)
            same = bool(had) and had[0] == st.st_dev and had[1] == st.st_ino
            if "tfevents" in name:
                start = had[2] if same and st.st_size >= had[2] else 0
                if same and st.st_size == had[2]:
                    answer["unchanged"] += 1
                    continue
            else:
                if same and had[2] == st.st_size and had[3] == mtime:
                    answer["unchanged"] += 1
                    continue
                start = 0
            row = {"path": rel, "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime": mtime,
                   "offset": start, "length": 0, "data": "", "encoding": "raw"}
            want = st.st_size - start
            if "tfevents" not in name and want > budget:  # it could never be sent whole
                answer["errors"].append("%s: %d bytes, more than one poll may fetch; not pulled" % (rel, want))
                continue
            take = min(want, left) if "tfevents" in name or want <= left else 0
            if take > 0:
                try:
                    data = _read_same_file(full, st, start, take)
                except OSError as exc:
                    answer["errors"].append("%s: %s" % (rel, exc.strerror or exc))
                    continue
                left -= len(data)
                packed = zlib.compress(data, 6) if encoding == "zlib" else data
                if len(packed) >= len(data):
                    packed = data
                row.update(length=len(data), data=base64.b64encode(packed).decode("ascii"),
                           encoding="zlib" if packed is not data else "raw")
            answer["pending"] += want - row["length"]
            answer["files"].append(row)
    answer["gone"] = sorted(p for p in known if p not in seen)
    after = dict((p, v) for p, v in known.items() if p in seen)  # what the caller has once it applied this
    for row in answer["files"]:
        if "tfevents" in row["path"].rsplit("/", 1)[-1]:
            after[row["path"]] = [row["dev"], row["ino"], row["offset"] + row["length"], row["mtime"]]
        elif row["length"] == row["size"]:
            after[row["path"]] = [row["dev"], row["ino"], row["size"], row["mtime"]]
    answer["next_digest"] = pull_digest(after)
    _PULL_KNOWN[logdir] = (answer["next_digest"], after)
    return answer


def _read_same_file(path: str, found: os.stat_result, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of the file the walk found at `path` (OSError if it is another file now)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (found.st_dev, found.st_ino):
            raise OSError(0, "replaced while being read")
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while length > 0:
            chunk = os.read(fd, min(length, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            length -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def resolve_path(path: str, cwd: str | None = None) -> dict:
    """An absolute, symlink-free path as this host sees it (`~` expanded, relative to `cwd` or home).
    `exists`: it is an existing directory; `kind`: `directory`, `missing`, or `not a directory` (a file)."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(os.path.expanduser(cwd) if cwd else os.getcwd(), path)
    is_dir = os.path.isdir(path)
    kind = "directory" if is_dir else "not a directory" if os.path.exists(path) else "missing"
    return {"path": os.path.realpath(path), "exists": is_dir, "kind": kind}


# --- the probe of one process ------------------------------------------------------------------------------


class Probe:
    """What one process asks of this machine: through the backend chosen for it, and knowing the children
    it launched, which only it can reap (waitpid tells whether they live, and reaps them once they exit).
    serve() makes one for its connection; LocalHost holds one."""

    def __init__(self, backend: Backend | None = None, control: PosixControl | WindowsControl | None = None) -> None:
        self.backend = backend if backend is not None else default_backend()
        self.control = control if control is not None else default_control()
        self._last_launch: dict | None = None  # what the latest "launch" request started, for wait_launched
        # The wire protocol: each op name and what answers it, called with the request's args by name.
        self._ops: dict[str, Callable[..., Any]] = {
            "scan": self.scan, "holders": self.holders, "free_port": self.free_port,
            "find_tensorboard": find_tensorboard, "launch": self._launch_request, "send_signal": self.send_signal,
            "wait_gone": self.wait_gone, "wait_ready": self.wait_ready, "http_get": http_get, "tail": tail,
            "remove_info_file": remove_info_file, "resolve_path": resolve_path, "whoami": self.whoami,
            "alive": lambda pid, create_time, start_ticks=None: {"alive": self.alive(pid, create_time, start_ticks)},
            "ping": lambda: {}, "read_log": self.read_log, "private_dir": private_dir,
            "proc_info": lambda pid: {"info": self.backend.proc_info(pid)}, "run": run, "wait_http": wait_http,
            "launch_private": self.launch_private, "remove_private_socket": remove_private_socket,
            "prepare_private": prepare_private, "private_ready": self._private_ready,
            "wait_launched": self.wait_launched,
            "pull_poll": pull_poll,
        }

    def handle(self, op: str, args: dict) -> Any:
        """One request's answer: `op` called with `args` by name (KeyError for an op this probe lacks)."""
        return self._ops[op](**args)

    def alive(self, pid: int, create_time: float | None, start_ticks: int | None = None) -> bool:
        """True if `pid` is still the process that started at `create_time` (or, where the caller knows it,
        `start_ticks` after boot, which a wall-clock step does not move) and is not a zombie."""
        running = self.control.child_running(pid)  # our own child: no need to read /proc
        if running is not None:
            return running
        info = self.backend.proc_info(pid)
        if info is None or info["zombie"]:
            return False
        if start_ticks is not None and isinstance(info.get("start_ticks"), int):
            return info["start_ticks"] == start_ticks
        if create_time is not None and info["create_time"] is not None:
            return abs(info["create_time"] - create_time) < CREATE_TIME_SLACK
        return True

    def listening(self, ports: list | None = None, pids: list | None = None) -> list:
        """Every LISTEN TCP socket on `ports`, or of `pids`: never a mere client of a port."""
        return self.backend.listening(set(ports) if ports is not None else None, pids)

    def listens_on(self, pid: int, port: int) -> bool:
        """Whether `pid` or one of its descendants (a wrapper's child) holds a LISTEN socket on `port`. Asked of
        those processes' own sockets, which a user may always read (macOS refuses a normal user the
        system-wide list)."""
        return bool(self.backend.listening({port}, [pid]) or self.backend.listening({port}, self.backend.descendants(pid)))

    def holders(self, port: int) -> list:
        """Who LISTENs on `port`, with what we can tell about each process."""
        rows = []
        for sock in self.listening([port]):
            info = self.backend.proc_info(sock["pid"]) if sock["pid"] is not None else None
            row = dict(sock)
            row.update({
                "username": info["username"] if info else (
                    username_of(sock["uid"]) if sock.get("uid") is not None else None),
                "cmdline": info["cmdline"] if info else [],
                "create_time": info["create_time"] if info else None,
                "is_tensorboard": bool(info and tensorboard_args(info["cmdline"]) is not None),
            })
            rows.append(row)
        return rows

    def free_port(self, candidates: list, holders: bool = False) -> dict:
        """The first candidate port nobody listens on (either family) and that binds. With `holders`, also
        who holds each port skipped before it ("held": [[port, holders], ...]; the first candidate's alone
        when none is free), which the caller would otherwise ask for one port at a time."""
        taken: dict = {}
        for row in self.listening(candidates):
            taken.setdefault(row["port"], True)
        found = None
        for port in candidates:
            if port not in taken and bindable(port):
                found = port
                break
        answer: dict = {"port": found}
        if holders:
            skipped = candidates[:candidates.index(found)] if found is not None else candidates[:1]
            answer["held"] = [[port, self.holders(port)] for port in skipped]
        return answer

    def scan(self, extra_info_dirs: list | None = None) -> dict:
        """Every TensorBoard process (any user) and every info file, with the facts needed to judge liveness."""
        me = os.getpid()
        processes = []
        for pid in self.backend.pids():
            if pid == me:
                continue
            cmdline = self.backend.candidate_cmdline(pid)
            if not cmdline or tensorboard_args(cmdline) is None:
                continue
            info = self.backend.proc_info(pid)
            if info is None:
                continue
            processes.append(info)
        socks = self.listening(pids=[p["pid"] for p in processes if not p["zombie"]]) if processes else []
        by_user = None
        for p in processes:
            p["listen"] = [s for s in socks if s["pid"] == p["pid"]]
            # Another user's process, seen by a normal user: its sockets are hidden, but on Linux the socket
            # table still says which ports that user listens on.
            p["sockets_visible"] = p["zombie"] or self.backend.sockets_visible(p["pid"])
            p["user_listen_ports"] = None
            if not p["sockets_visible"]:
                by_user = self.backend.listen_ports_by_user() if by_user is None else by_user
                if by_user is not None:
                    p["user_listen_ports"] = by_user.get(p["username"], [])
            unix_socket = flag_value(tensorboard_args(p["cmdline"]) or [], "unix_socket")
            if unix_socket:  # a private instance: whether it holds its socket is what "serving" means
                p["unix_socket"] = unix_socket
                p["unix_listening"] = not p["zombie"] and self.backend.holds_unix([p["pid"]], unix_socket)
            # Resolve a relative --logdir against the process's own cwd here, where that cwd means something.
            logdir = flag_value(tensorboard_args(p["cmdline"]) or [], "logdir")
            p["logdir_abs"] = None
            if logdir and "://" not in logdir and p["cwd"] is not None:
                p["logdir_abs"] = os.path.realpath(os.path.join(p["cwd"], os.path.expanduser(logdir)))
        infos = []
        for d in info_dirs(extra_info_dirs):
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for name in names:
                if not (name.startswith("pid-") and name.endswith(".info")):
                    continue
                path = os.path.join(d, name)
                try:
                    owner = username_of(os.stat(path).st_uid)
                    with open(path) as f:
                        content = json.load(f)
                    error = None
                except (OSError, ValueError) as exc:
                    content, error, owner = None, str(exc), None
                pid = content.get("pid") if isinstance(content, dict) else None
                infos.append({
                    "path": path,
                    "owner": owner,
                    "content": content,
                    "error": error,
                    "pid_alive": self.alive(pid, None) if isinstance(pid, int) else False,
                    "pid_create_time": (
                        (self.backend.proc_info(pid) or {}).get("create_time") if isinstance(pid, int) else None),
                })
        return {"processes": processes, "info_files": infos, "user": self.user(), "now": time.time()}

    def launch(self, argv: list, log_path: str, cwd: str | None = None) -> dict:
        """Start `argv` detached (its own session, or on Windows its own process group and console: see the
        process control above), stdin from /dev/null, stdout and stderr appended to `log_path`."""
        import subprocess

        log_path = os.path.expanduser(log_path)
        log_dir = os.path.dirname(log_path)
        # tbctl's log dir is `<state dir>/logs` here and `~/.cache/tbctl/logs` on a remote: it and its parent
        # hold nothing but tbctl's files, so both are made private.
        ensure_private_dir(os.path.dirname(log_dir))
        ensure_private_dir(log_dir)
        fd, log_path = _new_log(log_path)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=os.path.expanduser(cwd) if cwd else None, close_fds=True,
                                    **self.control.popen_options())
        self.control.remember(proc)
        info = self.backend.proc_info(proc.pid)
        return {"pid": proc.pid, "create_time": info["create_time"] if info else time.time(), "log_path": log_path}

    def launch_private(self, executable: str, args: list, log_path: str, cwd: str | None = None) -> dict:
        """Launch TensorBoard (`executable`, with `args`) on a unix socket in a new 0700 directory, through
        the launcher above run with the script's own Python; `error` says why it cannot (nothing started)."""
        self._last_launch = None  # nothing for wait_launched, unless this starts something
        prepared = prepare_private(executable)
        if prepared.get("error"):
            return prepared
        path = prepared["socket"]
        argv = prepared["argv"] + list(args)
        try:
            answer = self._launch_request(argv, log_path, cwd)
        except BaseException:
            remove_private_socket(path)
            raise
        self._last_launch = dict(answer, socket=path, argv=argv)
        return self._last_launch
    def _launch_request(self, argv: list, log_path: str, cwd: str | None = None) -> dict:
        self._last_launch = None  # a launch that fails leaves nothing for wait_launched to wait on
        self._last_launch = self.launch(argv, log_path, cwd)
        return self._last_launch

    def wait_launched(self, port: int | None, path: str, timeout: float) -> dict:
        """wait_ready for what the latest "launch" request started: sent right behind that request, so a
        start and its readiness cost one round trip. With the process's facts ("info") once it is over."""
        last = self._last_launch
        if last is None:
            raise LookupError("the launch before this request started nothing")
        answer = self.wait_ready(last["pid"], last["create_time"], port, path, timeout, last.get("socket"))
        answer["info"] = self.backend.proc_info(last["pid"])
        return answer

    def send_signal(self, pid: int, create_time: float | None, sig: str) -> dict:
        """Send `sig` (SIGTERM: stop gracefully; SIGKILL: at once) to `pid` only if it is still the process
        first seen (pid-reuse safe: see the process control). Outcome: sent | gone | denied | protected."""
        if pid <= 1 or pid in (os.getpid(), os.getppid()):
            return {"outcome": "protected"}
        try:
            sent = self.control.send(pid, sig, lambda: self.alive(pid, create_time))
        except ProcessLookupError:
            return {"outcome": "gone"}
        except PermissionError:
            return {"outcome": "denied"}
        return {"outcome": "sent" if sent else "gone"}

    def wait_gone(self, procs: list, timeout: float) -> dict:
        """Wait until every (pid, create_time) has exited (zombies count as exited). Returns those still alive."""
        deadline = time.monotonic() + timeout
        remaining = [tuple(p) for p in procs]
        while True:
            remaining = [p for p in remaining if self.alive(p[0], p[1])]
            if not remaining or time.monotonic() >= deadline:
                return {"alive": [list(p) for p in remaining]}
            time.sleep(0.02)

    def wait_ready(self, pid: int, create_time: float | None, port: int | None, path: str, timeout: float,
                   socket_path: str | None = None) -> dict:
        """Poll `GET path` on 127.0.0.1:port until it answers 200 from a socket of `pid` (or of a child of
        it), the process dies, or time runs out. An answer from anyone else's socket (`reason: held`) means
        another process took the port between the check and TensorBoard's bind: TensorBoard's --port is
        readable by every user in its command line, so that may be on purpose.

        Done here, on the host, so a remote start costs one round trip, not one per poll.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.alive(pid, create_time):
                return {"ready": False, "reason": "exited", "elapsed": time.monotonic() - started}
            if socket_path is not None:
                private = self._private_ready(pid, socket_path, path)
                if private is not None:
                    return dict(private, elapsed=time.monotonic() - started)
                status, body = None, ""
            else:
                try:
                    status, body = _http_get(port, path, 2.0)
                except Exception:  # not answering yet, or something that is not HTTP holds the port meanwhile
                    status, body = None, ""
            if status == 200:
                if self.listens_on(pid, port):
                    return {"ready": True, "body": body, "elapsed": time.monotonic() - started}
                return {"ready": False, "reason": "held", "elapsed": time.monotonic() - started}
            if time.monotonic() >= deadline:
                return {"ready": False, "reason": "timeout", "elapsed": time.monotonic() - started}
            time.sleep(0.01)

    def _private_ready(self, pid: int, socket_path: str, path: str) -> dict | None:
        """A private instance's readiness (None: not answering yet): its socket answers `GET path`, the
        socket is the one `pid` (or a child) holds, its directory is still ours, and nothing in its process
        tree listens on TCP (a data server or plugin that did would undo the point)."""
        error = own_dir_error(os.path.dirname(socket_path))
        if error:
            return {"ready": False, "reason": "unsafe", "error": error}
        try:
            status, body = _unix_http_get(socket_path, path, 2.0)
        except Exception:
            return None
        if status != 200:
            return None
        tree = [pid] + self.backend.descendants(pid)
        if not self.backend.holds_unix(tree, socket_path):
            return {"ready": False, "reason": "held"}
        tcp = self.backend.listening(None, tree)
        if tcp:
            return {"ready": False, "reason": "tcp", "error": "it listens on TCP port %s"
                    % ", ".join(str(p) for p in sorted({s["port"] for s in tcp}))}
        return {"ready": True, "body": body}

    def read_log(self, path: str, offset: int | None = None, lines: int = 20, max_bytes: int = 256 * 1024,
                 pid: int | None = None, create_time: float | None = None) -> dict:
        """A log as it grows (`tbctl logs [-f]`): the last `lines` lines when `offset` is None, else what was
        appended since `offset` (from 0 again if the file shrank). `offset` in the answer is where the next
        read starts; it stops before a UTF-8 character cut in half. `alive` is checked *before* reading, so
        once it is False the text read includes everything the process wrote."""
        answer = {"alive": self.alive(pid, create_time) if pid is not None else None, "truncated": False}
        try:
            with open(os.path.expanduser(path), "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if offset is None:
                    start = max(0, size - 64 * 1024)
                elif offset > size:
                    start, answer["truncated"] = 0, True
                else:
                    start = offset
                f.seek(start)
                data = f.read(max_bytes if offset is not None else size - start)
        except OSError as exc:
            return dict(answer, text="", offset=offset or 0, size=0, error=exc.strerror or str(exc))
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):  # a lead byte whose sequence runs past the end
            byte = data[-back]
            if byte & 0xC0 != 0x80:
                need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
                if need > back:
                    cut = len(data) - back
                break
        text = data[:cut].decode("utf-8", "replace")
        if offset is None:  # whole lines, as the file has them; a window that began mid-line drops that line
            kept = text.splitlines(True)[1 if start > 0 else 0:]
            text = "".join(kept[-lines:]) if lines > 0 else ""
        return dict(answer, text=text, offset=start + cut, size=size)

    def user(self) -> str:
        """Who this process runs as, named as the backend names the owners of processes (on Windows, where
        there are no uids, psutil's `DOMAIN\\user`)."""
        uid = current_uid()
        if uid is not None:
            return username_of(uid)
        import getpass

        return (self.backend.proc_info(os.getpid()) or {}).get("username") or getpass.getuser()

    def whoami(self) -> dict:
        return {"user": self.user(), "home": os.path.expanduser("~"), "pid": os.getpid(),
                "psutil": self.backend.uses_psutil, "python": sys.version.split()[0],
                "cache_dir": tbctl_cache_dir()}


HELLO_SENTINEL = b"\x1etbctl-probe "  # the hello line's prefix: a login shell may have printed lines before it


def serve(stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """JSON lines: {"op", "args"} in, {"ok": result} or {"error": {"type", "message", "op"}} out, until EOF.
    The first line is the hello (whoami), after HELLO_SENTINEL. Requests may come several at once (the
    client does not wait for each answer): they are answered one by one, in order, and one that fails
    does not stop the next."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    probe = Probe()
    stdout.write(HELLO_SENTINEL.decode() + json.dumps({"ok": probe.whoami()}) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        op = None
        try:
            request = json.loads(line)
            op = request["op"]
            reply = {"ok": probe.handle(op, request.get("args") or {})}
        except Exception as exc:  # the client turns this into a ProbeError with the type and message
            reply = {"error": {"type": type(exc).__name__, "message": str(exc), "op": op}}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
