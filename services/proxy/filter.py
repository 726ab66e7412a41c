"""The netmap's packet filter, for connections peers open to us (inbound).

Rules (tailcfg.FilterRule): a packet is allowed when some rule has a source entry matching
its source IP, a destination entry matching its destination IP and port, and its IP
protocol in ``IPProto`` (absent or empty = TCP, UDP, ICMPv4, ICMPv6). No filter received
yet, or an empty one, allows nothing (tailscaled's default-deny).

Address entries (``SrcIPs`` and ``DstPorts[].IP``) are read as tailscaled reads them
(ts:wgengine/filter/tailcfg.go ``parseIPSet``), exactly as written, without trimming:

- ``"*"``: every address, IPv4 and IPv6;
- an address: ``"100.64.0.1"``, ``"fd7a:115c:a1e0::1"``;
- a CIDR: ``"100.64.0.0/10"``, ``"100.64.0.1/32"``, ``"fd7a:115c:a1e0::/48"``, with a
  decimal prefix length (no leading zero, no netmask form) and no host bits set;
- a range ``"a-b"``, inclusive: both ends of one family, ``a <= b``;
- ``"cap:<name>"`` (sources only): a peer capability, which matches no address here.

An entry of one family never matches an address of the other (an IPv4-mapped IPv6 address
is IPv6). Control resolves ACL names (``autogroup:...``, ``tag:...``, users, hosts) to
addresses before sending the filter, so such a name on the wire is a bad entry.

A *bad entry* matches nothing, the rest of its rule still works, and it is listed in
`PacketFilter.bad_entries` with a reason (the proxy counts them, ``filter_bad_entries``).
Bad entries are: any other address entry (including a zone ``%eth0``, whitespace, mixed
families or ``a > b`` in a range), a ``cap:`` destination, a port range with
``First > Last``, an ``IPProto`` number outside 0..255 (dropped; a rule left with none
matches nothing, as in tailscaled) and the pre-capability-version-7 fields ``SrcBits`` and
``DstPorts[].Bits`` (tailscaled drops the whole filter for them; here only that rule or
destination matches nothing).

msgspec's typed decoding of the MapResponse (tailcfg) already guarantees the types: entries
are ``str``, ports 0..65535, ``IPProto`` values int64. Matching works on
``(IP version, first, last)`` integer intervals, so no comparison mixes families.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

import msgspec
from sunbeam.shared.proto.tailcfg import FilterRule

TCP, UDP, ICMP4, ICMP6 = 6, 17, 1, 58
DEFAULT_PROTOS = frozenset({TCP, UDP, ICMP4, ICMP6})
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Interval = tuple[int, int, int]
"""``(IP version, first, last)``, addresses as integers, inclusive."""

_SHOWN = 64
"""A bad entry is kept (and logged) cut to this many characters."""


class BadEntry(NamedTuple):
    """A filter entry that matches nothing: what it was (cut short) and why."""

    entry: str
    reason: str


class _Bad(ValueError):
    pass


def _address(text: str) -> Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise _Bad("not an IP address, CIDR, range or '*'") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise _Bad("address with a zone")
    return addr


def parse_entry(entry: str) -> Interval | None:
    """The addresses an entry stands for: an interval, or None for ``"*"`` (all of both
    families). Raises `_Bad` (a ValueError) with the reason for anything else; the caller
    handles ``cap:`` entries."""
    if entry == "*":
        return None
    if "/" in entry:
        text, _, bits_text = entry.partition("/")
        addr = _address(text)
        decimal = bits_text.isascii() and bits_text.isdigit() and len(bits_text) <= 3
        if not decimal or (bits_text.startswith("0") and bits_text != "0"):
            raise _Bad("prefix length is not a decimal number")
        if int(bits_text) > addr.max_prefixlen:
            raise _Bad(f"prefix length over {addr.max_prefixlen}")
        net = ipaddress.ip_network((addr, int(bits_text)), strict=False)
        if net.network_address != addr:
            raise _Bad("CIDR with host bits set")
        return addr.version, int(addr), int(net.broadcast_address)
    if entry.count("-") == 1:
        lo_text, _, hi_text = entry.partition("-")
        lo, hi = _address(lo_text), _address(hi_text)
        if lo.version != hi.version:
            raise _Bad("range ends of different IP families")
        if int(lo) > int(hi):
            raise _Bad("range start after its end")
        return lo.version, int(lo), int(hi)
    addr = _address(entry)
    return addr.version, int(addr), int(addr)


def _shown(entry: object) -> str:
    text = entry if isinstance(entry, str) else repr(entry)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class _Set:
    """The addresses of some entries: ``"*"`` or intervals."""

    def __init__(self) -> None:
        self.any = False
        self.intervals: list[Interval] = []

    def add(self, entry: str) -> None:
        """Add one entry; raises `_Bad` if it cannot be read (the set is then unchanged)."""
        interval = parse_entry(entry)
        if interval is None:
            self.any = True
        else:
            self.intervals.append(interval)

    def contains(self, version: int, addr: int) -> bool:
        return self.any or any(v == version and lo <= addr <= hi for v, lo, hi in self.intervals)


class _Dst(msgspec.Struct, frozen=True):
    addrs: _Set
    first: int
    last: int


class _Rule:
    def __init__(self, rule: FilterRule, bad: list[BadEntry]) -> None:
        self.src = _Set()
        self.dsts: list[_Dst] = []
        self.protos = DEFAULT_PROTOS
        if rule.ip_proto:
            self.protos = frozenset(p for p in rule.ip_proto if 0 <= p <= 255)
            bad += (BadEntry(f"IPProto {p}", "protocol number outside 0..255") for p in rule.ip_proto
                    if p not in self.protos)
        if rule.src_bits:
            bad.append(BadEntry(f"SrcBits {_shown(rule.src_bits)}", "pre-capver-7 SrcBits: the rule matches nothing"))
        else:
            for entry in rule.src_ips or ():
                if entry.startswith("cap:"):
                    continue  # a peer capability: no address matches it
                try:
                    self.src.add(entry)
                except _Bad as exc:
                    bad.append(BadEntry(_shown(entry), str(exc)))
        for d in rule.dst_ports or ():
            first, last = d.ports.first, d.ports.last
            try:
                if d.bits is not None:
                    raise _Bad("pre-capver-7 Bits")
                if d.ip.startswith("cap:"):
                    raise _Bad("capability as a destination")
                if not 0 <= first <= last <= 65535:
                    raise _Bad(f"port range {first}-{last} is empty or outside 0..65535")
                addrs = _Set()
                addrs.add(d.ip)
            except _Bad as exc:
                bad.append(BadEntry(_shown(d.ip), str(exc)))
                continue
            self.dsts.append(_Dst(addrs, first, last))


class PacketFilter:
    def __init__(self, rules: Iterable[FilterRule] | None) -> None:
        self.source = rules
        """What it was built from (the netmap's ``packet_filter``)."""
        self.bad_entries: list[BadEntry] = []
        """The entries that match nothing because they cannot be read, in rule order."""
        self.rules = [_Rule(r, self.bad_entries) for r in (rules or ())]

    def allows(self, src_ip: str, dst_ip: str, dst_port: int, proto: int = TCP) -> bool:
        src, dst = _probe(src_ip), _probe(dst_ip)
        if src is None or dst is None:
            return False
        for rule in self.rules:
            if proto not in rule.protos or not rule.src.contains(*src):
                continue
            if any(d.first <= dst_port <= d.last and d.addrs.contains(*dst) for d in rule.dsts):
                return True
        return False


def _probe(ip: str) -> tuple[int, int] | None:
    """A packet's address as ``(version, integer)``; None if it is not a plain address."""
    try:
        addr = _address(ip)
    except _Bad:
        return None
    return addr.version, int(addr)
