import json
import logging
from types import SimpleNamespace

import pytest

from sunbeam.services.proxy.filter import ICMP4, ICMP6, TCP, UDP, BadEntry, PacketFilter
from sunbeam.services.proxy.local import LocalSide
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.log import StructLogger
from sunbeam.shared.proto import tailcfg
from sunbeam.shared.proto.tailcfg import FilterRule, NetPortRange, PortRange


def rule(src, dsts, protos=None):
    return FilterRule(src_ips=src, dst_ports=[NetPortRange(ip=ip, ports=PortRange(first=a, last=b)) for ip, a, b in dsts],
                      ip_proto=protos)


def test_headscale_allow_all():
    f = PacketFilter([rule(["*"], [("*", 0, 65535)])])
    assert f.allows("100.64.0.1", "100.64.0.3", 22)
    assert f.allows("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::3", 443)


def test_none_and_empty_deny_everything():
    assert not PacketFilter(None).allows("100.64.0.1", "100.64.0.3", 22)
    assert not PacketFilter([]).allows("100.64.0.1", "100.64.0.3", 22)


def test_sources_destinations_ports_and_protocols():
    f = PacketFilter([
        rule(["100.64.0.1", "100.64.0.10-100.64.0.20", "cap:foo"], [("100.64.0.3/32", 80, 80), ("100.64.0.3", 8000, 8999)]),
        rule(["100.64.0.0/10"], [("*", 53, 53)], protos=[UDP]),
    ])
    assert f.allows("100.64.0.1", "100.64.0.3", 80)
    assert f.allows("100.64.0.15", "100.64.0.3", 8500)
    assert not f.allows("100.64.0.21", "100.64.0.3", 80)
    assert not f.allows("100.64.0.1", "100.64.0.3", 81)
    assert not f.allows("100.64.0.1", "100.64.0.4", 80)
    assert f.allows("100.64.0.99", "100.64.0.3", 53, UDP) and not f.allows("100.64.0.99", "100.64.0.3", 53, TCP)
    assert f.allows("100.64.0.1", "100.64.0.3", 80, ICMP4)  # default protocols include ICMP
    assert not f.allows("not-an-ip", "100.64.0.3", 80)
    assert not PacketFilter([rule(["garbage/99"], [("*", 0, 65535)])]).allows("100.64.0.1", "100.64.0.3", 1)


def test_range_with_ends_of_different_families_matches_nothing_and_does_not_raise():
    """Issue 15: ``lo <= addr <= hi`` across families raised TypeError on the next inbound SYN."""
    f = PacketFilter([rule(["100.64.0.1-fd7a:115c:a1e0::1", "100.64.0.7"], [("*", 0, 65535)])])
    for src in ("100.64.0.1", "100.64.0.5", "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::5"):
        assert f.allows(src, "100.64.0.3", 22) is False
    assert f.allows("100.64.0.7", "100.64.0.3", 22)  # the rule's other entry still works
    f = PacketFilter([rule(["fd7a:115c:a1e0::1-100.64.0.1"], [("*", 0, 65535)])])
    assert not f.allows("fd7a:115c:a1e0::5", "fd7a:115c:a1e0::3", 22)
    assert [b.reason for b in f.bad_entries] == ["range ends of different IP families"]


ALL = [("*", 0, 65535)]


@pytest.mark.parametrize("entry, inside, outside", [
    ("100.64.0.1", ["100.64.0.1"], ["100.64.0.2", "::ffff:100.64.0.1", "::100.64.0.1"]),
    ("100.64.0.1/32", ["100.64.0.1"], ["100.64.0.0"]),
    ("100.64.0.0/10", ["100.64.0.0", "100.127.255.255"], ["100.128.0.0", "100.63.255.255"]),
    ("0.0.0.0/0", ["0.0.0.0", "255.255.255.255"], ["::", "fd7a:115c:a1e0::1"]),
    ("::/0", ["::", "fd7a:115c:a1e0::1"], ["0.0.0.0", "100.64.0.1"]),  # an IPv4 address is no small IPv6 one
    ("::/96", ["::1"], ["0.0.0.1"]),
    ("fd7a:115c:a1e0::/48", ["fd7a:115c:a1e0::1", "FD7A:115C:A1E0:0:ffff::"], ["fd7a:115c:a1e1::"]),
    ("100.64.0.10-100.64.0.20", ["100.64.0.10", "100.64.0.20"], ["100.64.0.9", "100.64.0.21", "::ffff:100.64.0.15"]),
    ("2eff::1-2eff::0800", ["2eff::1", "2eff::800"], ["2eff::", "2eff::801"]),
    ("100.64.0.5-100.64.0.5", ["100.64.0.5"], ["100.64.0.4"]),
    ("*", ["100.64.0.1", "::1"], ["fe80::1%eth0", "not-an-ip", ""]),
])
def test_entry_forms(entry, inside, outside):
    for f in (PacketFilter([rule([entry], ALL)]), PacketFilter([rule(["*"], [(entry, 0, 65535)])])):
        assert f.bad_entries == []
        for ip in inside:
            assert f.allows(ip, ip, 1) and f.allows(ip, ip, 1, ICMP4), ip  # as source, as destination
        for ip in outside:
            assert not f.allows(ip, ip, 1), ip


@pytest.mark.parametrize("entry, reason", [
    ("100.64.0.9-100.64.0.1", "range start after its end"),
    ("fd7a::1-100.64.0.1", "range ends of different IP families"),
    ("100.64.0.1-100.64.0.2-100.64.0.3", "not an IP address, CIDR, range or '*'"),
    ("100.64.0.1/10", "CIDR with host bits set"),  # tailscaled refuses it; we used to widen it to /10
    ("fd7a:115c:a1e0::1/48", "CIDR with host bits set"),
    ("100.64.0.0/33", "prefix length over 32"),
    ("::/129", "prefix length over 128"),
    ("100.64.0.0/010", "prefix length is not a decimal number"),
    ("100.64.0.0/255.192.0.0", "prefix length is not a decimal number"),  # Python's netmask form, not Go's
    ("100.64.0.0/１０", "prefix length is not a decimal number"),
    ("100.64.0.0/" + "1" * 5000, "prefix length is not a decimal number"),  # int() would refuse 4300+ digits
    ("100.64.0.0/", "prefix length is not a decimal number"),
    ("100.64.0.0/+10", "prefix length is not a decimal number"),
    ("/10", "not an IP address, CIDR, range or '*'"),
    ("*/0", "not an IP address, CIDR, range or '*'"),
    (" 100.64.0.1", "not an IP address, CIDR, range or '*'"),  # no trimming, like tailscaled
    ("100.64.0.1\u00a0", "not an IP address, CIDR, range or '*'"),
    ("* ", "not an IP address, CIDR, range or '*'"),
    ("١٠٠.64.0.1", "not an IP address, CIDR, range or '*'"),
    ("100.064.0.1", "not an IP address, CIDR, range or '*'"),
    ("fe80::1%eth0", "address with a zone"),
    ("fe80::%eth0/64", "address with a zone"),
    ("autogroup:internet", "not an IP address, CIDR, range or '*'"),  # control resolves names to addresses
    ("tag:server", "not an IP address, CIDR, range or '*'"),
    ("", "not an IP address, CIDR, range or '*'"),
    ("-", "not an IP address, CIDR, range or '*'"),
])
def test_unreadable_entry_is_counted_matches_nothing_and_spares_the_rest(entry, reason):
    src = PacketFilter([rule([entry, "100.64.0.7"], ALL)])
    dst = PacketFilter([rule(["*"], [(entry, 0, 65535), ("100.64.0.3", 22, 22)])])
    assert src.bad_entries == [BadEntry(entry[:64] + ("..." if len(entry) > 64 else ""), reason)]
    assert dst.bad_entries == src.bad_entries
    for ip in ("100.64.0.1", "100.64.0.5", "100.64.0.9", "fd7a::1", "fd7a:115c:a1e0::5", "fe80::1", "0.0.0.0", "::"):
        assert not src.allows(ip, "100.64.0.3", 22)
        assert not dst.allows("100.64.0.7", ip, 80)
    assert src.allows("100.64.0.7", "100.64.0.3", 22) and dst.allows("100.64.0.9", "100.64.0.3", 22)


def test_capability_source_is_no_address_and_capability_destination_is_bad():
    f = PacketFilter([rule(["cap:tailscale.com/cap/relay", "100.64.0.1"], [("cap:x", 0, 65535), ("*", 22, 22)])])
    assert f.bad_entries == [BadEntry("cap:x", "capability as a destination")]
    assert f.allows("100.64.0.1", "100.64.0.3", 22) and not f.allows("100.64.0.1", "100.64.0.3", 23)
    assert not f.allows("100.64.0.2", "100.64.0.3", 22)


def test_port_ranges():
    f = PacketFilter([rule(["*"], [("100.64.0.3", 0, 0), ("100.64.0.3", 9, 8), ("100.64.0.3", 65535, 65535)])])
    assert f.bad_entries == [BadEntry("100.64.0.3", "port range 9-8 is empty or outside 0..65535")]
    assert [p for p in (0, 1, 8, 9, 65534, 65535) if f.allows("100.64.0.1", "100.64.0.3", p)] == [0, 65535]
    assert not f.allows("100.64.0.1", "100.64.0.3", -1) and not f.allows("100.64.0.1", "100.64.0.3", 1 << 70)


def test_control_decoding_already_bounds_ports_and_types():
    """What msgspec's typed decoding of the MapResponse lets through to the filter."""
    def decode(filter_json):
        return tailcfg.decode_map_response(json.dumps({"PacketFilter": filter_json}).encode()).packet_filter

    for bad in ([{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65536}}]}],
                [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": -1, "Last": 1}}]}],
                [{"SrcIPs": [1]}], [{"SrcIPs": "*"}], [{"DstPorts": [{"IP": None}]}], [{"IPProto": ["6"]}],
                [{"IPProto": [2 ** 63]}], [{"IPProto": [True]}], [None]):
        with pytest.raises(tailcfg.BadControlMessage):
            decode(bad)
    rules = decode([{"SrcIPs": None, "DstPorts": None, "IPProto": None}, {"SrcIPs": ["*"], "IPProto": [-5, 6000]},
                    {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 2, "Last": 1}}]}])
    f = PacketFilter(rules)
    assert [b.reason for b in f.bad_entries] == ["protocol number outside 0..255"] * 2 + [
        "port range 2-1 is empty or outside 0..65535"]
    assert not f.allows("100.64.0.1", "100.64.0.3", 1)


def test_ip_protocols():
    f = PacketFilter([rule(["100.64.0.1"], ALL, protos=[-1, 256, 1 << 62, UDP]),
                      rule(["100.64.0.2"], ALL, protos=[999]),  # none left: nothing, not the defaults
                      rule(["100.64.0.3"], ALL, protos=[]),  # empty = the defaults
                      rule(["100.64.0.4"], ALL, protos=[0, 255])])
    assert [b.entry for b in f.bad_entries] == ["IPProto -1", "IPProto 256", f"IPProto {1 << 62}", "IPProto 999"]
    assert f.allows("100.64.0.1", "100.64.0.9", 1, UDP) and not f.allows("100.64.0.1", "100.64.0.9", 1, TCP)
    assert not any(f.allows("100.64.0.2", "100.64.0.9", 1, p) for p in (TCP, UDP, ICMP4, ICMP6, 999, -1, 256))
    assert [p for p in (TCP, UDP, ICMP4, ICMP6, 0, 132) if f.allows("100.64.0.3", "100.64.0.9", 1, p)] == [
        TCP, UDP, ICMP4, ICMP6]
    assert [p for p in (0, 255, TCP) if f.allows("100.64.0.4", "100.64.0.9", 1, p)] == [0, 255]


def test_pre_capver_7_bits_fields_make_their_rule_or_destination_match_nothing():
    old_src = FilterRule(src_ips=["100.64.0.0"], src_bits=[10], dst_ports=[NetPortRange(ip="*", ports=PortRange(last=9))])
    old_dst = FilterRule(src_ips=["*"], dst_ports=[NetPortRange(ip="100.64.0.0", bits=10, ports=PortRange(last=9)),
                                                   NetPortRange(ip="100.64.0.7", ports=PortRange(last=9))])
    f = PacketFilter([old_src, old_dst])
    assert f.bad_entries == [BadEntry("SrcBits [10]", "pre-capver-7 SrcBits: the rule matches nothing"),
                             BadEntry("100.64.0.0", "pre-capver-7 Bits")]
    assert not f.allows("100.64.0.0", "100.64.0.3", 1) and not f.allows("100.64.0.1", "100.64.0.0", 1)
    assert f.allows("100.64.0.1", "100.64.0.7", 1)


def test_empty_and_missing_fields_allow_nothing_and_are_not_bad():
    f = PacketFilter([FilterRule(), FilterRule(src_ips=["*"]), FilterRule(dst_ports=[NetPortRange(ip="*")]),
                      FilterRule(src_ips=[], dst_ports=[])])
    assert f.bad_entries == []
    assert not f.allows("100.64.0.1", "100.64.0.3", 0)


def test_packet_addresses_that_are_not_plain_addresses_are_refused():
    f = PacketFilter([rule(["*"], ALL)])
    for ip in ("", "fe80::1%eth0", "100.64.0.1/32", " 100.64.0.1", "*", "100.64.0.1-100.64.0.2"):
        assert f.allows(ip, "100.64.0.3", 1) is False and f.allows("100.64.0.3", ip, 1) is False


def test_long_entries_are_cut_and_huge_lists_work():
    many = [f"10.{i >> 8 & 255}.{i & 255}.1-10.{i >> 8 & 255}.{i & 255}.9" for i in range(20_000)]
    garbage = ["x" * 100_000, *(f"bad{i}" for i in range(20_000))]
    f = PacketFilter([rule(garbage + many + ["100.64.0.1"], ALL)])
    assert len(f.bad_entries) == 20_001 and f.bad_entries[0] == BadEntry("x" * 64 + "...", f.bad_entries[1].reason)
    assert f.allows("10.78.31.5", "100.64.0.3", 1) and f.allows("100.64.0.1", "100.64.0.3", 1)
    assert not f.allows("10.78.31.10", "100.64.0.3", 1)


def test_proxy_counts_and_logs_bad_entries_once_per_filter(caplog):
    """LocalSide._on_netmap with the real counters and logger; the service and TCP engine are
    stand-ins holding only what LocalSide reads when it has no listeners."""
    svc = SimpleNamespace(loop=None, log=StructLogger(logging.getLogger("test.proxy")), counters=Counters(),
                          context=SimpleNamespace(listeners=[], dns_forward=False, exit_node=None))
    engine = SimpleNamespace(plane=SimpleNamespace(on_netmap=[]), on_request=None, gauges={})
    side = LocalSide(svc, engine)  # type: ignore[arg-type]
    on_netmap = engine.plane.on_netmap[0]
    bad_filter = (rule(["100.64.0.1-fd7a:115c:a1e0::1", "100.64.0.7", "tag:x"], ALL),)
    with caplog.at_level(logging.WARNING, logger="test.proxy"):
        on_netmap(Netmap(packet_filter=bad_filter))
        on_netmap(Netmap(packet_filter=bad_filter, domain="other"))  # same filter: not counted again
    assert svc.counters["filter_bad_entries"] == 2
    assert [r.getMessage() for r in caplog.records] == ["filter_bad_entries"]
    assert side.filter.allows("100.64.0.7", "100.64.0.3", 22) and not side.filter.allows("100.64.0.1", "100.64.0.3", 22)
    on_netmap(Netmap(packet_filter=(rule(["*"], [("100.64.0.3", 9, 8)]),)))
    assert svc.counters["filter_bad_entries"] == 3
    on_netmap(Netmap(packet_filter=()))
    assert svc.counters["filter_bad_entries"] == 3 and not side.filter.allows("100.64.0.7", "100.64.0.3", 22)
