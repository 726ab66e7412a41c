"""Which DERP regions to hold connections to, and how to dial each one (pure functions).

- Home region: the lowest region ID of the DERPMap that has a usable node (not STUN-only),
  until latency measurement exists (upstream picks the lowest-latency region:
  ts:net/netcheck). It is the region we tell the server is preferred (NotePreferred) and
  the one the control service reports as our PreferredDERP.
- Wanted regions: the home region plus every region a peer's ``home_derp`` names (a
  packet for a peer goes through the peer's home region: docs/protocol.md "DERP"). Regions a
  `DerpSend` names are added by the service on demand.
- Dialing a region (ts:derp/derphttp/derphttp_client.go ``dialNode``): its first usable
  node; address = the node's IPv4 (or IPv6) when it is an IP literal, else its HostName;
  port = DERPPort, 0 meaning 443 with TLS and 3340 without. TLS unless the control URL is
  ``http://`` (Headscale's embedded DERP and the reference network serve plain
  ``Upgrade: DERP`` there; stock tailscaled needs TS_DEBUG_USE_DERP_HTTP=1 for that).
  SNI and the Host header are the HostName. A node with neither HostName nor IP falls back
  to the control URL's host and port.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import msgspec
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.proto.tailcfg import DERPMap, DERPNode, DERPRegion

__all__ = ["Dial", "dial_for", "home_region", "usable_node", "uses_tls", "wanted_regions"]


class Dial(msgspec.Struct, frozen=True):
    """Where and how to connect to one region."""

    region: int
    host: str
    """What to connect to: an IP literal or a name to resolve."""
    port: int
    tls: bool
    server_name: str
    """TLS SNI and the HTTP Host header."""
    insecure: bool = False
    """The node says InsecureForTests: do not verify its certificate."""


def usable_node(region: DERPRegion | None) -> DERPNode | None:
    for node in (region.nodes or ()) if region else ():
        if not node.stun_only:
            return node
    return None


def _regions(derp_map: DERPMap | None) -> dict[int, DERPRegion]:
    return {rid: r for rid, r in ((derp_map.regions or {}) if derp_map else {}).items() if r is not None}


def home_region(derp_map: DERPMap | None) -> int:
    """The lowest region ID with a usable node; 0 if there is none."""
    usable = [rid for rid, region in _regions(derp_map).items() if rid > 0 and usable_node(region)]
    return min(usable, default=0)


def wanted_regions(netmap: Netmap | None, home: int) -> set[int]:
    """The home region plus every known region a peer calls home."""
    if netmap is None:
        return {home} - {0}
    known = {rid for rid, region in _regions(netmap.derp_map).items() if usable_node(region)}
    return ({home} | {p.home_derp for p in netmap.peers}) & known


def _ip_literal(text: str | None) -> str | None:
    if not text or text == "none":
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def uses_tls(control_url: str) -> bool:
    """Regions are dialed with TLS unless the control URL is plain ``http://`` (tests, a
    Headscale's embedded DERP on a private network)."""
    return urlsplit(control_url).scheme != "http"


def dial_for(region_id: int, derp_map: DERPMap | None, control_url: str) -> Dial | None:
    """How to reach ``region_id``; None if the map has no usable node for it."""
    node = usable_node(_regions(derp_map).get(region_id))
    if node is None:
        return None
    url = urlsplit(control_url)
    tls = uses_tls(control_url)
    host = _ip_literal(node.ipv4) or _ip_literal(node.ipv6) or node.host_name
    port = node.derp_port or (443 if tls else 3340)
    server_name = node.host_name
    if not host:
        host = server_name = url.hostname or ""
        port = url.port or (443 if tls else 80)
    if not host:
        return None
    return Dial(region_id, host, port, tls, server_name or host, node.insecure_for_tests)
