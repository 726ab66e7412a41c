"""Why a packet we sent cannot arrive, as the far side tells us: sans-IO.

Two messages say so, and both name the refused flow (our address and port, theirs):

- a TSMP reject (`tsmp.TsmpRejected`, IP protocol 99): tailscaled's packet filter dropped
  our packet (ts:net/tstun/wrap.go sends one for a refused TCP SYN). The IP header goes
  from the rejecting peer to us; the payload's ports are the flow's: source port ours,
  destination port theirs. Every reason ('A' ACL, 'S' shields up, 'F' no IP forwarding,
  'W' host firewall) means the same to a connecting client: ``denied``.
- an ICMP destination unreachable (IPv4 type 3) or ICMPv6 destination unreachable (type 1),
  from the peer or a router behind a subnet route, quoting our packet's IP header and its
  first 8 bytes (RFC 792, RFC 4443; the quote may be cut short after the ports)::

      ICMP:   type | code | checksum | unused (4) | quoted IP header | quoted ports (4) ...

  Codes, as a connect outcome (Linux maps them to errnos the same way, ``icmp_err_convert``):

      IPv4 0 net, 6 net unknown, 11 net for TOS        -> net_unreachable
      IPv4 1 host, 5 source route, 7 host unknown,
           12 host for TOS                             -> host_unreachable
      IPv4 2 protocol, 3 port                          -> refused
      IPv4 9, 10, 13 administratively prohibited,
           14 precedence violation, 15 cutoff          -> denied
      IPv4 4 fragmentation needed                      -> not an error here (path MTU)
      IPv6 0 no route, 2 beyond scope                  -> net_unreachable
      IPv6 3 address unreachable                       -> host_unreachable
      IPv6 4 port unreachable                          -> refused
      IPv6 1 prohibited, 5 source policy, 6 reject route -> denied

`unreachable_from_tsmp` and `unreachable_from_icmp` turn them into `Unreachable`; the
TCP stack ends a connection still waiting for its SYN-ACK on it (`TcpStack.reject`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .headers import PROTO_TCP, PROTO_UDP, IPPacket, Malformed
from .icmp import IcmpMessage
from .tsmp import TsmpRejected

__all__ = ["Unreachable", "unreachable_from_icmp", "unreachable_from_tsmp"]

DEST_UNREACHABLE_V4 = 3
DEST_UNREACHABLE_V6 = 1

_V4_CODES = {0: "net_unreachable", 6: "net_unreachable", 11: "net_unreachable",
             1: "host_unreachable", 5: "host_unreachable", 7: "host_unreachable", 12: "host_unreachable",
             2: "refused", 3: "refused",
             9: "denied", 10: "denied", 13: "denied", 14: "denied", 15: "denied"}
_V6_CODES = {0: "net_unreachable", 2: "net_unreachable", 3: "host_unreachable", 4: "refused",
             1: "denied", 5: "denied", 6: "denied"}


class Unreachable(NamedTuple):
    """The far side's word that the flow ``local:local_port -> remote:remote_port`` (IP
    protocol ``proto``; addresses packed) cannot go through."""

    local: bytes
    remote: bytes
    proto: int
    local_port: int
    remote_port: int
    reason: str
    """``denied``, ``refused``, ``host_unreachable`` or ``net_unreachable``."""
    detail: str


def unreachable_from_tsmp(pkt: IPPacket, reject: TsmpRejected) -> Unreachable:
    """The flow a TSMP reject carried by ``pkt`` refuses (the peer is ``pkt.src``)."""
    return Unreachable(pkt.dst, pkt.src, reject.proto, reject.src_port, reject.dst_port, "denied",
                       f"tsmp reason {chr(reject.reason)!r}")


def unreachable_from_icmp(pkt: IPPacket, msg: IcmpMessage) -> Unreachable | None:
    """The flow an ICMP(v6) destination unreachable in ``pkt`` refuses; None for other
    ICMP types and codes. Raises `Malformed` (``icmp_quote_truncated``,
    ``icmp_quote_wrong_family``) when the quoted packet cannot name a flow."""
    if pkt.version == 4:
        if msg.type != DEST_UNREACHABLE_V4 or msg.code not in _V4_CODES:
            return None
        reason = _V4_CODES[msg.code]
    else:
        if msg.type != DEST_UNREACHABLE_V6 or msg.code not in _V6_CODES:
            return None
        reason = _V6_CODES[msg.code]
    quote = msg.body[4:]  # after the 4 unused bytes
    if not quote or quote[0] >> 4 != pkt.version:
        raise Malformed("icmp_quote_wrong_family", f"quoted version {quote[0] >> 4 if quote else '-'}")
    if pkt.version == 4:
        header = (quote[0] & 0x0F) * 4
        if header < 20 or len(quote) < header + 4:
            raise Malformed("icmp_quote_truncated", f"{len(quote)} bytes quoted")
        proto, src, dst = quote[9], quote[12:16], quote[16:20]
    else:
        header = 40
        if len(quote) < header + 4:
            raise Malformed("icmp_quote_truncated", f"{len(quote)} bytes quoted")
        proto, src, dst = quote[6], quote[8:24], quote[24:40]
    sport, dport = struct.unpack_from("!HH", quote, header) if proto in (PROTO_TCP, PROTO_UDP) else (0, 0)
    return Unreachable(src, dst, proto, sport, dport, reason, f"icmp type {msg.type} code {msg.code}")
