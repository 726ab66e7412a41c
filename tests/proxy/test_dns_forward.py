"""The dns listener's forwarder (services/proxy/dnsforward.py): which resolvers, the real
sunbeam-proxy forwarding a query over its own TCP through the tunnel, and the forwarder's
API (resolve, forward, one lookup per question, timeouts, failures) in this process over
a stand-in TCP engine.

The process test plays the control service and the WireGuard worker as
tests/proxy/test_refusals.py does; the resolver is a peer's tailnet address, and the test
answers the proxy's TCP segments itself (SYN-ACK, the DNS reply, or a RST).
"""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from sunbeam.services.proxy import dnsforward
from sunbeam.services.proxy.dnsforward import TIMEOUT, DnsForwarder
from sunbeam.services.proxy.dnsresolvers import addresses, resolvers_for
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.tailcfg import DNSConfig, Resolver
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_packet,
    parse_packet,
)
from sunbeam.shared.runtime.loop import ServiceLoop
from sunbeam.shared.runtime.shutdown import Shutdown

from ..ip.vectors import OURS4, OURS6, PEER4
from .proxyconf import free_port, proxy_env
from .test_proxy_service import PEER_KEY, Harness

N = dns.name.from_text


def test_resolvers_for_picks_routes_then_resolvers_then_fallback():
    config = DNSConfig(resolvers=[Resolver(addr="203.0.113.53"), Resolver(addr="203.0.113.54:5353"),
                                  Resolver(addr="https://dns.example/dns-query"), Resolver(addr="[2001:db8::53]:53"),
                                  Resolver(addr="2001:db8::54"), Resolver(addr="203.0.113.53")],
                       fallback_resolvers=[Resolver(addr="198.51.100.1")],
                       routes={"corp.example.": [Resolver(addr="10.0.0.53")],
                               "eu.corp.example": [Resolver(addr="10.1.0.53")],
                               "tailnet.test": [], "64.100.in-addr.arpa.": None})
    assert resolvers_for(config, N("www.example.com")) == [("203.0.113.53", 53), ("203.0.113.54", 5353),
                                                             ("2001:db8::53", 53)]  # at most 3, no repeats
    assert resolvers_for(config, N("a.corp.example")) == [("10.0.0.53", 53)]
    assert resolvers_for(config, N("a.EU.corp.example")) == [("10.1.0.53", 53)]  # the longest suffix
    assert resolvers_for(config, N("x.tailnet.test"))[0] == ("203.0.113.53", 53)  # an empty route: no resolver
    assert resolvers_for(DNSConfig(fallback_resolvers=[Resolver(addr="198.51.100.1")]), N("a.b")) == [
        ("198.51.100.1", 53)]
    assert resolvers_for(DNSConfig(resolvers=[Resolver(addr="1.2.3.4:0"), Resolver(addr="x:53"),
                                              Resolver(addr="[2001:db8::1]x"), Resolver(addr="1.2.3.4:x")]),
                         N("a.b")) == []
    assert resolvers_for(DNSConfig(resolvers=[Resolver(addr="[2001:db8::55]")]), N("a.b")) == [("2001:db8::55", 53)]
    assert resolvers_for(None, N("a.b")) == [] and resolvers_for(DNSConfig(), N("a.b")) == []


def test_addresses_of_a_reply():
    reply = dns.message.make_response(dns.message.make_query("www.example.com", "A"))
    reply.answer.append(dns.rrset.from_text("www.example.com", 60, "IN", "CNAME", "web.example.com."))
    reply.answer.append(dns.rrset.from_text("web.example.com", 60, "IN", "A", "203.0.113.7", "203.0.113.8"))
    reply.answer.append(dns.rrset.from_text("web.example.com", 60, "IN", "AAAA", "2001:db8::7"))
    assert addresses(reply) == ["203.0.113.7", "203.0.113.8", "2001:db8::7"] and addresses(None) == []


# -- the real proxy ---------------------------------------------------------------------------------

NETMAP = Netmap(
    self_node=SelfNode(id=1, key="nodekey:" + "11" * 32, name="us.tailnet.test.",
                       addresses=(f"{OURS4}/32", f"{OURS6}/128")),
    peers=(Peer(id=2, key="nodekey:" + PEER_KEY.hex(), name="resolver.tailnet.test.", addresses=(f"{PEER4}/32",),
                allowed_ips=(f"{PEER4}/32",)),),
    domain="tailnet.test",
    dns=DNSConfig(resolvers=[Resolver(addr=f"{PEER4}:53")],
                  routes={"unrouted.example": [Resolver(addr="192.0.2.53")]}),
)


@pytest.fixture()
def proxy(tmp_path):
    port = free_port()
    rundir, env = proxy_env(tmp_path, [("dns", f"127.0.0.1:{port}")], 'log_level = "debug"\ndns_forward = true')
    h = Harness(rundir, env)
    h.dns = ("127.0.0.1", port)
    try:
        assert h.pub.poll(15000), "the proxy never subscribed to control-pub"
        assert h.pub.recv()[:1] == b"\x01"
        h.pub.send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=1, netmap=NETMAP)))
        h.wait_counter("netmap_applied", 1)
        yield h
    finally:
        h.close()


def _segments(proxy: Harness, timeout: float = 5.0):
    for pkt in proxy.to_peer(timeout).packets:
        yield parse_packet(pkt)


def _syn(proxy: Harness):
    (seg,) = [s for s in _segments(proxy) if s.flags & SYN]
    assert seg.dport == 53 and seg.dst == addr_bytes(PEER4) and seg.src == addr_bytes(OURS4)
    return seg


def play_resolver(proxy: Harness, answer_ip: str) -> dns.message.Message:
    """Accept the proxy's connection, read its query, answer it; the query it sent."""
    syn = _syn(proxy)
    iss = 7000
    proxy.from_peer(build_packet(syn.dst, syn.src, 53, syn.sport, iss, syn.seq + 1, SYN | ACK, 65535))
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
        assert time.monotonic() < deadline, f"the query never came whole: {data!r}"
        for seg in _segments(proxy):
            if seg.payload and seg.seq == syn.seq + 1 + len(data):
                data += bytes(seg.payload)
    query = dns.message.from_wire(data[2:])
    reply = dns.message.make_response(query, recursion_available=True)
    reply.answer.append(dns.rrset.from_text(query.question[0].name, 120, "IN", "A", answer_ip))
    wire = reply.to_wire(prepend_length=True)
    proxy.from_peer(build_packet(syn.dst, syn.src, 53, syn.sport, iss + 1, syn.seq + 1 + len(data),
                                 ACK | PSH | FIN, 65535, payload=wire))
    return query


def ask_udp(proxy: Harness, name: str, qid: int, then=lambda: None) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(dns.message.make_query(name, "A", id=qid, use_edns=0).to_wire(), proxy.dns)
        then()
        return dns.message.from_wire(s.recv(65535))


def test_a_name_outside_the_tailnet_is_forwarded_through_the_tunnel(proxy):
    seen = []
    reply = ask_udp(proxy, "WWW.Example.com", 4242, lambda: seen.append(play_resolver(proxy, "203.0.113.7")))
    assert reply.id == 4242 and reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA
    assert [r.address for r in reply.answer[0]] == ["203.0.113.7"] and reply.answer[0].ttl == 120
    assert reply.question[0].name.to_text() == "WWW.Example.com."
    (upstream,) = seen
    assert upstream.question[0].name == dns.name.from_text("www.example.com") and upstream.edns == 0
    counters = proxy.wait_counter("dns_forward_noerror", 1)
    assert counters["dns_upstream_ok"] == 1 and counters["dns_forward"] == 1
    # a tailnet name never leaves: answered at once, with RA since forwarding is on
    local = ask_udp(proxy, "resolver", 1)
    assert [r.address for r in local.answer[0]] == [PEER4]
    assert local.flags & dns.flags.RA and local.flags & dns.flags.AA


def test_a_resolver_that_refuses_gives_servfail_at_once(proxy):
    def refuse():
        syn = _syn(proxy)
        proxy.from_peer(build_packet(syn.dst, syn.src, 53, syn.sport, 0, syn.seq + 1, RST | ACK, 0))

    start = time.monotonic()
    reply = ask_udp(proxy, "down.example.com", 5, refuse)
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.id == 5
    assert time.monotonic() - start < 3
    counters = proxy.wait_counter("dns_forward_servfail", 1)
    assert counters["dns_upstream_refused"] == 1


def test_an_unrouted_resolver_gives_servfail_without_a_packet(proxy):
    reply = ask_udp(proxy, "a.unrouted.example", 6)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert proxy.wait_counter("dns_upstream_no_route", 1)
    assert not proxy.wg.poll(300), "a packet went out toward an unrouted resolver"


def test_a_silent_resolver_times_out(proxy):
    start = time.monotonic()
    reply = ask_udp(proxy, "slow.example.com", 8, lambda: _syn(proxy))  # the SYN is never answered
    took = time.monotonic() - start
    assert reply.rcode() == dns.rcode.SERVFAIL and 5 < took < 9
    assert proxy.wait_counter("dns_upstream_timeout", 1)


def test_tcp_clients_are_forwarded_too(proxy):
    with socket.create_connection(proxy.dns, timeout=10) as s:
        s.sendall(dns.message.make_query("tcp.example.com", "A", id=77).to_wire(prepend_length=True))
        play_resolver(proxy, "203.0.113.77")
        head = s.recv(2)
        body = b""
        while len(body) < int.from_bytes(head, "big"):
            body += s.recv(65535)
    reply = dns.message.from_wire(body)
    assert reply.id == 77 and [r.address for r in reply.answer[0]] == ["203.0.113.77"]


# -- the forwarder's API in this process, over a stand-in TCP engine ---------------------------------


class FakeStack:
    def __init__(self) -> None:
        self.sent: dict[int, bytes] = {}
        self.inbox: dict[int, bytes] = {}
        self.shut: set[int] = set()
        self.aborted: set[int] = set()

    def send(self, cid, data, now) -> int:
        self.sent[cid] = self.sent.get(cid, b"") + bytes(data)
        return len(data)

    def read(self, cid, n) -> bytes:
        return self.inbox.pop(cid, b"")

    def shutdown(self, cid, now) -> None:
        self.shut.add(cid)

    def abort(self, cid, now) -> None:
        self.aborted.add(cid)


class FakeEngine:
    """`TcpEngine.connect` and the stack calls the forwarder makes; 192.0.2.0/24 routes nowhere."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.counters = loop.counters
        self.stack = FakeStack()
        self.conns: dict[int, tuple[tuple[str, int], object]] = {}
        self.plane = SimpleNamespace(routes=SimpleNamespace(
            lookup=lambda ip: None if ip.startswith("192.0.2.") else b"peer"))

    def connect(self, src, dst, handler) -> int:
        cid = len(self.conns) + 1
        self.conns[cid] = (dst, handler)
        return cid

    def query_of(self, cid: int) -> dns.message.Message:
        wire = self.stack.sent[cid]
        assert int.from_bytes(wire[:2], "big") == len(wire) - 2
        return dns.message.from_wire(wire[2:])

    def answer(self, cid: int, ip: str | None = "203.0.113.7", *, wrong_id: bool = False, split: bool = False) -> None:
        """Connect, then the resolver's reply to what was sent (or with another ID)."""
        _dst, handler = self.conns[cid]
        handler.on_connected()
        query = self.query_of(cid)
        reply = dns.message.make_response(query, recursion_available=True)
        if wrong_id:
            reply.id = query.id ^ 1
        if ip is not None:
            reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", ip))
        wire = reply.to_wire(prepend_length=True)
        for part in ((wire[:3], wire[3:]) if split else (wire,)):
            self.stack.inbox[cid] = part
            handler.on_readable()


class Fwd:
    def __init__(self, resolvers=("203.0.113.53", "203.0.113.54"), enabled=True) -> None:
        self.now = 100.0
        self.shutdown = Shutdown()
        self.loop = ServiceLoop("fwdtest", self.shutdown, clock=lambda: self.now)
        self.engine = FakeEngine(self.loop)
        self.fwd = DnsForwarder(self.loop, self.loop.counters, self.engine, lambda ip: "100.64.0.5",
                                SimpleNamespace(dns_forward=enabled))
        self.fwd.set_netmap(Netmap(dns=DNSConfig(resolvers=[Resolver(addr=a) for a in resolvers])))
        self.got: list = []

    def cb(self, reply) -> None:
        self.got.append(reply)

    def run(self, advance: float = 0.0) -> None:
        self.now += advance
        for _ in range(5):
            self.loop.run_once(max_wait=0)

    def close(self) -> None:
        self.loop.close()
        self.shutdown.close()


@pytest.fixture()
def fwd():
    f = Fwd()
    yield f
    f.close()


def test_resolve_asks_the_first_resolver_over_tcp(fwd):
    fwd.fwd.resolve("www.example.com", "A", fwd.cb)
    fwd.run()
    assert not fwd.got  # not before the resolver answered
    (dst, _h), = fwd.engine.conns.values()
    assert dst == ("203.0.113.53", 53)
    fwd.engine.answer(1, split=True)
    fwd.run()
    (reply,) = fwd.got
    assert addresses(reply) == ["203.0.113.7"] and 1 in fwd.engine.stack.shut
    assert fwd.engine.query_of(1).question[0].name == N("www.example.com")
    assert fwd.loop.counters["dns_upstream_ok"] == 1 and not fwd.fwd.pending


def test_the_same_question_in_flight_is_one_lookup(fwd):
    fwd.fwd.resolve("www.example.com", "A", fwd.cb)
    fwd.fwd.resolve("WWW.example.com.", dns.rdatatype.A, fwd.cb)
    fwd.fwd.resolve("www.example.com", "AAAA", fwd.cb)  # another question
    assert len(fwd.engine.conns) == 2
    fwd.engine.answer(1)
    fwd.run()
    assert [addresses(r) for r in fwd.got] == [["203.0.113.7"], ["203.0.113.7"]]


def test_forward_answers_with_the_clients_id(fwd):
    fwd.fwd.forward(dns.message.make_query("www.example.com", "A", id=321).to_wire(), fwd.cb)
    fwd.fwd.forward(b"junk", fwd.cb)
    fwd.run()
    assert fwd.got == [None]  # junk: not a query
    fwd.engine.answer(1)
    fwd.run()
    reply = dns.message.from_wire(fwd.got[1])
    assert reply.id == 321 and reply.flags & dns.flags.RA and addresses(reply) == ["203.0.113.7"]


def test_a_wrong_reply_or_a_reset_moves_to_the_next_resolver_then_fails(fwd):
    fwd.fwd.resolve("www.example.com", "A", fwd.cb)
    fwd.engine.answer(1, wrong_id=True)
    fwd.run()
    assert not fwd.got and fwd.engine.conns[2][0] == ("203.0.113.54", 53) and 1 in fwd.engine.stack.aborted
    fwd.engine.conns[2][1].on_reset("refused")
    fwd.run()
    assert fwd.got == [None]
    counters = fwd.loop.counters
    assert counters["dns_upstream_bad_reply"] == 1 and counters["dns_upstream_refused"] == 1


def test_a_silent_resolver_gets_its_share_of_the_timeout(fwd):
    fwd.fwd.resolve("www.example.com", "A", fwd.cb)
    fwd.run(TIMEOUT / 2 + 0.01)  # two resolvers: half each
    assert 1 in fwd.engine.stack.aborted and len(fwd.engine.conns) == 2
    fwd.run(TIMEOUT / 2)
    assert fwd.got == [None] and 2 in fwd.engine.stack.aborted
    assert fwd.loop.counters["dns_upstream_timeout"] == 2


def test_unrouted_resolvers_fail_without_a_connection():
    f = Fwd(resolvers=("192.0.2.53", "https://dns.example/dns-query"))
    try:
        f.fwd.resolve("www.example.com", "A", f.cb)
        f.run()
        assert f.got == [None] and not f.engine.conns
        assert f.loop.counters["dns_upstream_no_route"] == 1
    finally:
        f.close()


def test_disabled_or_without_resolvers_or_overloaded_fails_at_once(monkeypatch):
    for f, counter in ((Fwd(enabled=False), None), (Fwd(resolvers=()), "dns_upstream_no_resolvers")):
        try:
            f.fwd.resolve("www.example.com", "A", f.cb)
            f.fwd.resolve("bad..name", "A", f.cb)
            assert not f.got  # never inside the call
            f.run()
            assert f.got == [None, None] and not f.engine.conns
            assert counter is None or f.loop.counters[counter] == 1
        finally:
            f.close()
    monkeypatch.setattr(dnsforward, "MAX_PENDING", 2)
    f = Fwd()
    try:
        for name in ("a.example", "b.example", "c.example"):
            f.fwd.resolve(name, "A", f.cb)
        f.run()
        assert f.got == [None] and len(f.engine.conns) == 2 and f.loop.counters["dns_forward_overload"] == 1
    finally:
        f.close()
