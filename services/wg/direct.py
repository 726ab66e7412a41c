"""A worker's direct sockets: its own UDP socket per peer with a trusted direct path (issue 20).

With the udp service's ``SUNBEAM_DIRECT_SOCKETS`` on, each `PeerPath` carries udp's port:
the worker then opens a socket bound to that same port (``SO_REUSEPORT``) and
``connect()``-ed to the peer's trusted ``ip:port`` (`UdpSocket.connected`), so the kernel
hands it that peer's datagrams, and it sends the peer's datagrams itself: one ZeroMQ hop
fewer each way (proxy -> worker -> kernel instead of proxy -> worker -> udp -> kernel).

A peer has a socket for its trusted address, and while that path is trusted, one more for
the address its authenticated datagrams come from when that differs (the peer's own choice
of our address can make the two ways use different addresses, e.g. a peer on this host
sending from 192.0.2.1 while we reach it at 127.0.0.1): that one only receives. They are
reopened when an address or udp's port changes, and closed when the path goes back to DERP
(``addr=""``), when its trust runs out without a word from udp (the worker's sweep, e.g.
while udp is restarting), when the peer leaves the netmap, and at stop. A failed open is counted (``direct.open_failed``) and the peer's datagrams go
through udp as before. After a kill -9 of the worker the kernel closes its sockets, and the
peer's datagrams reach udp's wildcard socket again, which routes them to the restarted
worker as ever.

What arrives on a peer's socket is split by `classify`: that peer's WireGuard messages for
this worker (transport messages whose receiver index is ours, a GRO burst of them whole;
responses and cookie replies to our indices; initiations) are the worker's; everything
else -- disco (magic ``TS💬``), STUN, a datagram from another source (only possible in the
instant between bind and connect, when the socket is still one of the port's unconnected
sockets), another worker's index -- goes to udp as `UdpForwarded`, which handles it as if
its own socket had received it.

Counters (the worker's health reply): ``direct.opened``, ``direct.closed``,
``direct.open_failed``, ``direct.to_udp`` (datagrams forwarded), and the socket's own
``direct.rx.*`` / ``direct.tx.*`` (`udpsock`), ``direct.tx.econnrefused`` and
``direct.rx.error.ECONNREFUSED`` among them (an ICMP error after the peer's port closed:
counted; the socket stays).

Ownership: the worker's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sunbeam.shared.proto.discohead import looks_like_disco
from sunbeam.shared.proto.wireguard import split_segments, transport_run_index
from sunbeam.shared.runtime import RateLimitedLog
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import worker_of_index

__all__ = ["DirectSockets", "PrefixedCounters", "classify"]

RECV_BUDGET = 64  # recvmsg calls per readable event (the poll is level-triggered)
RECV_BYTES = 256 * 1024  # and at most this much, as the worker's inbox (INBOX_BYTES)
MAX_PER_PEER = 4  # sockets: the trusted address and up to 3 other sources
SOURCE_IDLE = 12.0  # s: a source's socket that received nothing this long is closed
RETRY_AFTER = 5.0  # s: after a failed open, before trying that address and port again

_TYPE_INIT, _TYPE_RESP, _TYPE_COOKIE, _TYPE_DATA = (bytes((t, 0, 0, 0)) for t in (1, 2, 3, 4))


class PrefixedCounters(Counters):
    """`Counters` that adds to another one under ``prefix`` (the socket's ``rx.*`` / ``tx.*``
    as the worker's ``direct.rx.*`` / ``direct.tx.*``)."""

    def __init__(self, inner: Counters, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def incr(self, name: str, n: int = 1) -> None:
        self.inner.incr(self.prefix + name, n)

    def __getitem__(self, name: str) -> int:
        return self.inner[self.prefix + name]

    def snapshot(self) -> dict[str, int]:
        p = self.prefix
        return {k[len(p):]: v for k, v in self.inner.snapshot().items() if k.startswith(p)}


def is_ours(pkt: bytes, worker: int) -> bool:
    """A WireGuard message this worker handles: an initiation (which `Worker` forwards to its
    owner if need be), or a response / cookie reply / transport message to one of our indices."""
    head = pkt[:4]
    if head == _TYPE_DATA:
        return len(pkt) >= 32 and worker_of_index(int.from_bytes(pkt[4:8], "little")) == worker
    if head == _TYPE_INIT:
        return len(pkt) == 148
    if head == _TYPE_RESP:
        return len(pkt) == 92 and worker_of_index(int.from_bytes(pkt[8:12], "little")) == worker
    if head == _TYPE_COOKIE:
        return len(pkt) == 64 and worker_of_index(int.from_bytes(pkt[4:8], "little")) == worker
    return False


def classify(bursts: list[tuple[bytes, str, int]], peer: str, worker: int) -> tuple[
        list[bytes], list[int], dict[str, list[bytes]]]:
    """Split what a peer's socket received: (the worker's entries, their segment sizes -- a
    nonzero one is a GRO burst of our transport messages, whole --, and {src: datagrams} for
    udp). Order is kept within each part."""
    mine: list[bytes] = []
    sizes: list[int] = []
    other: dict[str, list[bytes]] = {}
    for data, src, size in bursts:
        if src != peer:
            other.setdefault(src, []).extend(split_segments(data, size) if size else [data])
            continue
        if size:
            index = transport_run_index(data, size)
            if index is not None and worker_of_index(index) == worker:
                mine.append(data)
                sizes.append(size)
                continue
            datagrams = split_segments(data, size)
        else:
            datagrams = [data]
        for pkt in datagrams:
            if not looks_like_disco(pkt) and is_ours(pkt, worker):
                mine.append(pkt)
                sizes.append(0)
            else:
                other.setdefault(src, []).append(pkt)
    return mine, sizes, other


class DirectSockets:
    """Per-peer connected sockets of one worker (see the module docstring)."""

    def __init__(self, loop: Any, counters: Counters, log: RateLimitedLog, worker: int,
                 on_received: Callable[[bytes, UdpSocket], None]) -> None:
        """``on_received(peer_key, sock)``: ``sock`` is readable (or has an error)."""
        self.loop, self.counters, self.log, self.worker = loop, counters, log, worker
        self.on_received = on_received
        self.sock_counters = PrefixedCounters(counters, "direct.")
        self.by_peer: dict[bytes, dict[str, UdpSocket]] = {}
        self.by_addr: dict[str, UdpSocket] = {}
        self.trusted: dict[bytes, str] = {}
        """peer -> its trusted address while it has a direct path with a port."""
        self.last_rx: dict[str, float] = {}
        self.failed: dict[tuple[str, int], float] = {}
        """(addr, port) -> when opening a socket for it failed (retried after RETRY_AFTER)."""

    def addrs(self, peer_key: bytes) -> dict[str, UdpSocket]:
        return self.by_peer.get(peer_key) or {}

    def set_path(self, peer_key: bytes, direct: str, port: int, now: float) -> None:
        """The peer's trusted address (`PeerPath`): a socket connected to it on ``port``;
        ``direct`` "" or ``port`` 0: none at all. A change of port closes every socket of
        the peer, a change of address the old trusted one's (sources stay until idle)."""
        cur = self.by_peer.get(peer_key, {})
        if not (direct and port) or any(sock.port != port for sock in cur.values()):
            self.close(peer_key)
        elif self.trusted.get(peer_key, direct) != direct:
            self._close(peer_key, self.trusted[peer_key])
        if direct and port:
            self.trusted[peer_key] = direct
            self._open(peer_key, direct, port, now)
        else:
            self.trusted.pop(peer_key, None)

    def add_source(self, peer_key: bytes, src: str, port: int, now: float) -> None:
        """The peer's authenticated datagrams came through udp from ``src``, not an address
        we have a socket for: one more socket (receive only), at most `MAX_PER_PEER`."""
        if peer_key in self.trusted and len(self.by_peer.get(peer_key, ())) < MAX_PER_PEER:
            self._open(peer_key, src, port, now)

    def sweep(self, peer_key: bytes, trusted: bool, now: float) -> None:
        """Close the peer's sockets if its path is no longer ``trusted``, else those of
        sources (not the trusted address) that received nothing for `SOURCE_IDLE` s."""
        if not trusted:
            self.close(peer_key)
            self.trusted.pop(peer_key, None)
            return
        direct = self.trusted.get(peer_key)
        for addr in list(self.by_peer.get(peer_key, {})):
            if addr != direct and now - self.last_rx.get(addr, 0.0) > SOURCE_IDLE:
                self._close(peer_key, addr)

    def _open(self, peer_key: bytes, addr: str, port: int, now: float) -> None:
        if addr in self.by_peer.get(peer_key, {}):
            return
        if now - self.failed.get((addr, port), -RETRY_AFTER) < RETRY_AFTER:
            return
        try:
            sock = UdpSocket.connected(port, addr, self.sock_counters)
        except (OSError, ValueError) as exc:
            self.failed[(addr, port)] = now
            self.counters.incr("direct.open_failed")
            self.log.warning("direct_open", "direct_open_failed", addr=addr, port=port, error=str(exc))
            return
        self.failed.pop((addr, port), None)
        self.by_peer.setdefault(peer_key, {})[addr] = sock
        self.by_addr[addr] = sock
        self.last_rx[addr] = now
        self.loop.on_readable(sock, lambda s, key=peer_key: self.on_received(key, s))
        self.counters.incr("direct.opened")

    def _close(self, peer_key: bytes, addr: str) -> None:
        socks = self.by_peer.get(peer_key, {})
        sock = socks.pop(addr, None)
        if not socks:
            self.by_peer.pop(peer_key, None)
        if sock is None:
            return
        if self.by_addr.get(addr) is sock:
            del self.by_addr[addr]
            self.last_rx.pop(addr, None)
        self.loop.remove_reader(sock)
        sock.close()
        self.counters.incr("direct.closed")

    def close(self, peer_key: bytes) -> None:
        """Close every socket of the peer."""
        for addr in list(self.by_peer.get(peer_key, {})):
            self._close(peer_key, addr)

    def close_all(self) -> None:
        for key in list(self.by_peer):
            self.close(key)
        self.trusted.clear()

    def receive(self, sock: UdpSocket, now: float) -> tuple[list[bytes], list[int], dict[str, list[bytes]]]:
        """Read what ``sock`` has (bounded) and `classify` it."""
        self.last_rx[sock.peer] = now
        bursts = sock.recv_bursts(RECV_BUDGET, RECV_BYTES)
        return classify(bursts, sock.peer, self.worker)
