from sunbeam.services.proxy.filter import ICMP4, TCP, UDP, PacketFilter
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
