"""TSMP rejects and ICMP/ICMPv6 destination unreachables name the refused flow of ours."""

from __future__ import annotations

import struct

import pytest
from sunbeam.shared.proto.ip import IpResponder
from sunbeam.shared.proto.ip.headers import addr_bytes, build_ip, checksum, pseudo_header_sum
from sunbeam.shared.proto.ip.unreachable import Unreachable
from sunbeam.shared.proto.tcp.segment import SYN, build_packet

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM

O4, P4, O6, P6 = (addr_bytes(a) for a in (OURS4, PEER4, OURS6, PEER6))


@pytest.fixture()
def responder():
    return IpResponder({OURS4, OURS6})


@pytest.mark.parametrize("name, ours, peer", [("tsmp4_reject", O4, P4), ("tsmp6_reject", O6, P6)])
def test_tailscaled_reject_names_our_flow(responder, name, ours, peer):
    # what tailscaled's filter sends for a SYN it refuses: us:12345 -> peer:443, reason 'A'
    got = responder.handle(UPSTREAM[name])
    assert got == Unreachable(ours, peer, 6, 12345, 443, "denied", "tsmp reason 'A'")
    assert responder.counters["ip.tsmp_rejected"] == 1


def _icmp_error(version: int, icmp_type: int, code: int, quote: bytes, *, frm: bytes | None = None) -> bytes:
    """An ICMP(v6) error from the peer (or ``frm``) to us quoting ``quote``."""
    src, dst = (frm or (P4 if version == 4 else P6)), (O4 if version == 4 else O6)
    message = bytes([icmp_type, code, 0, 0]) + bytes(4) + quote
    if version == 4:
        csum = checksum(message)
    else:
        csum = checksum(message, pseudo_header_sum(src, dst, 58, len(message)))
    message = message[:2] + csum.to_bytes(2, "big") + message[4:]
    return build_ip(src, dst, 1 if version == 4 else 58, message)


def _our_syn(version: int) -> bytes:
    ours, peer = (O4, P4) if version == 4 else (O6, P6)
    return build_packet(ours, peer, 40001, 8080, 1000, 0, SYN, 65535)


@pytest.mark.parametrize("version, icmp_type, code, reason", [
    (4, 3, 0, "net_unreachable"), (4, 3, 1, "host_unreachable"), (4, 3, 3, "refused"),
    (4, 3, 13, "denied"), (4, 3, 10, "denied"),
    (6, 1, 0, "net_unreachable"), (6, 1, 1, "denied"), (6, 1, 3, "host_unreachable"), (6, 1, 4, "refused"),
])
def test_icmp_destination_unreachable_names_the_quoted_flow(responder, version, icmp_type, code, reason):
    header = 20 if version == 4 else 40
    syn = _our_syn(version)
    for quote in (syn[:header + 8], syn):  # RFC 792's minimum quote, and a whole packet (RFC 1812 / 4443)
        got = responder.handle(_icmp_error(version, icmp_type, code, quote))
        assert isinstance(got, Unreachable)
        ours, peer = (O4, P4) if version == 4 else (O6, P6)
        assert (got.local, got.remote, got.proto, got.local_port, got.remote_port, got.reason) == (
            ours, peer, 6, 40001, 8080, reason)
    assert responder.counters["ip.icmp_unreachable"] == 2


def test_a_router_may_send_it():
    """Behind a subnet route the ICMP comes from a router, not the destination."""
    router = addr_bytes("100.64.0.77")
    got = IpResponder({OURS4}).handle(_icmp_error(4, 3, 1, _our_syn(4)[:28], frm=router))
    assert isinstance(got, Unreachable) and got.remote == P4 and got.reason == "host_unreachable"


def test_fragmentation_needed_is_not_a_refusal(responder):
    assert responder.handle(_icmp_error(4, 3, 4, _our_syn(4)[:28])) is None
    assert responder.counters["ip.icmp_other"] == 1


@pytest.mark.parametrize("packet, reason", [
    (_icmp_error(4, 3, 1, _our_syn(4)[:22]), "icmp_quote_truncated"),
    (_icmp_error(4, 3, 1, b""), "icmp_quote_wrong_family"),
    (_icmp_error(4, 3, 1, _our_syn(6)[:48]), "icmp_quote_wrong_family"),
    (_icmp_error(6, 1, 4, _our_syn(6)[:43]), "icmp_quote_truncated"),
    (_icmp_error(4, 3, 1, bytes([0x41]) + _our_syn(4)[1:28]), "icmp_quote_truncated"),  # IHL 1
])
def test_unreadable_quotes_are_counted_drops(responder, packet, reason):
    assert responder.handle(packet) is None
    assert responder.last_drop.reason == reason and responder.last_drop.malformed
    assert responder.counters[f"ip.drop.{reason}"] == 1


def test_udp_quote_keeps_its_ports_other_protocols_have_none(responder):
    udp = build_ip(O4, P4, 17, struct.pack("!HHHH", 5353, 53, 8, 0))
    got = responder.handle(_icmp_error(4, 3, 3, udp))
    assert (got.proto, got.local_port, got.remote_port) == (17, 5353, 53)
    gre = build_ip(O4, P4, 47, bytes(8))
    got = responder.handle(_icmp_error(4, 3, 2, gre))
    assert (got.proto, got.local_port, got.remote_port, got.reason) == (47, 0, 0, "refused")
