"""Local port choice (RFC 6056 Algorithm 4 + recently closed 4-tuples) and ISNs (RFC 6528)."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.tcp import (
    Closed,
    Connected,
    ConnectionRequest,
    NoFreePort,
    PeerFinished,
    Reset,
)
from sunbeam.shared.proto.tcp.ports import (
    FIRST_PORT,
    ISN_CLOCK_HZ,
    LAST_PORT,
    PortChooser,
)

from .link import Pair, make_stack

SECRET = bytes(range(32))
A, B = "100.64.0.1", "100.64.0.2"


def prefix(raddr: str = B, laddr: str = A, rport: int = 80) -> bytes:
    return addr_bytes(raddr) + addr_bytes(laddr) + rport.to_bytes(2, "big")


def test_one_destination_walks_the_whole_range_before_repeating():
    chooser = PortChooser(SECRET)
    p = prefix()
    count = LAST_PORT - FIRST_PORT + 1
    ports = [chooser.choose(p, (), (), 0.0) for _ in range(count)]
    assert len(set(ports)) == count
    assert min(ports) == FIRST_PORT and max(ports) == LAST_PORT


def test_destinations_start_at_unrelated_points_and_secrets_differ():
    chooser = PortChooser(SECRET)
    firsts = {chooser.choose(prefix(rport=port), (), (), 0.0) for port in range(80, 180)}
    assert len(firsts) > 90  # 100 destinations, 64,512 ports: a few shared starts at most
    other = PortChooser(bytes(reversed(SECRET)))
    assert other.choose(prefix(rport=80), (), (), 0.0) != PortChooser(SECRET).choose(prefix(rport=80), (), (), 0.0)


def test_open_reserved_and_recently_closed_ports_are_skipped_until_the_horizon():
    chooser = PortChooser(SECRET, first=5000, last=5003, horizon=120.0)
    p = prefix()
    a = chooser.choose(p, (), (), 0.0)
    b = chooser.choose(p, (), (), 0.0)
    chooser.closed(p + a.to_bytes(2, "big"), 1.0)
    in_use = {p + b.to_bytes(2, "big")}
    reserved = {5000, 5001, 5002, 5003} - {a, b}
    # every other port is reserved, b is open, a closed 1 s ago: nothing is free
    with pytest.raises(NoFreePort):
        chooser.choose(p, in_use, reserved, 60.0)
    assert chooser.recently_closed() == 1
    # after the horizon a's 4-tuple may be used again
    assert chooser.choose(p, in_use, reserved, 121.5) == a
    assert chooser.recently_closed() == 0


def test_a_closed_port_toward_another_destination_does_not_block():
    chooser = PortChooser(SECRET, first=5000, last=5000)
    chooser.closed(prefix(rport=81) + (5000).to_bytes(2, "big"), 0.0)
    assert chooser.choose(prefix(rport=80), (), (), 1.0) == 5000
    with pytest.raises(NoFreePort):
        chooser.choose(prefix(rport=81), (), (), 1.0)


def test_isn_follows_a_4_microsecond_clock_per_4_tuple():
    chooser = PortChooser(SECRET)
    key = prefix() + (40000).to_bytes(2, "big")
    other = prefix() + (40001).to_bytes(2, "big")
    assert (chooser.isn(key, 1.0) - chooser.isn(key, 0.0)) % 2**32 == ISN_CLOCK_HZ
    assert chooser.isn(key, 5.0) == chooser.isn(key, 5.0)
    # different 4-tuples at the same instant: unrelated offsets, not neighbours
    assert abs(chooser.isn(key, 0.0) - chooser.isn(other, 0.0)) > 1000
    assert PortChooser(bytes(32)).isn(key, 0.0) != chooser.isn(key, 0.0)


def test_bad_construction_is_refused():
    with pytest.raises(ValueError):
        PortChooser(b"short")
    with pytest.raises(ValueError):
        PortChooser(SECRET, first=70000, last=80000)


def _short_connections(pair: Pair, count: int) -> tuple[int, list]:
    """``count`` connections a -> b:80 one after another, b closing first (it holds each
    4-tuple in TIME-WAIT); returns the seconds each took to connect, max, and any resets."""
    a, b = pair.a, pair.b
    b.listen(80)
    resets: list = []
    slowest = 0.0
    for _ in range(count):
        start = pair.now
        cid = a.connect(A, (B, 80), pair.now)
        connected = closed = False
        bid = None
        while not closed and pair.now - start < 30:
            pair.step()
            for ev in pair.events["b"]:
                if isinstance(ev, ConnectionRequest):
                    bid = ev.conn_id
                    b.accept(bid)
                elif isinstance(ev, Connected) and ev.conn_id == bid:
                    b.shutdown(bid, pair.now)  # the server closes first, as an HTTP server with Connection: close
            for ev in pair.events["a"]:
                if isinstance(ev, Connected) and ev.conn_id == cid:
                    connected = True
                    slowest = max(slowest, pair.now - start)
                elif isinstance(ev, PeerFinished) and ev.conn_id == cid:
                    a.shutdown(cid, pair.now)
                elif isinstance(ev, Closed) and ev.conn_id == cid:
                    closed = True
                elif isinstance(ev, Reset):
                    resets.append(ev)
            pair.events = {"a": [], "b": []}
        assert connected and closed
    return slowest, resets


def test_a_thousand_short_connections_to_a_server_that_closes_first_never_hit_its_time_wait():
    """b keeps every 4-tuple in TIME-WAIT for 60 s (as a Linux or gVisor peer); a SYN on such
    a 4-tuple is not answered with a SYN-ACK, so a reused port costs a SYN retransmission."""
    pair = Pair(make_stack(A, 1), make_stack(B, 2, time_wait=60.0))
    slowest, resets = _short_connections(pair, 1000)
    assert resets == []
    assert pair.a.counters["retransmit"] == 0 and pair.a.counters["rto"] == 0
    assert pair.b.counters["rst_sent"] == 0
    assert slowest < 0.1
    assert pair.a.ports.recently_closed() == 1000
