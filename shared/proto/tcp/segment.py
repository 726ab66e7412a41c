"""TCP segments on the wire: header, options, checksum; parse and build, sans-IO.

Header (RFC 9293 section 3.1), all fields big-endian::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-------------------------------+-------------------------------+
    |          Source Port          |       Destination Port        |
    +-------------------------------+-------------------------------+
    |                        Sequence Number                        |
    +---------------------------------------------------------------+
    |                    Acknowledgment Number                      |
    +-------+-------+-+-+-+-+-+-+-+-+-------------------------------+
    | Offset| Rsrvd |C|E|U|A|P|R|S|F|            Window             |
    +-------+-------+-+-+-+-+-+-+-+-+-------------------------------+
    |           Checksum            |         Urgent Pointer        |
    +-------------------------------+-------------------------------+
    |           Options (Offset * 4 - 20 bytes, at most 40)         |
    +---------------------------------------------------------------+
    |                             Data                              |

Options (kind, length, value)::

    0 EOL            1 byte                 end of the option list
    1 NOP            1 byte                 padding
    2 MSS            4: u16                 SYN only (RFC 9293 3.7.1)
    3 Window scale   3: u8 shift (<= 14)    SYN only (RFC 7323 section 2)
    4 SACK permitted 2                      SYN only (RFC 2018)
    5 SACK           2 + 8n: n x (u32 left edge, u32 right edge), n <= 4 (RFC 2018)
    8 Timestamps     10: u32 TSval, u32 TSecr (RFC 7323; parsed, never sent by us)

Checksum: the Internet checksum (`sunbeam.shared.proto.ip.headers`) over the pseudo-header
(source, destination, protocol 6, TCP length), header and data. Fast paths use
`sunbeam.shared.proto.ip.wordsums` (``fold16``, ``data_sum`` = ``word_sum``): the data read
as one big-endian integer is congruent to its 16-bit word sum modulo 0xffff.

`parse_packet` refuses, with ``Malformed.reason`` as the counter name, everything
`headers.parse` refuses plus ``not_tcp``, ``tcp_truncated``, ``bad_data_offset``,
``bad_tcp_checksum``, ``bad_options``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..ip.headers import (
    PROTO_TCP,
    Malformed,
    build_ip,
    checksum,
    ones_sum,
    parse,
    pseudo_header_sum,
)
from ..ip.wordsums import fold16
from ..ip.wordsums import word_sum as data_sum

__all__ = [
    "ACK", "CWR", "ECE", "FIN", "PSH", "RST", "SYN", "URG",
    "Options", "Segment", "build_packet", "build_sack_option", "build_syn_options",
    "data_sum", "fold16", "parse_options", "parse_packet", "tcp_checksum",
]

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
HEADER = 20
MAX_WSCALE = 14
SEQ_MASK = 0xFFFFFFFF

OPT_EOL, OPT_NOP, OPT_MSS, OPT_WS, OPT_SACK_OK, OPT_SACK, OPT_TS = 0, 1, 2, 3, 4, 5, 8

TCP_HEADER = struct.Struct("!HHIIBBHHH")
"""sport, dport, seq, ack, offset << 4, flags, window, checksum, urgent pointer."""

def tcp_checksum(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview) -> int:
    """The checksum field value for ``segment`` (whose own checksum field must be zero)."""
    return checksum(segment, pseudo_header_sum(src, dst, PROTO_TCP, len(segment)))


class Options(NamedTuple):
    """Parsed TCP options; None (or empty) where absent."""

    mss: int | None = None
    wscale: int | None = None
    """Window shift, clamped to 14 (RFC 7323 2.3)."""
    sack_ok: bool = False
    sack: tuple[tuple[int, int], ...] = ()
    """SACK blocks as wire (32-bit) left/right edges."""
    timestamp: tuple[int, int] | None = None


NO_OPTIONS = Options()


def parse_options(buf: bytes | bytearray | memoryview) -> Options:
    """Parse an option list; unknown kinds are skipped by their length."""
    mss = wscale = ts = None
    sack_ok = False
    sack: tuple[tuple[int, int], ...] = ()
    i, n = 0, len(buf)
    while i < n:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise Malformed("bad_options", f"option {kind} without a length")
        length = buf[i + 1]
        if length < 2 or i + length > n:
            raise Malformed("bad_options", f"option {kind} of length {length}")
        body = bytes(buf[i + 2:i + length])
        if kind == OPT_MSS and length == 4:
            mss = int.from_bytes(body, "big")
        elif kind == OPT_WS and length == 3:
            wscale = min(body[0], MAX_WSCALE)
        elif kind == OPT_SACK_OK and length == 2:
            sack_ok = True
        elif kind == OPT_SACK and (length - 2) % 8 == 0:
            edges = struct.unpack(f"!{(length - 2) // 4}I", body)
            sack = tuple(zip(edges[0::2], edges[1::2]))
        elif kind == OPT_TS and length == 10:
            ts = struct.unpack("!II", body)
        elif kind in (OPT_MSS, OPT_WS, OPT_SACK_OK, OPT_SACK, OPT_TS):
            raise Malformed("bad_options", f"option {kind} of length {length}")
        i += length
    return Options(mss, wscale, sack_ok, sack, ts)


def build_syn_options(mss: int, wscale: int | None, sack_ok: bool) -> bytes:
    """MSS, then NOP + window scale, then NOP NOP + SACK permitted (Linux's order)."""
    out = struct.pack("!BBH", OPT_MSS, 4, mss)
    if wscale is not None:
        out += struct.pack("!BBBB", OPT_NOP, OPT_WS, 3, wscale)
    if sack_ok:
        out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK_OK, 2)
    return out


def build_sack_option(blocks: list[tuple[int, int]]) -> bytes:
    """NOP NOP + SACK with up to 4 blocks (wire edges)."""
    blocks = blocks[:4]
    flat = [e & SEQ_MASK for b in blocks for e in b]
    return struct.pack(f"!BBBB{len(flat)}I", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks), *flat)


class Segment(NamedTuple):
    """A parsed IP packet carrying TCP (addresses packed, 4 or 16 bytes)."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    """The raw 16-bit window field (unscaled)."""
    options: bytes
    payload: bytes

    @property
    def seg_len(self) -> int:
        """Sequence space used: data plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN) // SYN + (self.flags & FIN)


def parse_packet(packet: bytes | bytearray | memoryview, *, verify: bool = True) -> Segment:
    """Parse an IP packet holding a TCP segment; raise `Malformed` for anything we refuse."""
    ip = parse(packet)
    if ip.proto != PROTO_TCP:
        raise Malformed("not_tcp", f"protocol {ip.proto}")
    seg = ip.payload
    if len(seg) < HEADER:
        raise Malformed("tcp_truncated", f"{len(seg)} bytes")
    sport, dport, seq, ack, off, flags, window, _csum, _urg = TCP_HEADER.unpack_from(seg)
    doff = (off >> 4) * 4
    if doff < HEADER or doff > len(seg):
        raise Malformed("bad_data_offset", f"{doff} of {len(seg)}")
    if verify and ones_sum(seg, pseudo_header_sum(ip.src, ip.dst, PROTO_TCP, len(seg))) != 0xFFFF:
        raise Malformed("bad_tcp_checksum")
    return Segment(ip.src, ip.dst, sport, dport, seq, ack, flags, window, seg[HEADER:doff], seg[doff:])


def build_packet(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                 options: bytes = b"", payload: bytes | bytearray | memoryview = b"", *, ident: int = 0) -> bytes:
    """An IPv4 or IPv6 packet (by the address size) carrying one TCP segment."""
    if len(options) % 4 or len(options) > 40:
        raise ValueError(f"options of {len(options)} bytes")
    off = (HEADER + len(options)) << 2
    header = TCP_HEADER.pack(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, off, flags, window, 0, 0) + options
    csum = checksum(payload, ones_sum(header, pseudo_header_sum(src, dst, PROTO_TCP, len(header) + len(payload))))
    segment = header[:16] + csum.to_bytes(2, "big") + header[18:] + payload
    return build_ip(src, dst, PROTO_TCP, segment, ident=ident)
