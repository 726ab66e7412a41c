"""The proxy's sans-IO parts: AllowedIPs routing, the ping run, the ping socket's messages."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest
from sunbeam.services.proxy.front import unrouted_reason
from sunbeam.services.proxy.pingrun import PING_PAYLOAD, PingRun
from sunbeam.services.proxy.routing import RouteTable, self_address_for
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.messages.ping import (
    PING_REPLY_CODEC,
    PING_REQUEST_CODEC,
    PingPeer,
    PingResult,
)
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.ip.headers import addr_bytes, parse
from sunbeam.shared.proto.ip.icmp import echo_reply_to, parse_echo

from ..ip.vectors import OURS4, OURS6, PEER4, PEER6

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def test_longest_prefix_wins():
    table = RouteTable([("100.64.0.0/10", A), ("100.64.0.9/32", B), ("10.0.0.0/8", C), ("0.0.0.0/0", C),
                        ("fd7a:115c:a1e0::/48", A), ("fd7a:115c:a1e0::9/128", B)])
    assert table.lookup("100.64.0.9") == B
    assert table.lookup(addr_bytes("100.64.0.9")) == B
    assert table.lookup("100.64.0.10") == A
    assert table.lookup("10.1.2.3") == C
    assert table.lookup("8.8.8.8") == C  # default route (an exit node)
    assert table.lookup(PEER6) == B
    assert table.lookup("fd7a:115c:a1e0::1") == A
    assert table.lookup("2001:db8::1") is None


def test_memoized_lookups_agree_and_stay_bounded():
    from sunbeam.services.proxy.routing import CACHE_MAX

    table = RouteTable([("100.64.0.0/10", A), ("100.64.0.9/32", B)])
    for _ in range(3):  # the second and third answers come from the memo
        assert table.lookup(addr_bytes("100.64.0.9")) == B and table.lookup("100.64.0.10") == A
        assert table.lookup("2001:db8::1") is None
    for i in range(CACHE_MAX + 10):
        assert table.lookup(addr_bytes(f"100.{64 + i // 65536 % 64}.{i // 256 % 256}.{i % 256}")) in (A, B)
    assert len(table._cache) <= CACHE_MAX


def test_a_duplicate_prefix_goes_where_the_wireguard_device_sends_it():
    """One rule for both tables: the peer listed last (WireGuard's last writer wins)."""
    from sunbeam.shared.proto.wireguard.allowedips import AllowedIPs

    routes = [("100.64.0.9/32", A), ("100.64.0.0/10", B), ("100.64.0.9/32", B), ("10.0.0.0/8", C)]
    device = AllowedIPs()
    for key in (A, B, C):  # the worker's set_peer calls, in netmap order
        device.set(key, [p for p, k in routes if k == key])
    table = RouteTable(routes)
    for dst in ("100.64.0.9", "100.64.0.10", "10.1.1.1", "8.8.8.8"):
        assert table.lookup(dst) == device.lookup(dst)
    assert table.lookup("100.64.0.9") == B


def _netmap():
    me = SelfNode(id=1, key="nodekey:" + "11" * 32, addresses=(f"{OURS4}/32", f"{OURS6}/128"))
    peer = Peer(id=2, key="nodekey:" + B.hex(), addresses=(f"{PEER4}/32", f"{PEER6}/128"),
                allowed_ips=(f"{PEER4}/32", f"{PEER6}/128", "192.168.7.0/24"))
    return Netmap(self_node=me, peers=(peer,))


def test_a_default_route_never_carries_tailnet_addresses():
    exit_peer = Peer(id=3, key="nodekey:" + C.hex(), addresses=("100.64.0.3/32",),
                     allowed_ips=("100.64.0.3/32", "0.0.0.0/0", "::/0"))
    nm = msgspec.structs.replace(_netmap(), peers=(*_netmap().peers, exit_peer))
    table = RouteTable.from_netmap(nm, exit_node="100.64.0.3")
    assert table.exit.peer == exit_peer
    assert table.lookup("203.0.113.10") == C and table.lookup("2001:db8::1") == C
    assert table.lookup("100.64.0.3") == C and table.lookup(PEER4) == B
    for nobody in ("100.64.0.77", "fd7a:115c:a1e0::77", bytes([100, 64, 0, 77]),
                   bytes.fromhex("fd7a115ca1e0" + "00" * 9 + "77")):
        assert table.lookup(nobody) is None, nobody
    assert unrouted_reason("100.64.0.77", table) == "no_peer"
    assert unrouted_reason("192.168.7.200", table) == "routes_not_accepted"
    assert RouteTable.from_netmap(nm, exit_node="nosuch").exit.problem is not None
    assert unrouted_reason("203.0.113.10", RouteTable.from_netmap(nm, exit_node="nosuch")) == "exit_node_unusable"
    assert unrouted_reason("203.0.113.10", RouteTable.from_netmap(nm)) == "no_exit_node"


def test_routes_and_source_from_netmap():
    nm = _netmap()
    table = RouteTable.from_netmap(nm)  # accept_routes off: the subnet is left out, and said so
    assert table.lookup(PEER4) == B and table.lookup("192.168.7.200") is None and table.lookup(PEER6) == B
    assert table.unaccepted_route("192.168.7.200") == "2" and table.unaccepted_route("192.168.8.1") is None
    table = RouteTable.from_netmap(nm, accept_routes=True)
    assert table.lookup(PEER4) == B and table.lookup("192.168.7.200") == B and table.lookup(PEER6) == B
    assert table.unaccepted_route("192.168.7.200") is None
    assert table.lookup(OURS4) is None
    assert self_address_for(nm, PEER4) == OURS4
    assert self_address_for(nm, PEER6) == OURS6
    assert self_address_for(Netmap(), PEER4) is None
    assert self_address_for(None, PEER4) is None


def _reply_for(packet: bytes) -> tuple[str, int, int]:
    pkt = parse(packet)
    echo = parse_echo(pkt)
    assert echo is not None and echo.request
    reply = parse(echo_reply_to(pkt, echo))
    return str(ipaddress.ip_address(reply.src)), echo.ident, echo.seq


def test_ping_run_sends_one_echo_at_a_time():
    run = PingRun(PingPeer(dst_ip=PEER4, count=3, timeout=1.0), OURS4, PEER4, ident=0xBEEF)
    first = run.next_packet(now=10.0)
    pkt = parse(first)
    assert (pkt.src, pkt.dst) == (addr_bytes(OURS4), addr_bytes(PEER4))
    assert parse_echo(pkt)[1:] == (0xBEEF, 0, PING_PAYLOAD)
    assert run.pending == (0xBEEF, 0) and run.deadline == 11.0
    assert run.next_packet(now=10.1) is None  # one in flight
    src, ident, seq = _reply_for(first)
    assert not run.on_echo_reply(src, ident, seq + 1, now=10.2)  # wrong sequence
    assert not run.on_echo_reply("100.64.0.99", ident, seq, now=10.2)  # wrong source
    assert not run.on_echo_reply(src, ident ^ 1, seq, now=10.2)  # someone else's ping
    assert run.on_echo_reply(src, ident, seq, now=10.25)
    assert run.rtts == [pytest.approx(0.25)] and run.pending is None
    # the second one times out
    second = run.next_packet(now=11.0)
    assert parse_echo(parse(second)).seq == 1
    assert not run.on_timer(now=11.5)
    assert run.on_timer(now=12.0)
    assert run.rtts[1] is None
    # a late reply to it is not counted
    assert not run.on_echo_reply(*_reply_for(second), now=12.1)
    third = run.next_packet(now=12.1)
    assert run.on_echo_reply(*_reply_for(third), now=12.15)
    assert run.done and run.next_packet(now=13.0) is None
    result = run.result()
    assert result.dst_ip == PEER4 and result.rtts[0] == pytest.approx(0.25) and result.rtts[1] is None
    assert result.error is None


def test_ping_run_ipv6_and_abandon():
    run = PingRun(PingPeer(dst_ip="FD7A:115C:A1E0::9", count=2, timeout=1.0), OURS6, PEER6, ident=1)
    first = run.next_packet(now=0.0)
    assert run.on_echo_reply(*_reply_for(first), now=0.01)  # the reply's text form is normalised
    assert run.abandon("no route").rtts == [pytest.approx(0.01), None]


def test_ping_messages():
    req = PingPeer(dst_ip=PEER4, count=3, timeout=2.0)
    assert PING_REQUEST_CODEC.decode(PING_REQUEST_CODEC.encode(req)) == req
    res = PingResult(dst_ip=PEER4, rtts=[0.1, None])
    assert PING_REPLY_CODEC.decode(PING_REPLY_CODEC.encode(res)) == res
    for bad in ({"t": "PingPeer", "dst_ip": PEER4, "count": 0}, {"t": "PingPeer", "dst_ip": PEER4, "timeout": 0},
                {"t": "PingPeer", "dst_ip": PEER4, "count": 1000}, {"t": "PingResult", "dst_ip": "", "rtts": []}):
        with pytest.raises(BadMessage):
            PING_REQUEST_CODEC.decode(msgspec.msgpack.encode(bad))
