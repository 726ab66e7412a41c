"""Test harness: our `TcpStack` against the Linux kernel's TCP through a TUN device.

    namespace  sbtcp-<pid>-<n> (fresh; deleted in `stop`): lo up, TUN device
               ``sbtcp<n>`` (IFF_TUN | IFF_NO_PI, MTU 1280): 10.77.0.1/24 and
               fd00:77::1/64 (nodad); the kernel routes 10.77.0.2 / fd00:77::2 into it
    our side   the TUN fd (non-blocking, opened inside the namespace): `Driver` reads the
               kernel's IP packets, feeds our stack, writes what it polls, runs its timers;
               an `Impairer` per direction may drop / reorder / duplicate them
    kernel     plain Python sockets made inside the namespace, served by threads
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable

from sunbeam.refnet import netns
from sunbeam.shared.proto.tcp import TcpStack

from .link import Impairer

KERNEL4, OURS4 = "10.77.0.1", "10.77.0.2"
KERNEL6, OURS6 = "fd00:77::1", "fd00:77::2"
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
_serial = itertools.count()


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {res.stderr.strip()}")


class KernelNet:
    """A namespace with a TUN device whose other end is us."""

    def __init__(self) -> None:
        n = next(_serial)
        self.ns = f"sbtcp-{os.getpid()}-{n}"
        self.ifname = f"sbtcp{os.getpid() % 10000}x{n}"[:15]
        self.fd = -1

    def start(self) -> int:
        _ip("netns", "add", self.ns)
        try:
            _ip("-n", self.ns, "link", "set", "lo", "up")
            with netns.entered(self.ns):
                self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
                fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", self.ifname.encode(), IFF_TUN | IFF_NO_PI))
            _ip("-n", self.ns, "addr", "add", f"{KERNEL4}/24", "dev", self.ifname)
            _ip("-n", self.ns, "addr", "add", f"{KERNEL6}/64", "dev", self.ifname, "nodad")
            _ip("-n", self.ns, "link", "set", self.ifname, "mtu", "1280", "txqueuelen", "4000", "up")
        except Exception:
            self.stop()
            raise
        return self.fd

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        with netns.entered(self.ns):
            return socket.socket(family, socket.SOCK_STREAM)

    def stop(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if netns.exists(self.ns):
            _ip("netns", "del", self.ns)


class KernelPeer(threading.Thread):
    """One kernel socket, served in a thread: sends ``data`` (then shuts down its side) and
    hashes everything it receives until EOF."""

    def __init__(self, sock: socket.socket, data: bytes, *, listening: bool, connect_to=None) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.listening, self.connect_to = sock, data, listening, connect_to
        self.received = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            if self.listening:
                self.sock.settimeout(60)
                conn, _ = self.sock.accept()
            else:
                conn = self.sock
                conn.settimeout(60)
                conn.connect(self.connect_to)
            conn.settimeout(120)
            with conn:
                sender = threading.Thread(target=self._send, args=(conn,), daemon=True)
                sender.start()
                buf = bytearray(1 << 18)
                while True:
                    n = conn.recv_into(buf)
                    if not n:
                        break
                    self.received += n
                    self.digest.update(memoryview(buf)[:n])
                sender.join(120)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.done.set()

    def _send(self, conn: socket.socket) -> None:
        try:
            if self.data:
                conn.sendall(self.data)
            conn.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class Driver:
    """Runs our stack against the TUN fd until ``done()``, with optional impairment."""

    def __init__(self, stack: TcpStack, fd: int, *, to_us: Impairer | None = None,
                 to_kernel: Impairer | None = None) -> None:
        self.stack, self.fd = stack, fd
        self.to_us, self.to_kernel = to_us, to_kernel
        self.written = self.read_packets = 0

    def run(self, done: Callable[[], bool], on_events: Callable[[list, float], None],
            app: Callable[[float], None], timeout: float) -> None:
        stack, fd = self.stack, self.fd
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("transfer did not finish in time")
            batch = []
            for _ in range(512):
                try:
                    batch.append(os.read(fd, 4096))
                except BlockingIOError:
                    break
            self.read_packets += len(batch)
            if self.to_us is not None:
                batch = self.to_us(batch) if batch else self.to_us.flush()
            if batch:
                stack.receive(batch, now)
            t = stack.next_timer()
            if t is not None and t <= now:
                stack.handle_timer(now)
            events = stack.events()
            if events:
                on_events(events, now)
            app(now)
            out = stack.poll(now)
            if self.to_kernel is not None:
                out = self.to_kernel(out) if out else self.to_kernel.flush()
            for pkt in out:
                try:
                    os.write(fd, pkt)
                except BlockingIOError:
                    pass
            self.written += len(out)
            if not batch and not out:
                t = stack.next_timer()
                wait = 0.005 if t is None else min(max(t - time.monotonic(), 0.0), 0.005)
                select.select([fd], [], [], wait)


class OurEnd:
    """Our application on one connection: accepts a request (when listening), hashes what it
    reads, sends ``data`` and shuts down after it; finished at `Closed` (or `Reset`)."""

    def __init__(self, stack: TcpStack, data: bytes, conn_id: int | None = None) -> None:
        self.stack, self.data, self.conn_id = stack, data, conn_id
        self.sent = self.received = 0
        self.digest = hashlib.sha256()
        self.events: list = []
        self.closed = self.eof = self.connected = False
        self.reset: str | None = None
        self.started = self.finished = 0.0

    def on_events(self, events: list, now: float) -> None:
        from sunbeam.shared.proto.tcp import (
            Closed,
            Connected,
            ConnectionRequest,
            PeerFinished,
            Reset,
        )
        for ev in events:
            self.events.append(ev)
            if isinstance(ev, ConnectionRequest) and self.conn_id is None:
                self.conn_id = ev.conn_id
                self.stack.accept(ev.conn_id)
            elif isinstance(ev, Connected):
                self.connected = True
                self.started = now
            elif isinstance(ev, PeerFinished):
                self.eof = True
            elif isinstance(ev, Reset):
                self.reset = ev.reason
            elif isinstance(ev, Closed):
                self.closed = True
                self.finished = now

    def app(self, now: float) -> None:
        cid = self.conn_id
        if cid is None or not self.connected or self.closed:
            return
        stack = self.stack
        while True:
            d = stack.read(cid, 1 << 20)
            if not d:
                break
            self.received += len(d)
            self.digest.update(d)
        if self.sent < len(self.data) or (self.sent == 0 and not self.data):
            if self.data:
                self.sent += stack.send(cid, memoryview(self.data)[self.sent:self.sent + (1 << 18)], now)
            if self.sent == len(self.data):
                stack.shutdown(cid, now)
                self.sent += 0 if self.data else 1

    def done(self) -> bool:
        return self.closed
