"""sunbeam-proxy as a process: a connect the tailnet turns away fails at once, with the
SOCKS5 reply / HTTP status that says why.

The test plays the control service and the WireGuard worker (tests/proxy/test_proxy_service's
`Harness`); the peer's answers are the packets tailscaled sends: a TSMP reject from its
packet filter, an ICMP destination unreachable, a RST. Real-network refusals are in
tests/realnet/test_soak.py.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from sunbeam.shared.proto.ip.headers import PROTO_TSMP, build_ip, checksum, parse
from sunbeam.shared.proto.tcp.segment import ACK, RST, SYN, build_packet, parse_packet

from ..ip.vectors import PEER4
from .proxyconf import free_port, proxy_env
from .test_proxy_service import Harness

SOCKS_PORT_BASE = 21080


@pytest.fixture()
def proxy(tmp_path):
    socks, http = free_port(), free_port()
    rundir, env = proxy_env(tmp_path, [("socks5", f"127.0.0.1:{socks}"), ("http", f"127.0.0.1:{http}")],
                            'log_level = "debug"')
    h = Harness(rundir, env)
    h.socks, h.http = socks, http
    try:
        h.publish_netmap_on_subscription()
        yield h
    finally:
        h.close()


def socks_connect(port: int, ip: str, dport: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(ip) + struct.pack("!H", dport))
    return s


def socks_reply(s: socket.socket) -> int:
    head = s.recv(10)
    assert head[:1] == b"\x05", head
    return head[1]


def http_connect(port: int, target: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return s


def http_status(s: socket.socket) -> int:
    return int(s.recv(4096).split(b" ", 2)[1])


def our_syn(proxy: Harness):
    """The SYN the proxy sent toward the peer."""
    msg = proxy.to_peer()
    (pkt,) = msg.packets
    seg = parse_packet(pkt)
    assert seg.flags == SYN
    return seg


def tsmp_reject(seg) -> bytes:
    # as tailscaled's filter: from the peer to us, our flow's ports, reason 'A' (ACLs)
    return build_ip(seg.dst, seg.src, PROTO_TSMP, b"!\x06A" + struct.pack("!HH", seg.sport, seg.dport))


def icmp_host_unreachable(seg) -> bytes:
    quote = build_packet(seg.src, seg.dst, seg.sport, seg.dport, seg.seq, 0, SYN, 65535)[:28]
    message = bytearray(b"\x03\x01\x00\x00" + bytes(4) + quote)
    message[2:4] = checksum(bytes(message)).to_bytes(2, "big")
    return build_ip(seg.dst, seg.src, 1, bytes(message))


def rst_for(seg) -> bytes:
    return build_packet(seg.dst, seg.src, seg.dport, seg.sport, 0, seg.seq + 1, RST | ACK, 0)


@pytest.mark.parametrize("answer, socks_code, status, counter", [
    (tsmp_reject, 2, 403, "connect_failed_denied"),
    (icmp_host_unreachable, 4, 502, "connect_failed_host_unreachable"),
    (rst_for, 5, 502, "connect_failed_refused"),
])
def test_the_peers_refusal_reaches_the_client_at_once(proxy, answer, socks_code, status, counter):
    start = time.monotonic()
    client = socks_connect(proxy.socks, PEER4, 7777)
    seg = our_syn(proxy)
    proxy.from_peer(answer(seg))
    assert socks_reply(client) == socks_code
    assert time.monotonic() - start < 1.0

    client = http_connect(proxy.http, f"{PEER4}:7777")
    proxy.from_peer(answer(our_syn(proxy)))
    assert http_status(client) == status
    assert proxy.wait_counter(counter, 2)[counter] == 2
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("ip, socks_code, counter", [
    ("100.64.99.99", 4, "connect_failed_no_peer"),   # a tailnet address nobody has
    ("192.0.2.1", 3, "connect_failed_no_exit_node"),  # outside the tailnet, no exit node set
])
def test_an_address_no_peer_routes_is_refused_before_any_packet(proxy, ip, socks_code, counter):
    client = socks_connect(proxy.socks, ip, 80)
    assert socks_reply(client) == socks_code
    client = http_connect(proxy.http, f"{ip}:80")
    assert http_status(client) == 502
    assert proxy.wait_counter(counter, 2)[counter] == 2
    assert not proxy.wg.poll(300), "a packet went out for an unroutable address"


def test_an_unknown_name_is_refused_at_once(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.socks), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    name = b"no-such-peer"
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", 80))
    assert socks_reply(s) == 4
    assert http_status(http_connect(proxy.http, "no-such-peer:80")) == 502
    assert proxy.wait_counter("connect_failed_unknown_name", 2)


def test_a_reject_for_an_established_connection_changes_nothing(proxy):
    client = socks_connect(proxy.socks, PEER4, 80)
    seg = our_syn(proxy)
    proxy.from_peer(build_packet(seg.dst, seg.src, seg.dport, seg.sport, 5000, seg.seq + 1, SYN | ACK, 65535))
    assert socks_reply(client) == 0
    proxy.from_peer(tsmp_reject(seg))
    proxy.wait_counter("ip.tsmp_rejected", 1)
    client.sendall(b"hello")
    deadline = time.monotonic() + 5
    while not any(parse(p).payload.endswith(b"hello") for p in proxy.to_peer().packets):
        assert time.monotonic() < deadline, "the data never went out"
    assert proxy.counters().get("tcp_reject_ignored") == 1
