"""Test harness: a real ``wireguard-go`` in a fresh network namespace, and our Device
driven over a real UDP socket inside that namespace.

    namespace  sbwg-<pid>-<n>: lo up (127.0.0.1), interface <ifname> 10.99.0.1/24 and
               fd99::1/64 run by wireguard-go (peer: our key, allowed-ips 10.99.0.2/32 and
               fd99::2/128, endpoint our socket)
    our side   Device (10.99.0.2) + UDP socket on 127.0.0.1:<ephemeral> made in the
               namespace; ``Pump`` feeds datagrams in, sends what the Device returns, runs
               its timers.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from sunbeam.refnet import netns
from sunbeam.shared.proto.wireguard import Device, public_key

from .ippackets import echo_reply_for

THEIR_ADDR = "10.99.0.1"
OUR_ADDR = "10.99.0.2"
THEIR_ADDR6 = "fd99::1"
OUR_ADDR6 = "fd99::2"
LISTEN_PORT = 51820
_serial = itertools.count()


def _run(*args: str) -> str:
    res = subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


class WireGuardGo:
    """wireguard-go running one interface in its own fresh namespace."""

    def __init__(self, tmp: Path, our_public: bytes) -> None:
        for tool in ("wireguard-go", "wg", "ip"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (apt-get install wireguard-go wireguard-tools iproute2)")
        n = next(_serial)
        self.ns = f"sbwg-{os.getpid()}-{n}"
        self.ifname = f"wgt{os.getpid() % 100000}x{n}"[:15]  # the UAPI socket path is global
        self.private = os.urandom(32)
        self.public = public_key(self.private)
        self.our_public = our_public
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.log_path = tmp / f"{self.ifname}.log"

    def start(self) -> socket.socket:
        """Bring everything up; returns our UDP socket (bound inside the namespace)."""
        _run("ip", "netns", "add", self.ns)
        _run("ip", "-n", self.ns, "link", "set", "lo", "up")
        with netns.entered(self.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        our_port = self.sock.getsockname()[1]
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="verbose")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*netns.exec_prefix(self.ns), "wireguard-go", "-f", self.ifname],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 10
        while not Path(f"/var/run/wireguard/{self.ifname}.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go did not start: {self.log_path.read_text()}")
            time.sleep(0.02)
        keyfile = self.tmp / f"{self.ifname}.key"
        keyfile.write_text(base64.b64encode(self.private).decode() + "\n")
        keyfile.chmod(0o600)
        _run(*netns.exec_prefix(self.ns), "wg", "set", self.ifname, "private-key", str(keyfile),
             "listen-port", str(LISTEN_PORT), "peer", base64.b64encode(self.our_public).decode(),
             "allowed-ips", f"{OUR_ADDR}/32,{OUR_ADDR6}/128", "endpoint", f"127.0.0.1:{our_port}")
        _run("ip", "-n", self.ns, "addr", "add", f"{THEIR_ADDR}/24", "dev", self.ifname)
        _run("ip", "-n", self.ns, "addr", "add", f"{THEIR_ADDR6}/64", "dev", self.ifname, "nodad")
        _run("ip", "-n", self.ns, "link", "set", self.ifname, "up")
        return self.sock

    def wg_show(self, what: str) -> str:
        return _run(*netns.exec_prefix(self.ns), "wg", "show", self.ifname, what)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if netns.exists(self.ns):
            _run("ip", "netns", "del", self.ns)


class Pump:
    """Our side of the tunnel: datagrams <-> Device, timers, optional echo responder."""

    def __init__(self, device: Device, sock: socket.socket, peer_key: bytes,
                 peer_addr: tuple[str, int] = ("127.0.0.1", LISTEN_PORT), answer_echo: bool = False,
                 under_load: bool = False) -> None:
        self.device = device
        self.sock = sock
        self.peer_key = peer_key
        self.peer_addr = peer_addr
        self.answer_echo = answer_echo
        self.under_load = under_load
        self.received: list[bytes] = []  # IP packets from the tunnel (echo requests answered too)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_packets(self, packets: list[bytes]) -> None:
        with self.lock:
            out = self.device.encapsulate(self.peer_key, packets, time.time())
        for msg in out:
            self.sock.sendto(msg, self.peer_addr)

    def poll(self, timeout: float) -> None:
        """Handle whatever arrives within ``timeout`` seconds (at least one recv)."""
        self.sock.settimeout(timeout)
        try:
            data, src = self.sock.recvfrom(65535)
        except TimeoutError:
            data, src = None, None
        batch = [data] if data is not None else []
        self.sock.setblocking(False)
        try:
            while len(batch) < 256:
                batch.append(self.sock.recvfrom(65535)[0])
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        with self.lock:
            now = time.time()
            src_bytes = f"{src[0]}:{src[1]}".encode() if src else b""
            results = (self.device.decapsulate_batch(batch, now, under_load=self.under_load, src=src_bytes)
                       if batch else [])
            replies: list[bytes] = []
            for res in results:
                if res.error:
                    self.errors.append(res.error)
                for msg in res.to_peer:
                    self.sock.sendto(msg, self.peer_addr)
                self.received.extend(res.to_tunnel)
                if self.answer_echo:
                    replies.extend(r for r in map(echo_reply_for, res.to_tunnel) if r is not None)
            if replies:
                for msg in self.device.encapsulate(self.peer_key, replies, now):
                    self.sock.sendto(msg, self.peer_addr)
            due = self.device.next_timer()
            if due is not None and due <= now:
                for _key, msgs in self.device.update_timers(now):
                    for msg in msgs:
                        self.sock.sendto(msg, self.peer_addr)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.poll(0.05)
        return predicate()

    def start_thread(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.poll(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
