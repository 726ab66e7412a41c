"""The small IP layer: IPv4/IPv6 headers and the Internet checksum (`headers`), ICMP and
ICMPv6 echo (`icmp`), TSMP, Tailscale's IP protocol 99 (`tsmp`), and `IpResponder`, which
answers echo requests and TSMP pings addressed to our tailnet addresses (`responder`).
All sans-IO: bytes in, bytes out. See each module for its wire layout."""

from .headers import IPPacket, Malformed, checksum, checksum_many, parse
from .icmp import build_echo_request, parse_echo_reply
from .responder import Drop, EchoReplied, IpResponder, Reply
from .tsmp import build_tsmp_ping, parse_tsmp

__all__ = [
    "Drop",
    "EchoReplied",
    "IPPacket",
    "IpResponder",
    "Malformed",
    "Reply",
    "build_echo_request",
    "build_tsmp_ping",
    "checksum",
    "checksum_many",
    "parse",
    "parse_echo_reply",
    "parse_tsmp",
]
