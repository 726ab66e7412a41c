"""Two Devices wired back to back (aioquic's ``client_and_server`` shape)."""

from __future__ import annotations

import struct

from sunbeam.shared.proto.wireguard import MAX_STAGED, Device

from .helpers import DetRandom, converse, key
from .ippackets import ipv4, ipv6

T0 = 1_800_000_000.0
A_WORKER, B_WORKER = 3, 200
A4, B4, A6, B6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"


def make_pair(max_staged: int = MAX_STAGED, seed: bytes = b"") -> tuple[Device, Device]:
    a = Device(private_key=key("a static"), worker=A_WORKER, random_bytes=DetRandom(b"a" + seed),
               max_staged=max_staged)
    b = Device(private_key=key("b static"), worker=B_WORKER, random_bytes=DetRandom(b"b" + seed),
               max_staged=max_staged)
    a.set_peer(b.public_key, [f"{B4}/32", "10.1.0.0/16", f"{B6}/128"])
    b.set_peer(a.public_key, [f"{A4}/32", f"{A6}/128"])
    return a, b


def udp4(src: str, dst: str, payload: bytes, sport: int = 1000, dport: int = 2000) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def udp6(src: str, dst: str, payload: bytes) -> bytes:
    return ipv6(src, dst, 17, struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload)


def established(now: float = T0) -> tuple[Device, Device]:
    """A pair after a handshake A initiated, confirmed by A's first data packet."""
    a, b = make_pair()
    first = udp4(A4, B4, b"hello")
    _, at_b = converse(a, b, a.encapsulate(b.public_key, [first], now), now)
    assert at_b == [first]
    return a, b
