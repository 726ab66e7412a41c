"""A worker's direct sockets (services/wg/direct.py, issue 20 item 2): which received
datagrams are the worker's and which go to udp, and the sockets' lifecycle as the peer's
path changes, lapses, or the peer's source differs -- with real sockets on loopback."""

from __future__ import annotations

import socket
import time

import pytest
from sunbeam.services.wg.direct import (
    RETRY_AFTER,
    SOURCE_IDLE,
    DirectSockets,
    PrefixedCounters,
    classify,
)
from sunbeam.shared.proto import disco
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import make_index

PEER = b"P" * 32


def le(n: int) -> bytes:
    return n.to_bytes(4, "little")


def transport(worker: int, i: int = 0, size: int = 64) -> bytes:
    return le(4) + le(make_index(worker, 3)) + i.to_bytes(8, "little") + b"t" * (size - 16)


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[int, object] = {}

    def on_readable(self, source, handler) -> None:
        self.readers[source.fileno()] = handler

    def remove_reader(self, source) -> None:
        del self.readers[source.fileno()]


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def warning(self, *args, **kv) -> None:
        self.lines.append((args, kv))


@pytest.fixture()
def wild():
    s = UdpSocket(0, Counters(), reuse_port=True)  # the udp service's
    yield s
    s.close()


@pytest.fixture()
def peers():
    socks = []
    for _ in range(2):
        p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        p.bind(("127.0.0.1", 0))
        p.settimeout(5)
        socks.append(p)
    yield socks
    for p in socks:
        p.close()


def text(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


def make(counters: Counters | None = None, worker: int = 1):
    loop, got = FakeLoop(), []
    d = DirectSockets(loop, counters or Counters(), Log(), worker, lambda key, s: got.append((key, s)))  # type: ignore[arg-type]
    return d, loop, got


# -- classify ---------------------------------------------------------------------------

def test_classify_keeps_our_wireguard_and_sends_the_rest_to_udp():
    peer = "127.0.0.1:1000"
    ours, theirs = transport(1, 1), transport(0, 2)
    ping = disco.MAGIC + bytes(80)
    init = le(1) + le(7) + bytes(140)
    resp_ours = le(2) + le(make_index(0, 1)) + le(make_index(1, 2)) + bytes(80)
    resp_theirs = le(2) + le(make_index(1, 1)) + le(make_index(0, 2)) + bytes(80)
    cookie = le(3) + le(make_index(1, 4)) + bytes(56)
    stun = b"\x01\x01" + bytes(30)
    burst = b"".join(transport(1, i, 100) for i in range(3))
    mixed = transport(1, 0, 100) + transport(0, 1, 100)
    bursts = [(ours, peer, 0), (ping, peer, 0), (theirs, peer, 0), (init, peer, 0), (resp_ours, peer, 0),
              (resp_theirs, peer, 0), (cookie, peer, 0), (stun, peer, 0), (burst, peer, 100), (mixed, peer, 100),
              (ours, "127.0.0.1:2000", 0)]
    mine, sizes, other = classify(bursts, peer, 1)
    assert mine == [ours, init, resp_ours, cookie, burst, transport(1, 0, 100)]
    assert sizes == [0, 0, 0, 0, 100, 0]
    assert other == {peer: [ping, theirs, resp_theirs, stun, transport(0, 1, 100)], "127.0.0.1:2000": [ours]}


def test_prefixed_counters_add_to_the_workers():
    inner = Counters()
    c = PrefixedCounters(inner, "direct.")
    c.incr("rx.datagrams", 3)
    assert inner.snapshot() == {"direct.rx.datagrams": 3} and c["rx.datagrams"] == 3
    assert c.snapshot() == {"rx.datagrams": 3}


# -- lifecycle --------------------------------------------------------------------------

def test_path_opens_a_connected_socket_that_gets_the_peers_datagrams(wild, peers):
    d, loop, got = make()
    a = peers[0]
    d.set_path(PEER, text(a), wild.port, 0.0)
    sock = d.by_addr[text(a)]
    assert sock.peer == text(a) and list(loop.readers) == [sock.fileno()]
    a.sendto(transport(1), ("127.0.0.1", wild.port))
    peers[1].sendto(b"other", ("127.0.0.1", wild.port))
    time.sleep(0.05)
    mine, _, other = d.receive(sock, 1.0)
    assert mine == [transport(1)] and other == {}
    assert wild.recv_bursts(4) == [(b"other", text(peers[1]), 0)]  # everything else: udp's
    sock.send([b"out"], text(a))
    assert a.recvfrom(100) == (b"out", ("127.0.0.1", wild.port))
    # a renewal changes nothing
    d.set_path(PEER, text(a), wild.port, 2.0)
    assert d.by_addr[text(a)] is sock and d.counters["direct.opened"] == 1
    d.close_all()


def test_path_change_reopens_and_derp_closes_and_the_kernel_hands_back_to_udp(wild, peers):
    d, loop, _ = make()
    a, b = peers
    d.set_path(PEER, text(a), wild.port, 0.0)
    d.set_path(PEER, text(b), wild.port, 1.0)  # the trusted address moved
    assert list(d.by_addr) == [text(b)] and d.counters["direct.closed"] == 1
    a.sendto(b"from-a", ("127.0.0.1", wild.port))
    time.sleep(0.05)
    assert wild.recv_bursts(4) == [(b"from-a", text(a), 0)]
    d.set_path(PEER, "", wild.port, 2.0)  # back to DERP
    assert d.by_peer == {} and d.by_addr == {} and loop.readers == {} and PEER not in d.trusted
    b.sendto(b"from-b", ("127.0.0.1", wild.port))
    time.sleep(0.05)
    assert wild.recv_bursts(4) == [(b"from-b", text(b), 0)]


def test_port_zero_means_no_socket_and_a_port_change_reopens(wild, peers):
    d, _, _ = make()
    d.set_path(PEER, text(peers[0]), 0, 0.0)  # switch off at udp
    assert d.by_peer == {}
    other = UdpSocket(0, Counters(), reuse_port=True)  # a restarted udp on a new port
    try:
        d.set_path(PEER, text(peers[0]), wild.port, 1.0)
        d.set_path(PEER, text(peers[0]), other.port, 2.0)
        assert d.by_addr[text(peers[0])].port == other.port and d.counters["direct.closed"] == 1
    finally:
        d.close_all()
        other.close()


def test_a_second_source_gets_a_receive_socket_until_idle_and_lapse_closes_all(wild, peers):
    d, _, _ = make()
    a, b = peers
    d.set_path(PEER, text(a), wild.port, 0.0)
    d.add_source(PEER, text(b), wild.port, 0.0)
    assert set(d.addrs(PEER)) == {text(a), text(b)}
    b.sendto(transport(1), ("127.0.0.1", wild.port))
    time.sleep(0.05)
    mine, _, _ = d.receive(d.by_addr[text(b)], 5.0)
    assert mine == [transport(1)]
    d.sweep(PEER, True, 5.0 + SOURCE_IDLE - 1)
    assert set(d.addrs(PEER)) == {text(a), text(b)}
    d.sweep(PEER, True, 5.0 + SOURCE_IDLE + 1)  # the source went quiet; the trusted one stays
    assert set(d.addrs(PEER)) == {text(a)}
    d.sweep(PEER, False, 30.0)  # trust ran out with no word from udp (udp restarting)
    assert d.by_peer == {} and d.trusted == {}
    d.add_source(PEER, text(b), wild.port, 31.0)  # no trusted path: no source sockets either
    assert d.by_peer == {}


def test_an_open_that_fails_is_counted_and_retried_later(peers):
    exclusive = UdpSocket(0, Counters())  # udp with the switch off: no SO_REUSEPORT
    try:
        d, _, _ = make()
        d.set_path(PEER, text(peers[0]), exclusive.port, 0.0)
        d.set_path(PEER, text(peers[0]), exclusive.port, 1.0)
        assert d.by_peer == {} and d.counters["direct.open_failed"] == 1  # not again at once
        d.set_path(PEER, text(peers[0]), exclusive.port, RETRY_AFTER + 1)
        assert d.counters["direct.open_failed"] == 2
        d.set_path(PEER, "not-an-address", exclusive.port, 100.0)
        assert d.counters["direct.open_failed"] == 3
    finally:
        exclusive.close()


def test_econnrefused_on_a_peers_socket_is_counted_not_raised(wild):
    counters = Counters()
    d, _, _ = make(counters)
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    addr = text(gone)
    d.set_path(PEER, addr, wild.port, 0.0)
    gone.close()
    sock = d.by_addr[addr]
    sock.send([b"a"], addr)
    time.sleep(0.05)
    assert d.receive(sock, 1.0) == ([], [], {})
    assert counters["direct.rx.error.ECONNREFUSED"] == 1
    sock.send([b"b"], addr)
    time.sleep(0.05)
    sock.send([b"c"], addr)
    assert counters["direct.tx.econnrefused"] == 1 and counters["direct.tx.datagrams"] == 3
    d.close_all()
