"""`IpPlane.send_many`: our TCP output to the right peers, runs of one destination at once,
bursts whole, packets without a route counted; the route table is built from a netmap as in
service. `WgOutbox.add_burst`: a burst as entries with a segment size."""

from __future__ import annotations

from sunbeam.services.proxy.outbox import WgOutbox, _to_peer
from sunbeam.services.proxy.plane import IpPlane
from sunbeam.services.proxy.routing import RouteTable
from sunbeam.shared.keys import from_text
from sunbeam.shared.messages.dataplane import MAX_PACKET_BYTES, WG_IN_CODEC, ToPeer, split_runs
from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.tcp.bulk import Burst
from sunbeam.shared.proto.tcp.segment import ACK, build_packet
from sunbeam.shared.runtime import Batcher
from sunbeam.shared.runtime.counters import Counters

from .test_names import NETMAP, key


class RecordingOutbox:
    """Stands where the worker sockets are: what the plane hands over, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, object]] = []

    def add_many(self, peer_key: bytes, packets: list[bytes]) -> None:
        self.calls.append((peer_key, list(packets)))

    def add_burst(self, peer_key: bytes, burst: Burst) -> None:
        self.calls.append((peer_key, burst))


def _plane() -> tuple[IpPlane, RecordingOutbox]:
    plane = object.__new__(IpPlane)
    plane.routes = RouteTable.from_netmap(NETMAP, accept_routes=True)
    plane.counters = Counters()
    plane.outbox = RecordingOutbox()  # type: ignore[assignment]
    return plane, plane.outbox  # type: ignore[return-value]


def _pkt(src: str, dst: str, n: int) -> bytes:
    return build_packet(addr_bytes(src), addr_bytes(dst), 40000, 80, n, 0, ACK, 1000, b"", bytes([n]) * 10)


def test_runs_go_to_their_peers_in_order_and_unrouted_are_counted():
    plane, outbox = _plane()
    peer1 = from_text("nodekey:", key(2))
    a = [_pkt("100.64.0.9", "100.64.0.1", i) for i in range(3)]
    b = [_pkt("100.64.0.9", "10.0.0.7", 3)]  # peer-1's subnet route
    c = [_pkt("fd7a:115c:a1e0::9", "fd7a:115c:a1e0::1", i) for i in range(4, 6)]
    lost = [_pkt("100.64.0.9", "100.64.0.77", 6), _pkt("fd7a:115c:a1e0::9", "fd7a:115c:a1e0::2", 7)]  # peer-2:
    assert plane.send_many(a + b + lost + c + a[:1]) == 2  # no AllowedIPs, so no route
    assert outbox.calls == [(peer1, a), (peer1, b), (peer1, c), (peer1, a[:1])]
    assert plane.counters["no_route"] == 2
    assert plane.send_many([]) == 0 and len(outbox.calls) == 4


def test_a_burst_goes_whole_between_the_runs_around_it():
    plane, outbox = _plane()
    peer1 = from_text("nodekey:", key(2))
    a = [_pkt("100.64.0.9", "100.64.0.1", i) for i in range(2)]
    burst = Burst(memoryview(b"".join(a)), len(a[0]), 2)
    lost = Burst(memoryview(_pkt("100.64.0.9", "100.64.0.77", 6) * 3), len(a[0]), 3)
    assert plane.send_many([a[0], burst, lost, a[1]]) == 3
    assert outbox.calls == [(peer1, [a[0]]), (peer1, burst), (peer1, [a[1]])]
    assert plane.counters["no_route"] == 3


def test_the_outbox_sends_a_burst_as_entries_of_at_most_64_kb(monkeypatch):
    """Entries of whole packets with their size as the segment size: the worker's
    `split_runs` gets the packets back; single packets around them have segment 0."""
    outbox = object.__new__(WgOutbox)
    outbox._batcher = Batcher(WG_IN_CODEC, _to_peer, segmented=True)
    sent: list[tuple[bytes, bytes, int]] = []
    monkeypatch.setattr(outbox, "_send", lambda *a: sent.append(a))
    size = 1280
    packets = [bytes([i]) * size for i in range(120)]
    outbox.add_many(b"k" * 32, [b"single"])
    outbox.add_burst(b"k" * 32, Burst(memoryview(b"".join(packets)), size, 120))
    outbox.flush()
    msgs = [WG_IN_CODEC.decode(data) for _key, data, _n in sent]
    assert sum(n for _key, _data, n in sent) == 121
    assert all(len(entry) <= MAX_PACKET_BYTES for m in msgs for entry in m.packets)
    assert [seg for m in msgs for seg in m.segments] == [0, size, size, size]
    assert [p for m in msgs for p in split_runs(m.packets, m.segments)] == [b"single"] + packets
    outbox._batcher.add_many(b"k" * 32, [b"alone"])
    (only,) = outbox._batcher.flush()
    assert WG_IN_CODEC.decode(only.data) == ToPeer(peer_key=b"k" * 32, packets=[b"alone"])  # no segments
