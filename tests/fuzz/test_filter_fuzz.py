"""Property tests of the netmap's packet filter (services/proxy/filter.py) on rules built
from arbitrary strings and numbers (the byte-level target is ``packet_filter`` in
targets_filter.py).

- Any rule the tailcfg decoder can hand over builds a filter without raising, and
  ``allows()`` answers a bool for any source, destination, port and protocol.
- A well-formed rule matches exactly its own addresses, ports and protocols (checked
  against `ipaddress` at the edges of each entry), and unreadable entries mixed into it
  are each counted once and change no answer.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunbeam.services.proxy.filter import DEFAULT_PROTOS, PacketFilter
from sunbeam.shared.proto.tailcfg import FilterRule, NetPortRange, PortRange

I64 = st.integers(-(2**63), 2**63 - 1)
U16 = st.integers(0, 65535)
ALL_PORTS = PortRange(first=0, last=65535)

_addr_text = st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: a.exploded),
                       st.sampled_from(["100.64.0.1", "fd7a:115c:a1e0::1", "::", "0.0.0.0", "::ffff:1.2.3.4"]))
_piece = st.one_of(_addr_text, st.sampled_from(["*", "-", "/", "%eth0", " ", "\u00a0", "cap:", "autogroup:", "0", "32",
                                                "128", "129", "010", ":", ".", "١"]),
                   st.integers(-1, 200).map(str), st.text(max_size=6))
ENTRY = st.one_of(st.text(max_size=40), st.lists(_piece, max_size=4).map("".join),
                  st.tuples(_addr_text, _addr_text).map("-".join),
                  st.tuples(_addr_text, st.integers(-1, 140)).map(lambda t: f"{t[0]}/{t[1]}"))
"""Near-valid and arbitrary entries: addresses, ranges, CIDRs, fragments glued together."""

RULE = st.builds(
    FilterRule,
    src_ips=st.none() | st.lists(ENTRY, max_size=6),
    src_bits=st.none() | st.lists(I64, max_size=2),
    dst_ports=st.none() | st.lists(st.builds(NetPortRange, ip=ENTRY, bits=st.none() | I64,
                                             ports=st.builds(PortRange, first=U16, last=U16)), max_size=6),
    ip_proto=st.none() | st.lists(st.one_of(st.integers(-2, 260), I64), max_size=4),
)
PROBE_IP = st.one_of(_addr_text, ENTRY)
PROTO = st.one_of(st.sampled_from(sorted(DEFAULT_PROTOS)), st.integers())


@settings(max_examples=400, deadline=None)
@given(st.lists(RULE, max_size=4), st.lists(st.tuples(PROBE_IP, PROBE_IP, st.integers(), PROTO), max_size=8))
def test_any_decodable_rules_build_and_allows_answers_a_bool(rules, probes):
    f = PacketFilter(rules)
    for bad in f.bad_entries:
        assert isinstance(bad.entry, str) and len(bad.entry) <= 67 and bad.reason and "\n" not in bad.reason
    for src, dst, port, proto in probes:
        assert type(f.allows(src, dst, port, proto)) is bool


def _is_bad(entry: str) -> bool:
    return not entry.startswith("cap:") and bool(PacketFilter([_rule([entry], [entry], (0, 1), None)]).bad_entries)


GARBAGE = ENTRY.filter(_is_bad)


@st.composite
def _valid_entry(draw) -> tuple[str, int, int, int]:
    """A well-formed entry and its addresses: (text, version, first, last)."""
    version = draw(st.sampled_from([4, 6]))
    a = draw(st.ip_addresses(v=version))
    form = draw(st.sampled_from(["ip", "cidr", "range"]))
    if form == "ip":
        return str(a), version, int(a), int(a)
    if form == "cidr":
        net = ipaddress.ip_network((a, draw(st.integers(0, a.max_prefixlen))), strict=False)
        return str(net), version, int(net.network_address), int(net.broadcast_address)
    lo, hi = sorted([a, draw(st.ip_addresses(v=version))])
    return f"{lo}-{hi}", version, int(lo), int(hi)


def _rule(srcs, dsts, ports, protos):
    return FilterRule(src_ips=list(srcs), ip_proto=protos,
                      dst_ports=[NetPortRange(ip=d, ports=PortRange(first=ports[0], last=ports[1])) for d in dsts])


def _edges(version: int, first: int, last: int) -> tuple[list[str], list[str]]:
    """Addresses at the edges of an interval: (inside it, just outside it)."""
    top = (1 << (32 if version == 4 else 128)) - 1
    ip = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    inside = [str(ip(x)) for x in {first, last, (first + last) // 2}]
    outside = [str(ip(x)) for x in (first - 1, last + 1) if 0 <= x <= top]
    return inside, outside


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(src=_valid_entry(), dst=_valid_entry(), ports=st.tuples(U16, U16).map(sorted),
       protos=st.none() | st.lists(st.integers(0, 255), min_size=1, max_size=3),
       garbage_src=st.lists(GARBAGE, max_size=3), garbage_dst=st.lists(GARBAGE, max_size=3), data=st.data())
def test_valid_rule_matches_its_own_addresses_with_garbage_beside_it(src, dst, ports, protos, garbage_src,
                                                                      garbage_dst, data):
    src_text, src_version, src_first, src_last = src
    dst_text, dst_version, dst_first, dst_last = dst
    clean = PacketFilter([_rule([src_text], [dst_text], ports, protos)])
    srcs = data.draw(st.permutations([src_text, *garbage_src]))
    dsts = data.draw(st.permutations([dst_text, *garbage_dst]))
    mixed = PacketFilter([_rule(srcs, dsts, ports, protos)])
    assert clean.bad_entries == []
    assert len(mixed.bad_entries) == len(garbage_src) + len(garbage_dst)

    allowed_protos = sorted(protos or DEFAULT_PROTOS)
    (src_in, src_out), (dst_in, dst_out) = _edges(src_version, src_first, src_last), _edges(dst_version, dst_first, dst_last)
    other_family = "100.64.0.1" if src_version == 6 else "fd7a:115c:a1e0::1"
    for f in (clean, mixed):
        for s in src_in:
            for d in dst_in:
                assert f.allows(s, d, ports[0], allowed_protos[0]) and f.allows(s, d, ports[1], allowed_protos[-1])
                assert ports[0] == 0 or not f.allows(s, d, ports[0] - 1, allowed_protos[0])
                assert ports[1] == 65535 or not f.allows(s, d, ports[1] + 1, allowed_protos[0])
                assert not any(f.allows(s, d, ports[0], p) for p in (-1, 256) + tuple(set(range(0, 256, 37)) -
                                                                                        set(allowed_protos)))
            for d in dst_out:
                assert not f.allows(s, d, ports[0], allowed_protos[0])
        for s in [*src_out, other_family]:
            assert not f.allows(s, dst_in[0], ports[0], allowed_protos[0])

    probes = data.draw(st.lists(st.tuples(PROBE_IP, PROBE_IP, st.integers(-1, 65536), st.integers(-1, 256)), max_size=6))
    for probe in probes:
        assert mixed.allows(*probe) == clean.allows(*probe)
