"""`shared.netmap.routes`: which AllowedIPs are routed to a peer (accept_routes, exit node),
and which peer the config's ``exit_node`` names; the wg device and the proxy share it."""

from __future__ import annotations

from sunbeam.shared.netmap import Netmap, Peer
from sunbeam.shared.netmap.routes import choose_exit_node, in_tailnet, offers_exit, routed_prefixes, subnet_routes


def _peer(i: int, *extra: str, name: str = "", hostname: str | None = None, expired: bool = False) -> Peer:
    own = (f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128")
    return Peer(id=i, key="nodekey:" + f"{i:02x}" * 32, name=name or f"peer-{i}.tailnet.test.",
                hostname=hostname, addresses=own, allowed_ips=own + extra, expired=expired)


ROUTER = _peer(2, "192.168.77.0/24", "10.9.9.9/32", "fd00:77::/64")
EXIT = _peer(3, "0.0.0.0/0", "::/0", hostname="Gateway-Box")
BOTH = _peer(4, "192.168.88.0/24", "0.0.0.0/0", "::/0")
PLAIN = _peer(5)
NETMAP = Netmap(peers=(ROUTER, EXIT, BOTH, PLAIN))


def test_subnet_routes_and_exit_offer():
    assert subnet_routes(ROUTER) == ("192.168.77.0/24", "10.9.9.9/32", "fd00:77::/64")
    assert subnet_routes(EXIT) == () and subnet_routes(BOTH) == ("192.168.88.0/24",)
    assert [offers_exit(p) for p in NETMAP.peers] == [False, True, True, False]


def test_own_addresses_always_subnets_with_accept_routes_default_only_for_the_exit_node():
    own = ROUTER.addresses
    assert routed_prefixes(ROUTER, accept_routes=False, exit_node=None) == own
    assert routed_prefixes(ROUTER, accept_routes=True, exit_node=None) == ROUTER.allowed_ips
    assert routed_prefixes(EXIT, accept_routes=True, exit_node=None) == EXIT.addresses
    assert routed_prefixes(EXIT, accept_routes=False, exit_node=EXIT) == EXIT.allowed_ips
    assert routed_prefixes(BOTH, accept_routes=False, exit_node=EXIT) == BOTH.addresses
    assert routed_prefixes(BOTH, accept_routes=False, exit_node=BOTH) == BOTH.addresses + ("0.0.0.0/0", "::/0")
    assert routed_prefixes(PLAIN, accept_routes=True, exit_node=EXIT) == PLAIN.addresses


def test_exit_node_by_ip_fqdn_label_or_hostname():
    for wanted in ("100.64.0.3", "fd7a:115c:a1e0::3", "peer-3", "PEER-3.tailnet.test.", "gateway-box"):
        assert choose_exit_node(NETMAP, wanted).peer == EXIT, wanted
    assert choose_exit_node(NETMAP, None) == (None, None)
    assert choose_exit_node(NETMAP, "") == (None, None)


def test_exit_node_problems_are_explained():
    missing = choose_exit_node(NETMAP, "nosuch")
    assert missing.peer is None and "not a peer" in (missing.problem or "")
    plain = choose_exit_node(NETMAP, "peer-5")
    assert plain.peer is None and "offers no exit route" in (plain.problem or "")
    expired = choose_exit_node(Netmap(peers=(_peer(6, expired=True),)), "peer-6")
    assert "expired" in (expired.problem or "")
    assert choose_exit_node(None, "peer-3").problem is not None


def test_exit_node_names_are_tried_by_kind_and_ambiguity_is_a_problem():
    # peer 7's OS hostname is "peer-3": the MagicDNS label of peer 3 wins over it
    squatter = _peer(7, "0.0.0.0/0", "::/0", hostname="peer-3")
    netmap = Netmap(peers=(*NETMAP.peers, squatter))
    assert choose_exit_node(netmap, "peer-3").peer == EXIT
    unapproved = _peer(3, name="peer-3.tailnet.test.")  # the named peer stops offering: no fallback
    netmap = Netmap(peers=(ROUTER, unapproved, squatter))
    choice = choose_exit_node(netmap, "peer-3")
    assert choice.peer is None and "offers no exit route" in (choice.problem or "")
    twins = Netmap(peers=(_peer(8, "0.0.0.0/0", hostname="box"), _peer(9, "0.0.0.0/0", hostname="box")))
    choice = choose_exit_node(twins, "box")
    assert choice.peer is None and "ambiguous" in (choice.problem or "")


def test_in_tailnet():
    assert in_tailnet("100.64.0.1") and in_tailnet("100.127.255.255") and in_tailnet("fd7a:115c:a1e0::9")
    assert not in_tailnet("100.128.0.1") and not in_tailnet("192.168.77.2") and not in_tailnet("fd7a:115c:a1e1::1")
