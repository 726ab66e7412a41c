"""Routing by receiver index; GRO splitting and GSO runs; the socket on loopback with and
without offload (GSO sends arrive as separate datagrams; GRO receives are split back)."""

from __future__ import annotations

import socket
import time
import zlib

import pytest
from sunbeam.services.udp.wgroute import route
from sunbeam.shared.proto.wireguard import split_segments
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.udpsock import (
    MAX_GSO_SEGMENTS,
    UdpSocket,
    gso_runs,
    sockaddr_text,
)
from sunbeam.shared.sharding import make_index


def le(n: int) -> bytes:
    return n.to_bytes(4, "little")


def test_route_by_receiver_index():
    idx1, idx0 = make_index(1, 0x1234), make_index(0, 77)
    assert route(le(4) + le(idx1) + bytes(24), "1.2.3.4:5", 2) == 1
    assert route(le(4) + le(idx0) + bytes(500), "1.2.3.4:5", 2) == 0
    # response: sender index at 4..8 (the peer's), receiver at 8..12 (ours)
    assert route(le(2) + le(idx0) + le(idx1) + bytes(80), "1.2.3.4:5", 2) == 1
    assert route(le(2) + le(idx1) + le(idx0) + bytes(80), "1.2.3.4:5", 2) == 0
    assert route(le(3) + le(idx1) + bytes(56), "1.2.3.4:5", 2) == 1
    # initiation: a stable hash of the source
    init = le(1) + bytes(144)
    assert route(init, "1.2.3.4:5", 3) == zlib.crc32(b"1.2.3.4:5") % 3
    assert route(init, "1.2.3.4:5", 1) == 0


def test_route_drops():
    assert route(le(4) + le(make_index(2, 1)) + bytes(24), "a", 2) == "bad_index"
    assert route(le(4) + bytes(27), "a", 2) == "bad_length"
    assert route(le(2) + bytes(80), "a", 2) == "bad_length"
    assert route(le(1) + bytes(145), "a", 2) == "bad_length"
    assert route(le(3) + bytes(61), "a", 2) == "bad_length"
    assert route(b"\x04\x01\x00\x00" + bytes(40), "a", 2) == "not_wireguard"  # reserved bytes set
    assert route(le(5) + bytes(40), "a", 2) == "not_wireguard"
    assert route(b"\x04", "a", 2) == "not_wireguard"


def test_split_gro_burst():
    data = bytes(range(250))
    assert split_segments(data, 0) == [data]
    assert split_segments(data, 100) == [data[:100], data[100:200], data[200:]]
    assert split_segments(data, 250) == [data]


def test_gso_runs():
    p = lambda n, c=b"x": c * n
    assert list(gso_runs([p(10)] * 3)) == [[p(10)] * 3]
    # a shorter one ends a run; a longer one starts a new run
    assert list(gso_runs([p(10), p(10), p(5), p(10), p(20), p(20)])) == \
        [[p(10), p(10), p(5)], [p(10)], [p(20), p(20)]]
    runs = list(gso_runs([p(100)] * 150))
    assert [len(r) for r in runs] == [MAX_GSO_SEGMENTS, MAX_GSO_SEGMENTS, 150 - 2 * MAX_GSO_SEGMENTS]
    runs = list(gso_runs([p(1400)] * 60))
    assert all(sum(map(len, r)) <= 65000 for r in runs) and sum(map(len, runs)) == 60


def test_gso_runs_of_one_size_cut_like_mixed_ones():
    """A batch of one size (but a shorter last) takes a path without a loop per packet:
    the runs are the ones the general rule gives (here: with a longer packet appended,
    which sends the batch the general way and only adds a run of its own)."""
    p = lambda n: b"x" * n
    for size, count, last in [(1312, 150, 1312), (1312, 150, 96), (100, 64, 100), (100, 65, 1), (70000, 3, 5),
                              (1312, 1, 1312), (1312, 1, 7)]:
        batch = [p(size)] * (count - 1) + [p(last)]
        fast = list(gso_runs(batch))
        general = list(gso_runs(batch + [p(size + 1)]))
        assert fast == general[:-1] and general[-1] == [p(size + 1)]
        assert [q for r in fast for q in r] == batch
    assert list(gso_runs([])) == [] and list(gso_runs([b"", b""])) == [[b"", b""]]


def test_sockaddr_text():
    assert sockaddr_text(("::ffff:10.0.0.1", 9, 0, 0)) == "10.0.0.1:9"
    assert sockaddr_text(("fd00::1", 9, 0, 0)) == "[fd00::1]:9"
    assert sockaddr_text(("fe80::1", 9, 0, 3)) == "[fe80::1%3]:9"
    assert sockaddr_text(("10.0.0.1", 9)) == "10.0.0.1:9"


def recv_all(sock: socket.socket, n: int, timeout: float = 3.0) -> list[bytes]:
    sock.settimeout(timeout)
    got = []
    while len(got) < n:
        got.append(sock.recv(65535))
    return got


def drain(us: UdpSocket, n: int, timeout: float = 3.0) -> list[tuple[bytes, str]]:
    """Datagrams (GRO bursts split) and their sources, until ``n`` arrived."""
    got: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [(d, src) for burst, src, size in us.recv_bursts(64) for d in split_segments(burst, size)]
        time.sleep(0.001)
    return got


@pytest.mark.parametrize("offload", [True, False])
def test_loopback_send_and_receive(offload):
    counters = Counters()
    us = UdpSocket(0, counters, offload=offload)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer_text = f"127.0.0.1:{peer.getsockname()[1]}"
    try:
        assert us.family == socket.AF_INET6 and us.port > 0
        if offload:
            assert us.gso and us.gro, "this kernel (>= 5.0) has UDP GSO/GRO"
        packets = [bytes([i]) * 1200 for i in range(50)] + [b"tail"]
        us.send(packets, peer_text)
        assert recv_all(peer, 51) == packets
        assert counters["tx.datagrams"] == 51
        if offload:
            assert counters["tx.gso_sends"] == 1 and counters["tx.gso_datagrams"] == 51
        else:
            assert counters["tx.plain_sends"] == 51 and counters["tx.gso_sends"] == 0

        # inbound: plain datagrams from an IPv4 peer, shown as IPv4 text
        for i in range(5):
            peer.sendto(b"hello %d" % i, ("127.0.0.1", us.port))
        got = drain(us, 5)
        assert got == [(b"hello %d" % i, peer_text) for i in range(5)]

        # inbound GSO train over loopback: with GRO it arrives coalesced and is split back
        twin = UdpSocket(0, Counters(), offload=True)
        try:
            train = [bytes([i]) * 1000 for i in range(20)] + [b"short"]
            twin.send(train, f"[::1]:{us.port}")
            got = drain(us, 21)
            assert [d for d, _ in got] == train
            assert {s for _, s in got} == {f"[::1]:{twin.port}"}
            if offload:
                assert counters["rx.gro_batches"] >= 1
        finally:
            twin.close()
        # a destination that does not parse is a counted drop
        us.send([b"x", b"y"], "not-an-address")
        assert counters["tx.drop.bad_dst"] == 2
    finally:
        us.close()
        peer.close()
