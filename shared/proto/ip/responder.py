"""`IpResponder`: what the proxy does with each IP packet a peer sent us, sans-IO.

``handle(packet)`` returns one of:

- `Reply(packet, kind)`: an answer to send back to the peer the packet came from: an
  ICMP/ICMPv6 echo reply to an echo request, or a TSMP pong to a TSMP ping;
- `EchoReplied(src, ident, seq)`: an echo reply, for our own pinger to match;
- `Unreachable(...)`: a TSMP reject or an ICMP/ICMPv6 destination unreachable naming a
  flow of ours (`unreachable`), for the TCP stack to end a connect that waits on it;
- None: nothing to do; the reason is counted, and a malformed packet's reason and detail
  are in ``last_drop`` for the shell's rate-limited log.

Counters (``counters.incr(name)``; names ``ip.<reason>``):

- answered / delivered: ``ip.echo_request``, ``ip.tsmp_ping``, ``ip.echo_reply``,
  ``ip.tsmp_rejected``, ``ip.icmp_unreachable``;
- ignored, not a fault: ``ip.not_for_us`` (destination not one of our addresses),
  ``ip.unhandled_tcp``, ``ip.unhandled_udp`` (the TCP/UDP engine comes later),
  ``ip.unhandled_proto``, ``ip.icmp_other`` (ICMP types other than echo),
  ``ip.tsmp_pong``, ``ip.tsmp_disco_advert`` (tailscaled sends one
  with every ``tailscale ping --tsmp``);
- malformed (peer garbage, ``Drop.malformed``): ``ip.drop.<reason>`` with the reasons of
  `headers.parse`, `icmp.parse_icmp`, `tsmp.parse_tsmp` and
  `unreachable.unreachable_from_icmp`.

Ownership: one responder per proxy process, owned by its loop thread; ``addresses`` is
replaced (`set_addresses`) whenever the netmap changes our node's addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from .headers import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_TSMP,
    PROTO_UDP,
    Malformed,
    addr_text,
    packed_set,
    parse,
)
from .icmp import echo_reply_to, parse_echo, parse_icmp
from .tsmp import TsmpDiscoAdvert, TsmpPing, TsmpPong, TsmpRejected, parse_tsmp, pong_to
from .unreachable import Unreachable, unreachable_from_icmp, unreachable_from_tsmp

__all__ = ["Drop", "EchoReplied", "IpResponder", "Reply", "Tally", "Unreachable"]

AddressLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address


class CounterSink(Protocol):
    def incr(self, name: str, n: int = 1) -> None: ...


class Tally:
    """Counters of a responder that was given none (tests, tools)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def incr(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n

    def __getitem__(self, name: str) -> int:
        return self.values.get(name, 0)


class Reply(NamedTuple):
    """A packet to send back to the peer the handled packet came from."""

    packet: bytes
    kind: str
    """``echo_reply`` or ``tsmp_pong``."""


class EchoReplied(NamedTuple):
    """An ICMP echo reply addressed to us (for `parse_echo_reply`-style matching)."""

    src: str
    ident: int
    seq: int


class Drop(NamedTuple):
    reason: str
    detail: str = ""
    malformed: bool = False


_UNHANDLED = {PROTO_TCP: "unhandled_tcp", PROTO_UDP: "unhandled_udp"}


class IpResponder:
    def __init__(self, addresses: Iterable[AddressLike] = (), *, counters: CounterSink | None = None,
                 peerapi_port: int = 0) -> None:
        self.addresses: frozenset[bytes] = packed_set(addresses)
        """Our tailnet addresses, packed."""
        self.counters: CounterSink = counters if counters is not None else Tally()
        self.peerapi_port = peerapi_port
        self.last_drop: Drop | None = None
        """Why the last ``handle`` returned None."""

    def set_addresses(self, addresses: Iterable[AddressLike]) -> None:
        """Replace our addresses (text like ``"100.64.0.5/32"``, ipaddress or packed)."""
        self.addresses = packed_set(addresses)

    def handle(self, packet: bytes) -> Reply | EchoReplied | Unreachable | None:
        try:
            return self._handle(packet)
        except Malformed as exc:
            self._drop(Drop(exc.reason, exc.detail, malformed=True))
            return None

    def _handle(self, packet: bytes) -> Reply | EchoReplied | Unreachable | None:
        pkt = parse(packet)
        if pkt.dst not in self.addresses:
            self._drop(Drop("not_for_us", addr_text(pkt.dst)))
            return None
        proto = pkt.proto
        if proto == (PROTO_ICMP if pkt.version == 4 else PROTO_ICMPV6):
            msg = parse_icmp(pkt)
            echo = parse_echo(pkt, msg)
            if echo is None:
                unreachable = unreachable_from_icmp(pkt, msg)
                if unreachable is not None:
                    self.counters.incr("ip.icmp_unreachable")
                    return unreachable
                self._drop(Drop("icmp_other", f"type {msg.type} code {msg.code}"))
                return None
            if echo.request:
                self.counters.incr("ip.echo_request")
                return Reply(echo_reply_to(pkt, echo), "echo_reply")
            self.counters.incr("ip.echo_reply")
            return EchoReplied(addr_text(pkt.src), echo.ident, echo.seq)
        if proto == PROTO_TSMP:
            tsmp = parse_tsmp(pkt.payload)
            if isinstance(tsmp, TsmpPing):
                self.counters.incr("ip.tsmp_ping")
                return Reply(pong_to(pkt, tsmp, self.peerapi_port), "tsmp_pong")
            if isinstance(tsmp, TsmpPong):
                self._drop(Drop("tsmp_pong", tsmp.data.hex()))
                return None
            if isinstance(tsmp, TsmpRejected):
                self.counters.incr("ip.tsmp_rejected")
                return unreachable_from_tsmp(pkt, tsmp)
            assert isinstance(tsmp, TsmpDiscoAdvert)
            self._drop(Drop("tsmp_disco_advert", tsmp.key.hex()))
            return None
        self._drop(Drop(_UNHANDLED.get(proto, "unhandled_proto"), str(proto)))
        return None

    def _drop(self, drop: Drop) -> None:
        self.last_drop = drop
        self.counters.incr(f"ip.drop.{drop.reason}" if drop.malformed else f"ip.{drop.reason}")
