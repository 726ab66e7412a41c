"""The dns listener's socket shell (services/proxy/dnsserver.py) in this process: real UDP and
TCP sockets on 127.0.0.1, a real `ServiceLoop` with a clock the test moves, the answerer,
and a stand-in forwarder the test answers for."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from sunbeam.services.proxy import dnsserver
from sunbeam.services.proxy.dnsanswer import Zone
from sunbeam.services.proxy.dnsserver import (
    IDLE_TIMEOUT,
    MAX_IN_FLIGHT,
    MAX_TCP_CLIENTS,
    DnsServer,
)
from sunbeam.shared.config import Address, Listener
from sunbeam.shared.runtime.loop import ServiceLoop
from sunbeam.shared.runtime.shutdown import Shutdown

from .test_dns_answer import MAP


class StubForwarder:
    def __init__(self) -> None:
        self.asked: list[tuple[dns.message.Message, object]] = []

    def query(self, msg, callback) -> None:
        self.asked.append((msg, callback))

    def answer(self, index: int, ip: str | None) -> None:
        msg, callback = self.asked[index]
        if ip is None:
            return callback(None)
        up = dns.message.make_response(dns.message.make_query(msg.question[0].name, "A"))
        up.answer.append(dns.rrset.from_text(msg.question[0].name, 30, "IN", "A", ip))
        callback(up)


class Rig:
    def __init__(self, forward: bool) -> None:
        self.now = 1000.0
        self.shutdown = Shutdown()
        self.loop = ServiceLoop("dnstest", self.shutdown, clock=lambda: self.now)
        self.side = SimpleNamespace(loop=self.loop, counters=self.loop.counters, log=self.loop.log,
                                    zone=Zone.from_netmap(MAP, forward=forward), dns=StubForwarder(),
                                    engine=SimpleNamespace(gauges={}))
        self.server = DnsServer(self.side, Listener(kind="dns", listen=Address(host="127.0.0.1", port=0)))
        self.addr = ("127.0.0.1", self.server.port)

    def pump(self, until=lambda: False, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            self.loop.run_once(max_wait=0.01)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.pump(seconds=0.1)

    @property
    def counters(self) -> dict[str, int]:
        return self.loop.counters.snapshot()

    def close(self) -> None:
        for sock in self.server.sockets:
            sock.close()
        self.loop.close()
        self.shutdown.close()


@pytest.fixture()
def rig():
    r = Rig(forward=True)
    yield r
    r.close()


def query(name: str, rdtype: str = "A", qid: int = 1) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, id=qid)


def udp_ask(rig: Rig, wire: bytes) -> dns.message.Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.sendto(wire, rig.addr)
        got: list[bytes] = []

        def arrived() -> bool:
            try:
                got.append(s.recv(65535))
            except BlockingIOError:
                pass
            return bool(got)

        rig.pump(arrived)
        return dns.message.from_wire(got[0]) if got else None


def tcp_client(rig: Rig) -> socket.socket:
    s = socket.create_connection(rig.addr)
    s.setblocking(False)
    rig.pump(lambda: len(rig.server.clients) == 1 or len(rig.server.clients) >= MAX_TCP_CLIENTS, 0.2)
    return s


def tcp_read(rig: Rig, s: socket.socket, count: int, seconds: float = 2.0) -> list[dns.message.Message]:
    buf = bytearray()
    msgs: list[dns.message.Message] = []

    def done() -> bool:
        try:
            buf.extend(s.recv(65536))
        except BlockingIOError:
            pass
        while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
            size = int.from_bytes(buf[:2], "big")
            msgs.append(dns.message.from_wire(bytes(buf[2:2 + size])))
            del buf[:2 + size]
        return len(msgs) >= count

    rig.pump(done, seconds)
    return msgs


def is_closed(rig: Rig, s: socket.socket) -> bool:
    rig.pump(seconds=0.05)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_udp_answers_and_counts(rig):
    reply = udp_ask(rig, query("peer-1.tailnet.test", qid=7).to_wire())
    assert reply.id == 7 and reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].address == "100.64.0.1"
    assert udp_ask(rig, b"\x00\x01garbage") is None
    assert udp_ask(rig, dns.message.make_response(query("x")).to_wire()) is None
    counters = rig.counters
    assert counters["dns_udp_queries"] == 3 and counters["dns_noerror"] == 1
    assert counters["dns_drop_short"] == 1 and counters["dns_drop_response"] == 1


def test_udp_forwarded_query_is_answered_when_the_forwarder_calls_back(rig):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(query("www.example.com", qid=42).to_wire(), rig.addr)
        rig.pump(lambda: bool(rig.side.dns.asked))
        (msg, _cb), = rig.side.dns.asked
        assert msg.question[0].name.to_text() == "www.example.com."
        rig.side.dns.answer(0, "203.0.113.7")
        reply = dns.message.from_wire(s.recv(65535))
    assert reply.id == 42 and reply.flags & dns.flags.RA and reply.answer[0][0].address == "203.0.113.7"
    assert rig.counters["dns_forward"] == 1 and rig.counters["dns_forward_noerror"] == 1


def test_tcp_several_queries_per_connection_and_split_frames(rig):
    s = tcp_client(rig)
    s.sendall(b"".join(query(n, qid=i).to_wire(prepend_length=True)
                       for i, n in enumerate(["peer-1", "peer-2", "nosuch.tailnet.test"])))
    replies = tcp_read(rig, s, 3)
    assert [(r.id, r.rcode()) for r in replies] == [(0, 0), (1, 0), (2, dns.rcode.NXDOMAIN)]
    wire = query("v6only", "AAAA", qid=9).to_wire(prepend_length=True)
    for i in range(len(wire)):  # one byte at a time
        s.send(wire[i:i + 1])
        rig.pump(seconds=0.002)
    (reply,) = tcp_read(rig, s, 1)
    assert reply.id == 9 and reply.answer[0][0].address == "fd7a:115c:a1e0::4"
    assert rig.counters["dns_tcp_queries"] == 4
    s.close()


def test_tcp_forwarded_reply_may_come_after_a_later_local_one(rig):
    s = tcp_client(rig)
    s.sendall(query("www.example.com", qid=1).to_wire(prepend_length=True)
              + query("peer-1", qid=2).to_wire(prepend_length=True))
    assert [r.id for r in tcp_read(rig, s, 1)] == [2]
    (client,) = rig.server.clients
    assert client.in_flight == 1
    rig.side.dns.answer(0, None)  # the resolver failed: SERVFAIL
    (reply,) = tcp_read(rig, s, 1)
    assert (reply.id, reply.rcode()) == (1, dns.rcode.SERVFAIL) and client.in_flight == 0
    s.close()


@pytest.mark.parametrize("head", [b"\x00\x00", (4097).to_bytes(2, "big"), b"\xff\xff"])
def test_tcp_bad_length_closes_the_connection(rig, head):
    s = tcp_client(rig)
    s.sendall(head + bytes(64))
    rig.pump(lambda: not rig.server.clients)
    assert is_closed(rig, s) and rig.counters["dns_drop_tcp_length"] == 1
    assert udp_ask(rig, query("peer-1").to_wire()).answer  # still serving


def test_tcp_idle_connection_is_closed(rig):
    s = tcp_client(rig)
    rig.advance(IDLE_TIMEOUT - 1)
    s.sendall(query("peer-1").to_wire(prepend_length=True))  # activity restarts the clock
    assert len(tcp_read(rig, s, 1)) == 1
    rig.advance(IDLE_TIMEOUT - 1)
    assert not is_closed(rig, s)
    rig.advance(2)
    rig.pump(lambda: not rig.server.clients)
    assert is_closed(rig, s) and rig.counters["dns_tcp_idle_closed"] == 1


def test_tcp_idle_does_not_close_while_a_forward_is_owed(rig):
    s = tcp_client(rig)
    s.sendall(query("www.example.com").to_wire(prepend_length=True))
    rig.pump(lambda: bool(rig.side.dns.asked))
    rig.advance(IDLE_TIMEOUT + 5)
    assert rig.server.clients
    rig.side.dns.answer(0, "203.0.113.9")
    assert tcp_read(rig, s, 1)[0].answer
    s.close()


def test_too_many_tcp_clients(rig):
    socks = [socket.create_connection(rig.addr) for _ in range(MAX_TCP_CLIENTS + 1)]
    rig.pump(lambda: rig.counters.get("dns_drop_tcp_too_many", 0) >= 1, 2.0)
    assert len(rig.server.clients) == MAX_TCP_CLIENTS and rig.counters["dns_drop_tcp_too_many"] == 1
    for s in socks:
        s.close()
    rig.pump(lambda: not rig.server.clients, 2.0)
    assert not rig.server.clients


def test_eof_after_queries_still_answers_then_closes(rig):
    s = tcp_client(rig)
    s.sendall(query("peer-1").to_wire(prepend_length=True) + query("www.example.com", qid=5).to_wire(
        prepend_length=True))
    s.shutdown(socket.SHUT_WR)
    assert len(tcp_read(rig, s, 1)) == 1
    assert rig.server.clients  # a forward is still owed
    rig.side.dns.answer(0, "203.0.113.5")
    (reply,) = tcp_read(rig, s, 1)
    assert reply.id == 5
    rig.pump(lambda: not rig.server.clients)
    assert not rig.server.clients


def test_a_client_that_does_not_read_is_not_buffered_without_bound(rig):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(rig.addr)
    s.setblocking(False)
    rig.pump(lambda: bool(rig.server.clients))
    (client,) = rig.server.clients
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    one = query("peer-1").to_wire(prepend_length=True)
    sent, paused, most = 0, False, 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not paused:
        try:
            sent += s.send(one * 256)
        except BlockingIOError:
            pass
        rig.pump(seconds=0.01)
        most = max(most, len(client.out))
        paused = paused or not client.reading
    assert paused, f"reading never paused (sent {sent} bytes, {len(client.out)} owed)"
    assert most <= dnsserver.OUT_CAP + 2 * dnsserver.READ_CHUNK * 2
    s.close()
    rig.pump(lambda: not rig.server.clients, 2.0)
    assert not rig.server.clients


def test_without_forwarding_nothing_reaches_the_forwarder():
    r = Rig(forward=False)
    try:
        reply = udp_ask(r, query("www.example.com").to_wire())
        assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & dns.flags.RA
        assert not r.side.dns.asked
    finally:
        r.close()


def test_pipelined_forwards_stop_at_the_in_flight_cap_and_resume(rig):
    s = tcp_client(rig)
    burst = MAX_IN_FLIGHT * 3
    s.sendall(b"".join(query(f"n{i}.example.com", qid=i + 1).to_wire(prepend_length=True) for i in range(burst)))
    rig.pump(lambda: len(rig.side.dns.asked) >= MAX_IN_FLIGHT)
    rig.pump(seconds=0.1)
    (client,) = rig.server.clients
    assert len(rig.side.dns.asked) == MAX_IN_FLIGHT == client.in_flight  # the rest wait in the buffer
    answered = 0
    while answered < burst:  # each answer lets one more query through
        rig.side.dns.answer(answered, "203.0.113.5")
        answered += 1
        assert client.in_flight <= MAX_IN_FLIGHT
    assert sorted(r.id for r in tcp_read(rig, s, burst)) == list(range(1, burst + 1))
    s.close()
