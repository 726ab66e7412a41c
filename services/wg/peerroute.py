"""Per-peer routing facts a worker keeps (`PeerRoute`), and what one loop iteration sends
(`IterationBatches`). See service.py for how the worker uses them.

Everything here is owned by the worker's loop thread.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

__all__ = ["UDP_FRESH", "IterationBatches", "PeerRoute"]

UDP_FRESH = 12.0  # s: a peer's last authenticated UDP source carries our handshakes this long


class PeerRoute(msgspec.Struct):
    """Where to send a peer's messages (from the netmap, plus what we learned)."""

    endpoints: tuple[str, ...] = ()
    home_derp: int = 0
    last_udp_src: str | None = None
    last_udp_at: float = 0.0
    last_derp_region: int = 0
    last_derp_at: float = 0.0
    """The last authenticated DERP receipt (0 = none), next to the UDP one above."""
    direct: str = ""
    direct_until: float = 0.0
    """The disco-trusted direct address and its deadline (`PeerPath`)."""
    direct_port: int = 0
    """udp's port for our own direct sockets (`PeerPath.port`; 0: none)."""
    last_wanted: float = 0.0

    def direct_path(self, now: float) -> str:
        return self.direct if self.direct and now < self.direct_until else ""

    def udp_dsts(self) -> list[str]:
        dsts = list(self.endpoints)
        if self.last_udp_src and self.last_udp_src not in dsts:
            dsts.append(self.last_udp_src)
        return dsts[:16]

    def heard_over_udp(self, src: str, now: float) -> None:
        self.last_udp_src, self.last_udp_at = src, now

    def heard_over_derp(self, region: int, now: float) -> None:
        self.last_derp_region, self.last_derp_at = region, now

    def path(self, now: float) -> tuple[str, str, int]:
        """(path, UDP endpoint, DERP region) as `PeerStats` reports them: the way our data
        goes once anything authenticated came from the peer ("" before that)."""
        direct = self.direct_path(now)
        if direct:
            return "direct", direct, 0
        if self.last_derp_at or self.last_udp_at:
            return "derp", "", self.last_derp_region or self.home_derp
        return "", "", 0

    def handshake_udp(self, now: float) -> str | None:
        """The one UDP address for an initiation (trusted, else the peer's fresh source);
        None: DERP."""
        direct = self.direct_path(now)
        if direct:
            return direct
        if self.last_udp_src and now - self.last_udp_at < UDP_FRESH:
            return self.last_udp_src
        return None


class IterationBatches(msgspec.Struct):
    """What one loop iteration sends, per destination (udp, derp, proxy, another worker, disco
    wants), flushed by the loop's end-of-iteration callback."""

    udp: dict[tuple[str, ...], list[bytes]] = msgspec.field(default_factory=lambda: defaultdict(list))
    derp: dict[tuple[bytes, int], list[bytes]] = msgspec.field(default_factory=lambda: defaultdict(list))
    proxy: dict[bytes, list[bytes]] = msgspec.field(default_factory=lambda: defaultdict(list))
    relayed: set[bytes] = msgspec.field(default_factory=set)
    """Peers some of whose ``proxy`` packets came over DERP (`FromPeer.relayed`)."""
    forward: dict[tuple[int, str], list[bytes]] = msgspec.field(default_factory=lambda: defaultdict(list))
    wanted: list[bytes] = msgspec.field(default_factory=list)
