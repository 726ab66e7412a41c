"""STUN Binding (RFC 5389) as tailscaled uses it for endpoint discovery (ts:net/stun), sans-IO.

Header (RFC 5389 section 6), 20 bytes, all integers big-endian::

    type     u16   top two bits 0; 0x0001 Binding Request, 0x0101 Binding Success Response
    length   u16   bytes of attributes after the header; a multiple of 4
    cookie   4 B   21 12 a4 42
    txid     12 B  transaction id (random; chosen by the caller, echoed by the server)

Attributes (section 15), TLV, each value zero-padded to a multiple of 4::

    type u16 | length u16 (unpadded) | value | pad to 4

    0x0001 MAPPED-ADDRESS      0 | family u8 (1 IPv4, 2 IPv6) | port u16 | addr 4/16
    0x0020 XOR-MAPPED-ADDRESS  same, port ^ 0x2112, addr ^ (cookie + txid)
    0x8020                     XOR-MAPPED-ADDRESS under a comprehension-optional number
                               that some servers send; tailscale accepts it, so do we
    0x8022 SOFTWARE            "tailnode" (8 B, no padding); tailscale's STUN server (and
                               Headscale's embedded one) drop requests without it
    0x8028 FINGERPRINT         CRC-32 of the message up to this attribute ^ 0x5354554e,
                               computed with the header length already counting it

Our request is byte-for-byte ``stun.Request(txid)``: header (length 20) | SOFTWARE |
FINGERPRINT, 40 bytes. Responses are read as ``stun.ParseResponse`` reads them:
XOR-MAPPED-ADDRESS (the last one, either number) wins, else MAPPED-ADDRESS; a v4-mapped
IPv6 address is reported as IPv4 (Go's ``Unmap``); unknown attributes are skipped; any
malformed address attribute fails the whole message. One deliberate difference: bytes
after the declared length are rejected ("bad_length"), as `is_stun` rejects them.

The socket also carries WireGuard (first byte 1..4, bytes 2..3 zero, never 20 bytes
long) and disco ("TS💬", first byte 0x54: top bits 01), which `is_stun` tells apart.

Every malformed datagram raises `StunError` (a ValueError with a short ``reason`` for
counters) and nothing else; work is bounded by the datagram length.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib

__all__ = [
    "HEADER_LEN",
    "MAGIC_COOKIE",
    "SOFTWARE",
    "TXID_LEN",
    "StunError",
    "binding_request",
    "is_stun",
    "parse_response",
]

HEADER_LEN = 20
TXID_LEN = 12
MAGIC_COOKIE = b"\x21\x12\xa4\x42"
SOFTWARE = b"tailnode"

TYPE_BINDING_REQUEST = 0x0001
TYPE_BINDING_SUCCESS = 0x0101

ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_XOR_MAPPED_ADDRESS_ALT = 0x8020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028

FINGERPRINT_XOR = 0x5354554E
_FAMILY_LEN = {1: 4, 2: 16}
_HEADER = struct.Struct(">HH4s12s")
_ATTR = struct.Struct(">HH")


class StunError(ValueError):
    """A datagram is not a STUN Binding Success Response we can read (a counted drop)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """not_stun, bad_length, truncated, not_success, no_address, bad_family."""


def fingerprint(message: bytes) -> int:
    """FINGERPRINT value over `message` (everything before the attribute)."""
    return zlib.crc32(message) ^ FINGERPRINT_XOR


def binding_request(txid: bytes) -> bytes:
    """A Binding Request with SOFTWARE "tailnode" and FINGERPRINT (= ts ``stun.Request``)."""
    if len(txid) != TXID_LEN:
        raise ValueError(f"STUN txid must be {TXID_LEN} bytes, got {len(txid)}")
    software = _ATTR.pack(ATTR_SOFTWARE, len(SOFTWARE)) + SOFTWARE  # 8 B: no padding
    attrs_len = len(software) + 8  # + FINGERPRINT
    head = _HEADER.pack(TYPE_BINDING_REQUEST, attrs_len, MAGIC_COOKIE, txid) + software
    return head + _ATTR.pack(ATTR_FINGERPRINT, 4) + struct.pack(">I", fingerprint(head))


def is_stun(data: bytes) -> bool:
    """Cheap demux test: a whole STUN message (top bits 0, cookie, exact length)."""
    n = len(data)
    return (
        n >= HEADER_LEN
        and data[0] & 0xC0 == 0
        and data[4:8] == MAGIC_COOKIE
        and (length := (data[2] << 8) | data[3]) % 4 == 0
        and length == n - HEADER_LEN
    )


def parse_response(data: bytes) -> tuple[bytes, str]:
    """(txid, ``"ip:port"`` / ``"[v6]:port"``) from a Binding Success Response."""
    n = len(data)
    if n < HEADER_LEN or data[0] & 0xC0 or data[4:8] != MAGIC_COOKIE:
        raise StunError("not_stun")
    msg_type, length, _, txid = _HEADER.unpack_from(data)
    if length > n - HEADER_LEN:
        raise StunError("truncated")
    if length != n - HEADER_LEN or length % 4:
        raise StunError("bad_length")
    if msg_type != TYPE_BINDING_SUCCESS:
        raise StunError("not_success")
    xor_addr = mapped_addr = None
    pos = HEADER_LEN
    while pos < n:  # each pass consumes >= 4 bytes: at most length / 4 passes
        if n - pos < 4:
            raise StunError("truncated")
        attr_type, attr_len = _ATTR.unpack_from(data, pos)
        pos += 4
        end = pos + attr_len
        if pos + ((attr_len + 3) & ~3) > n:
            raise StunError("truncated")
        if attr_type in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_ALT):
            xor_addr = _address(data[pos:end], txid, xor=True)
        elif attr_type == ATTR_MAPPED_ADDRESS:
            mapped_addr = _address(data[pos:end], txid, xor=False)
        pos += (attr_len + 3) & ~3
    addr = xor_addr or mapped_addr
    if addr is None:
        raise StunError("no_address")
    return txid, addr


def _address(value: bytes, txid: bytes, *, xor: bool) -> str:
    """Decode a (XOR-)MAPPED-ADDRESS value: 0 | family | port | address."""
    if len(value) < 4:
        raise StunError("truncated")
    addr_len = _FAMILY_LEN.get(value[1])
    if addr_len is None:
        raise StunError("bad_family")
    if len(value) < 4 + addr_len:
        raise StunError("truncated")
    port = (value[2] << 8) | value[3]
    raw = value[4 : 4 + addr_len]
    if xor:
        port ^= 0x2112
        raw = bytes(a ^ b for a, b in zip(raw, MAGIC_COOKIE + txid))
    if addr_len == 4:
        return f"{ipaddress.IPv4Address(raw)}:{port}"
    v6 = ipaddress.IPv6Address(raw)
    v4 = v6.ipv4_mapped
    return f"{v4}:{port}" if v4 is not None else f"[{v6}]:{port}"
