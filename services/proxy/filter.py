"""The netmap's packet filter, for connections peers open to us (inbound).

Rules (tailcfg.FilterRule): a packet is allowed when some rule has a source entry matching
its source IP, a destination entry matching its destination IP and port, and its IP
protocol in ``IPProto`` (empty = TCP, UDP, ICMPv4, ICMPv6). Entry forms: ``"*"``, an IP,
a CIDR, a range ``"a-b"``; ``"cap:..."`` sources (capability grants) match nothing here.
No filter received yet, or an empty one, allows nothing (tailscaled's default-deny).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sunbeam.shared.proto.tailcfg import FilterRule

TCP, UDP, ICMP4, ICMP6 = 6, 17, 1, 58
DEFAULT_PROTOS = frozenset({TCP, UDP, ICMP4, ICMP6})
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Set:
    """A set of addresses given as ``*`` / IP / CIDR / range entries."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self.nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.ranges: list[tuple[Address, Address]] = []
        for entry in entries:
            entry = entry.strip()
            try:
                if entry == "*":
                    self.any = True
                elif "-" in entry and "/" not in entry:
                    lo, hi = (ipaddress.ip_address(x) for x in entry.split("-", 1))
                    self.ranges.append((lo, hi))
                elif not entry.startswith("cap:"):
                    self.nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # an entry we cannot read matches nothing (and denies nothing else)

    def __contains__(self, addr: Address) -> bool:
        return (self.any or any(addr in n for n in self.nets)
                or any(lo.version == addr.version and lo <= addr <= hi for lo, hi in self.ranges))


@dataclass(frozen=True)
class _Dst:
    addrs: _Set
    first: int
    last: int


class _Rule:
    def __init__(self, rule: FilterRule) -> None:
        self.src = _Set(rule.src_ips or ())
        self.dsts = [_Dst(_Set([d.ip]), d.ports.first, d.ports.last) for d in (rule.dst_ports or ())]
        self.protos = frozenset(rule.ip_proto) if rule.ip_proto else DEFAULT_PROTOS


class PacketFilter:
    def __init__(self, rules: Iterable[FilterRule] | None) -> None:
        self.rules = [_Rule(r) for r in (rules or ())]

    def allows(self, src_ip: str, dst_ip: str, dst_port: int, proto: int = TCP) -> bool:
        try:
            src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
        except ValueError:
            return False
        for rule in self.rules:
            if proto not in rule.protos or src not in rule.src:
                continue
            if any(d.first <= dst_port <= d.last and dst in d.addrs for d in rule.dsts):
                return True
        return False
