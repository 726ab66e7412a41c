"""Region choice and dialing (services/derp/regions.py), including Headscale's real region
shape (hs:hscontrol/derp/server/derp_server.go ``GenerateRegion``)."""

from __future__ import annotations

from sunbeam.services.derp.regions import Dial, dial_for, home_region, uses_tls, wanted_regions
from sunbeam.shared.netmap import Netmap, Peer
from sunbeam.shared.proto.tailcfg import DERPMap, DERPNode, DERPRegion

# what Headscale's embedded DERP advertises for server_url http://127.0.0.1:8080
HEADSCALE = DERPRegion(region_id=999, region_code="refnet", nodes=[
    DERPNode(name="999", region_id=999, host_name="127.0.0.1", derp_port=8080, stun_port=3478)])
TAILSCALE_LIKE = DERPRegion(region_id=2, nodes=[
    DERPNode(name="2s", region_id=2, stun_only=True, host_name="stun.example"),
    DERPNode(name="2a", region_id=2, host_name="derp2.example", ipv4="192.0.2.2", ipv6="2001:db8::2")])
STUN_ONLY = DERPRegion(region_id=1, nodes=[DERPNode(name="1", region_id=1, stun_only=True, host_name="s")])
MAP = DERPMap(regions={999: HEADSCALE, 2: TAILSCALE_LIKE, 1: STUN_ONLY, 5: None})


def peer(i: int, home: int) -> Peer:
    return Peer(id=i, key="nodekey:" + f"{i:02x}" * 32, home_derp=home)


def test_home_is_lowest_region_with_a_derp_node():
    assert home_region(MAP) == 2
    assert home_region(DERPMap(regions={999: HEADSCALE})) == 999
    assert home_region(None) == 0 and home_region(DERPMap(regions={1: STUN_ONLY})) == 0


def test_wanted_regions_are_home_plus_known_peer_homes():
    nm = Netmap(derp_map=MAP, peers=(peer(1, 999), peer(2, 0), peer(3, 42), peer(4, 1)))
    assert wanted_regions(nm, 2) == {2, 999}
    assert wanted_regions(None, 7) == {7}


def test_dial_headscale_plain_http():
    assert dial_for(999, MAP, "http://127.0.0.1:8080") == Dial(999, "127.0.0.1", 8080, False, "127.0.0.1")


def test_dial_prefers_ip_and_uses_host_name_for_tls():
    assert dial_for(2, MAP, "https://hs.example") == Dial(2, "192.0.2.2", 443, True, "derp2.example")
    assert dial_for(2, MAP, "http://hs.example") == Dial(2, "192.0.2.2", 3340, False, "derp2.example")


def test_dial_ipv4_none_falls_to_ipv6_then_name():
    v6 = DERPRegion(region_id=3, nodes=[DERPNode(region_id=3, host_name="d3", ipv4="none", ipv6="2001:db8::3")])
    name = DERPRegion(region_id=4, nodes=[DERPNode(region_id=4, host_name="d4.example", derp_port=8443)])
    m = DERPMap(regions={3: v6, 4: name})
    assert dial_for(3, m, "https://x").host == "2001:db8::3"
    assert dial_for(4, m, "https://x") == Dial(4, "d4.example", 8443, True, "d4.example")


def test_dial_node_without_host_falls_back_to_control_url():
    bare = DERPMap(regions={9: DERPRegion(region_id=9, nodes=[DERPNode(region_id=9)])})
    assert dial_for(9, bare, "http://10.0.0.5:8080") == Dial(9, "10.0.0.5", 8080, False, "10.0.0.5")
    assert dial_for(9, bare, "https://hs.example") == Dial(9, "hs.example", 443, True, "hs.example")


def test_dial_unknown_or_unusable_region():
    assert dial_for(1, MAP, "http://x") is None
    assert dial_for(5, MAP, "http://x") is None
    assert dial_for(77, MAP, "http://x") is None


def test_uses_tls_matches_every_dial():
    # the service builds its TLS context (the CA store, ~1.1 MB) only when uses_tls says so:
    # no dial may want TLS where uses_tls said no
    for url in ("http://127.0.0.1:8080", "https://hs.example", "HTTP://hs.example", "https://x:8443"):
        for region in (2, 999):
            dial = dial_for(region, MAP, url)
            assert dial is not None and dial.tls == uses_tls(url)
    assert not uses_tls("http://hs.example") and uses_tls("https://hs.example")
