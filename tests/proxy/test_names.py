"""Names an app gives the proxy -> tailnet IPs, against a netmap built here."""

from __future__ import annotations

import pytest
from sunbeam.shared.netmap.names import NameTable, is_valid_host, parse_target, resolve
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.tailcfg import DNSConfig, DNSRecord


def key(n: int) -> str:
    return "nodekey:" + f"{n:02x}" * 32


NETMAP = Netmap(
    self_node=SelfNode(id=1, key=key(1), name="me.tailnet.test.", hostname="My-Laptop",
                       addresses=("100.64.0.9/32", "fd7a:115c:a1e0::9/128")),
    peers=(
        Peer(id=2, key=key(2), name="peer-1.tailnet.test.", hostname="Peer-1",
             addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"),
             allowed_ips=("100.64.0.1/32", "fd7a:115c:a1e0::1/128", "10.0.0.0/24")),
        Peer(id=3, key=key(3), name="peer-2.tailnet.test.", hostname="build box",
             addresses=("fd7a:115c:a1e0::2/128", "100.64.0.2/32")),  # v6 listed first
        Peer(id=4, key=key(4), name="v6only.tailnet.test.", hostname="v6only", addresses=("fd7a:115c:a1e0::4/128",)),
        # a second OS hostname "peer-1": its MagicDNS name was deduplicated by control
        Peer(id=5, key=key(5), name="peer-1-1.tailnet.test.", hostname="peer-1", addresses=("100.64.0.5/32",)),
        Peer(id=6, key=key(6), name="noaddr.tailnet.test.", hostname="noaddr"),
    ),
    domain="tailnet.test",
    dns=DNSConfig(domains=["tailnet.test", "corp.example"],
                  extra_records=[DNSRecord(name="db.tailnet.test.", type="A", value="100.64.0.50"),
                                 DNSRecord(name="db.tailnet.test.", type="AAAA", value="fd7a:115c:a1e0::50"),
                                 DNSRecord(name="bad.tailnet.test.", type="A", value="fd7a::1"),  # wrong family
                                 DNSRecord(name="junk.tailnet.test.", value="not-an-ip")]),
)


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("peer-1", "100.64.0.1"),                 # first label of the MagicDNS name
        ("PEER-1", "100.64.0.1"),
        ("peer-1.tailnet.test", "100.64.0.1"),    # FQDN, with and without the dot
        ("peer-1.tailnet.test.", "100.64.0.1"),
        ("Peer-1.Tailnet.Test.", "100.64.0.1"),
        ("peer-1.corp.example", "100.64.0.1"),    # another search domain
        ("peer-1-1", "100.64.0.5"),
        ("peer-2", "100.64.0.2"),                 # IPv4 preferred though listed second
        ("build box", "100.64.0.2"),              # the OS hostname, case-insensitive
        ("BUILD BOX.tailnet.test", "100.64.0.2"),
        ("my-laptop", "100.64.0.9"),              # our own node, by hostname and by name
        ("me", "100.64.0.9"),
        ("me.tailnet.test.", "100.64.0.9"),
        ("v6only", "fd7a:115c:a1e0::4"),          # no IPv4: the other family
        ("db.tailnet.test", "100.64.0.50"),       # ExtraRecords
        ("db", "100.64.0.50"),
        ("100.64.0.77", "100.64.0.77"),           # literals pass through, routed or not
        ("8.8.8.8", "8.8.8.8"),
        ("FD7A:115C:A1E0::0001", "fd7a:115c:a1e0::1"),
        ("[fd7a:115c:a1e0::1]", "fd7a:115c:a1e0::1"),
        ("nosuch", None), ("nosuch.tailnet.test", None), ("peer-1.other.test", None), ("tailnet.test", None),
        ("noaddr", None), ("bad.tailnet.test", None), ("junk", None), ("", None), (".", None),
        ("peer-1.tailnet.test.tailnet.test", None),
    ],
)
def test_resolve(host, want):
    assert resolve(NETMAP, host) == want


def test_family_preference():
    table = NameTable.from_netmap(NETMAP)
    assert table.resolve("peer-1", family_pref=6) == "fd7a:115c:a1e0::1"
    assert table.resolve("peer-2", family_pref=6) == "fd7a:115c:a1e0::2"
    assert table.resolve("db", family_pref=6) == "fd7a:115c:a1e0::50"
    assert table.lookup("peer-1") == ("100.64.0.1", "fd7a:115c:a1e0::1")
    assert table.resolve("100.64.0.1", family_pref=6) == "100.64.0.1"  # a literal is what it is
    with pytest.raises(ValueError):
        table.resolve("peer-1", family_pref=5)


def test_names_are_preferred_over_os_hostnames():
    """Peer 5's OS hostname is "peer-1", but the MagicDNS name peer-1 belongs to peer 2."""
    assert resolve(NETMAP, "peer-1") == "100.64.0.1"


def test_empty_netmap_and_domain_only_from_netmap():
    assert resolve(Netmap(), "peer-1") is None
    assert resolve(Netmap(), "100.64.0.1") == "100.64.0.1"
    netmap = Netmap(peers=NETMAP.peers[:1], domain="tailnet.test")  # no DNS config
    assert resolve(netmap, "peer-1.tailnet.test") == "100.64.0.1"
    assert resolve(netmap, "peer-1.corp.example") is None


@pytest.mark.parametrize(
    ("text", "default", "want"),
    [
        ("peer-a:80", None, ("peer-a", 80)),
        ("Peer-A.tailnet.test.:65535", None, ("peer-a.tailnet.test.", 65535)),
        ("100.64.0.1:22", None, ("100.64.0.1", 22)),
        ("[FD7A:115C:A1E0::1]:443", None, ("fd7a:115c:a1e0::1", 443)),
        ("peer-a", 80, ("peer-a", 80)),
        ("[fd7a::1]", 8080, ("fd7a::1", 8080)),
    ],
)
def test_parse_target(text, default, want):
    assert parse_target(text, default) == want


@pytest.mark.parametrize(
    "text",
    ["peer-a", "peer-a:", ":80", "peer-a:0", "peer-a:65536", "peer-a:080000", "peer-a:http", "peer-a:-1",
     "fd7a::1:80", "[fd7a::1:80", "[peer-a]:80", "[fe80::1%eth0]:80", "[fd7a::1]x80", "pe er:80", "peer..a:80",
     "peer-a:80:90", "a" * 300 + ":80", "", "péer:80"],
)
def test_parse_target_rejects(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_is_valid_host():
    assert all(map(is_valid_host, ["peer-1", "a.b.c.", "_svc.x", "100.64.0.1", "::1", "fd7a::1"]))
    assert not any(map(is_valid_host, ["", ".", "a..b", "a b", "a\x00", "fe80::1%eth0", "a/b", "é", "a" * 255]))


def test_the_dns_listeners_view():
    """What dnsanswer.py asks of the table: names only, reverse, parents, the base domain."""
    table = NameTable.from_netmap(NETMAP)
    assert table.domain == "tailnet.test" and NameTable().domain is None
    # the MagicDNS suffix comes from our node's name: Headscale's MapResponse.Domain is its host name
    headscale = NameTable.from_netmap(Netmap(self_node=NETMAP.self_node, peers=NETMAP.peers, domain="127.0.0.1"))
    assert headscale.domain == "tailnet.test" and headscale.lookup("my-laptop.tailnet.test") == (
        "100.64.0.9", "fd7a:115c:a1e0::9")
    assert NameTable.from_netmap(Netmap(peers=NETMAP.peers, domain="tailnet.test")).domain is None
    assert table.lookup_name("peer-1") == ("100.64.0.1", "fd7a:115c:a1e0::1")
    assert table.lookup_name("100.64.0.1") == () and table.lookup("100.64.0.1") == ("100.64.0.1",)
    assert table.reverse("100.64.0.1") == "peer-1.tailnet.test"
    assert table.reverse("FD7A:115C:A1E0::0002") == "peer-2.tailnet.test"
    assert table.reverse("100.64.0.9") == "me.tailnet.test"               # our own node
    assert table.reverse("100.64.0.50") == "db.tailnet.test"              # ExtraRecords: no node has it
    assert table.reverse("100.64.0.77") is None and table.reverse("not an ip") is None
    assert table.reverse("10.0.0.1") is None                              # a subnet route is no name
    assert table.has_names_under("tailnet.test") and table.has_names_under("Tailnet.Test.")
    assert table.has_names_under("test") and not table.has_names_under("peer-1.tailnet.test")
    assert not table.has_names_under("other.test") and not table.has_names_under("")


def test_a_dotted_os_hostname_never_claims_a_name():
    """A peer picks its own OS hostname: "www.example.com" must not make it that site."""
    rogue = Peer(id=9, key=key(9), name="rogue.tailnet.test.", hostname="www.example.com",
                 addresses=("100.64.0.99/32",))
    table = NameTable.from_netmap(Netmap(self_node=NETMAP.self_node, peers=(*NETMAP.peers, rogue)))
    assert table.lookup("www.example.com") == () and table.lookup("www.example.com.tailnet.test") == ()
    assert table.lookup("rogue") == ("100.64.0.99",)
