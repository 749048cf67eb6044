#!/usr/bin/env python3
"""A userspace delay line for TCP (this kernel has no netem): listen on 127.0.0.1, forward to a loopback or
test-namespace address, and hold every chunk for a fixed one-way delay in each direction.

    python bench/delay_relay.py --rtt 50 --to 127.0.0.1:2222 [--to 127.0.0.1:2223 …] [--max-seconds 900]

prints one line `ready PORT [PORT …]` (the listening ports, in --to order, chosen by the kernel) once it
listens, then relays until --max-seconds have passed, --max-conns connections were accepted, its parent
exits, or SIGTERM/SIGINT. stdlib only (asyncio), one process for every --to.

What it models: each direction is a FIFO; a chunk read at t is written at t + rtt/2, so byte order is kept
and the link's bandwidth is not limited (only the delay is). A TCP handshake costs one RTT before the
client's first byte can leave, and the server accepts half an RTT later: the relay connects to the target
1.5 × RTT after it accepts (the client's early bytes wait for it), so the server's first byte reaches the
client 2 RTT after connect(), as on a real link (--no-handshake: connect at once). Loss, jitter and a
bandwidth limit are not modelled. Used from Python: `with DelayRelay([(host, port)], rtt_ms=50) as ports:`.

It also counts round trips, as the client's flights: a burst from the client that follows the server's
answer (data the relay has delivered to the client since the client last sent), or a connection's first
burst. SIGUSR1 prints `flights N` (the total over every connection so far; DelayRelay.flights()).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Only ever loopback, or the throwaway network namespaces' range (tests/support/sshd.py OWN_NET).
ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.231.0.0/16"))
CHUNK = 1 << 16
QUEUE_CHUNKS = 256  # per direction: at most 16 MiB in flight, then the reader waits (back-pressure)


def allowed(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name could resolve anywhere: refuse it
    return any(addr in net for net in ALLOWED)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the delay is ours alone, not Nagle's


FLIGHTS = [0]  # the client's flights, over every connection
TRACE = bool(os.environ.get("DELAY_RELAY_TRACE"))  # each flight on stderr: where the round trips go


class _Turn:
    """Whose turn a connection is at: the client's next burst is a new flight once it has been answered."""

    def __init__(self) -> None:
        self.answered = True  # the first burst is a flight

    def client_sent(self, size: int = 0) -> None:
        if self.answered:
            FLIGHTS[0] += 1
            self.answered = False
            if TRACE:
                print(f"trace {time.monotonic():.3f} conn {id(self) % 10000} flight {FLIGHTS[0]} ({size} bytes)",
                      file=sys.stderr, flush=True)

    def client_got(self) -> None:
        self.answered = True


async def _pipe(reader: asyncio.StreamReader, writer_ready: asyncio.Future[asyncio.StreamWriter], delay: float,
                on_read: Callable[[int], None] = lambda size: None, on_written: Callable[[], None] = lambda: None) -> None:
    """Read chunks as they come, write each `delay` seconds after it was read, in order; EOF likewise."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                on_read(len(data))
                await queue.put((loop.time() + delay, data))
        except (ConnectionError, OSError):
            pass
        await queue.put((loop.time() + delay, b""))

    async def write() -> None:
        writer = await writer_ready
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            on_written()
            await writer.drain()

    rtask = asyncio.ensure_future(read())
    try:
        await write()
    finally:
        rtask.cancel()


async def _serve_one(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter, target: tuple[str, int],
                     one_way: float, handshake: bool) -> None:
    _nodelay(cwriter)
    loop = asyncio.get_running_loop()
    upstream: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
    downstream: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
    downstream.set_result(cwriter)
    swriter = None
    up_task = None
    turn = _Turn()
    try:
        if handshake:
            await asyncio.sleep(3 * one_way)  # SYN, SYN-ACK, then the ACK with the client's first bytes
        sreader, swriter = await asyncio.open_connection(*target)
        _nodelay(swriter)
        upstream.set_result(swriter)
        up_task = asyncio.ensure_future(_pipe(creader, upstream, one_way, on_read=turn.client_sent))
        down_task = asyncio.ensure_future(_pipe(sreader, downstream, one_way, on_written=turn.client_got))
        await asyncio.gather(up_task, down_task, return_exceptions=True)
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (cwriter, swriter):
            if w is not None:
                w.close()


async def relay(targets: list[tuple[str, int]], rtt_ms: float, max_seconds: float, max_conns: int,
                handshake: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result("signal"))
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"flights {FLIGHTS[0]}", flush=True))
    one_way, accepted, parent = rtt_ms / 2000.0, 0, os.getppid()
    tasks: set[asyncio.Task[None]] = set()

    def handler(target: tuple[str, int]):  # type: ignore[no-untyped-def]
        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            if accepted > max_conns:
                w.close()
                stop.done() or stop.set_result("max-conns")
                return
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await _serve_one(r, w, target, one_way, handshake)
            except asyncio.CancelledError:
                pass  # stopping: connections still open are cut
            finally:
                tasks.discard(task)
        return on_client

    servers = [await asyncio.start_server(handler(t), "127.0.0.1", 0, backlog=256) for t in targets]
    print("ready " + " ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    deadline = time.monotonic() + max_seconds
    while not stop.done():
        if time.monotonic() > deadline:
            break
        if os.getppid() != parent:  # the bench died without stopping us
            break
        await asyncio.wait([stop], timeout=0.5)
    for s in servers:
        s.close()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not allowed(host):
        raise argparse.ArgumentTypeError(f"{host!r}: only loopback or 10.231.0.0/16 addresses, as IPs")
    return host, int(port)


class DelayRelay:
    """The relay as a child process: `with DelayRelay([(h, p), …], rtt_ms=50) as ports:` (ports in order).
    Stopped by pid on exit; bounded by max_seconds even if this process is killed."""

    def __init__(self, targets: list[tuple[str, int]], rtt_ms: float, *, max_seconds: float = 900,
                 max_conns: int = 20000, handshake: bool = True) -> None:
        for host, _ in targets:
            if not allowed(host):
                raise ValueError(f"refusing to relay to {host}")
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--rtt", str(rtt_ms), "--max-seconds",
                     str(max_seconds), "--max-conns", str(max_conns), *(["--no-handshake"] if not handshake else [])]
        for host, port in targets:
            self.argv += ["--to", f"{host}:{port}"]
        self.proc: subprocess.Popen[str] | None = None
        self.ports: list[int] = []

    def __enter__(self) -> list[int]:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.__exit__()
            raise RuntimeError(f"delay relay did not start: {line}")
        self.ports = [int(p) for p in line[1:]]
        return self.ports

    def flights(self) -> int:
        """The client flights counted so far, over every connection through the relay."""
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)  # our unreaped child: the pid cannot have been reused
        line = self.proc.stdout.readline().split()
        if line[:1] != ["flights"]:
            raise RuntimeError(f"delay relay answered {line}")
        return int(line[1])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # our unreaped child: the pid cannot have been reused
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", type=parse_target, action="append", required=True, metavar="IP:PORT")
    ap.add_argument("--rtt", type=float, required=True, help="round-trip time to add, ms (half each way)")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop after this long (default 900)")
    ap.add_argument("--max-conns", type=int, default=20000, help="stop after accepting this many (default 20000)")
    ap.add_argument("--no-handshake", action="store_true", help="connect to the target at once")
    args = ap.parse_args()
    asyncio.run(relay(args.to, args.rtt, args.max_seconds, args.max_conns, not args.no_handshake))


if __name__ == "__main__":
    main()
