"""`IpPlane.send_many`: our TCP output to the right peers, runs of one destination at once,
packets without a route counted; the route table is built from a netmap as in service."""

from __future__ import annotations

from sunbeam.services.proxy.plane import IpPlane
from sunbeam.services.proxy.routing import RouteTable
from sunbeam.shared.keys import from_text
from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.tcp.segment import ACK, build_packet
from sunbeam.shared.runtime.counters import Counters

from .test_names import NETMAP, key


class RecordingOutbox:
    """Stands where the worker sockets are: what the plane hands over, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, list[bytes]]] = []

    def add_many(self, peer_key: bytes, packets: list[bytes]) -> None:
        self.calls.append((peer_key, list(packets)))


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
