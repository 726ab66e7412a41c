"""The udp service's disco path finder: the shell around `DiscoPaths` (sans-IO).

Feeds it the netmap (peers' node and disco keys, endpoints), ``PathWanted`` from the
workers, and disco pings/pongs/CallMeMaybe received over UDP or DERP; sends what it
returns -- pings sealed to the peer's disco key to a UDP address, CallMeMaybe via DERP to
the peer's home region -- and publishes each `PathUpdate` as ``PeerPath`` to the worker
that owns the peer (``wg-<k>-in``), with our port when the workers are to use direct
sockets (`PathFinder.direct_port`). Keeps one timer at `DiscoPaths.next_timer` (a `CoreTimer`).
Each change of a peer's path (not a renewal) is logged as ``path``, with the core's view
of that peer (`DiscoPaths.describe`: round trip, trust left, outstanding pings).

Our endpoints (local interface addresses with our UDP port, plus STUN-mapped ones when
known) go into our CallMeMaybe and, as `UdpStatus`, on ``udp-pub`` for the control
service to advertise; refreshed every ENDPOINT_REFRESH seconds and on change.

STUN: every STUN_INTERVAL (and when the DERP map changes) a Binding Request
(`sunbeam.shared.proto.stun`, SOFTWARE=tailnode + FINGERPRINT) goes from our UDP socket to
the STUN server of each DERP region node that gives an IP literal (at most STUN_TARGETS);
a response whose txid we sent, from the address we sent it to, yields our mapped
``ip:port`` as the server saw it -- behind a NAT, the NAT's mapping. Anything else on the
socket that parses as STUN is a counted drop.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import zmq
from sunbeam.shared.channels import DERP_IN, UDP_PUB, WG_IN
from sunbeam.shared.keys import from_text, to_text
from sunbeam.shared.messages.dataplane import (
    DerpSend,
    PeerPath,
    UdpStatus,
)
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.follow import NetmapSubscription
from sunbeam.shared.proto.disco import (
    NONCE_LEN,
    CallMeMaybe,
    DiscoBoxes,
    Message,
    Ping,
    Pong,
)
from sunbeam.shared.proto.discopaths import DiscoPaths, Output, PeerInfo
from sunbeam.shared.proto.stun import StunError, binding_request, parse_response
from sunbeam.shared.runtime.coretimer import CoreTimer
from sunbeam.shared.runtime.service import Service
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import owner

from . import localaddrs

ENDPOINT_REFRESH = 10.0  # s: re-read interface addresses, re-publish our status
STUN_INTERVAL = 20.0  # s: between STUN rounds (tailscaled's netcheck runs every 20-26 s)
STUN_TIMEOUT = 3.0  # s: a round's answers count until then
STUN_TARGETS = 4


class PathFinder:
    def __init__(self, svc: Service, udp: UdpSocket, boxes: DiscoBoxes, node_key: bytes,
                 wg_out: list[zmq.Socket[Any]], derp_out: zmq.Socket[Any], *, direct_port: int = 0) -> None:
        self.svc, self.udp, self.boxes = svc, udp, boxes
        self.counters = svc.counters
        self.core = DiscoPaths(node_key, os.urandom)
        self.wg_out, self.derp_out = wg_out, derp_out
        self.direct_port = direct_port
        """Our port in every `PeerPath`: the worker uses its own direct socket (0: it does not)."""
        self.home: dict[bytes, int] = {}
        self.stun_endpoints: list[str] = []
        self.local_endpoints: list[str] = []
        self.stun_targets: list[str] = []
        self.stun_pending: dict[bytes, tuple[str, float]] = {}  # txid -> (server, sent)
        self.stun_round: list[str] = []
        loop = svc.loop
        self.timer = CoreTimer(loop, self.core.next_timer, loop.now, self._on_timer)
        self.pub = UDP_PUB.bind(loop, svc.context.runtime_dir)
        self.netmap = NetmapSubscription(loop, svc.context.runtime_dir, self.counters, self.on_netmap)
        self.refresh_endpoints()
        self._stun_periodic()

    # -- inputs ------------------------------------------------------------------------

    def on_netmap(self, netmap: Netmap) -> None:
        peers, home = [], {}
        for p in netmap.peers:
            try:
                key = from_text("nodekey:", p.key)
                disco = from_text("discokey:", p.disco_key) if p.disco_key else None
            except ValueError:
                self.counters.incr("paths.netmap_bad_key")
                continue
            home[key] = p.home_derp
            if disco is not None:
                peers.append(PeerInfo(key, disco, tuple(p.endpoints)))
        self.home = home
        self.emit(self.core.set_peers(peers, self.svc.loop.now()))
        targets = stun_targets(netmap)
        if targets != self.stun_targets:
            self.stun_targets = targets
            self.stun_now()

    def want(self, peer_key: bytes) -> None:
        self.emit(self.core.want(peer_key, self.svc.loop.now()))

    def on_disco(self, sender: bytes, message: Message, udp_src: str | None) -> None:
        """A disco message we opened; ``udp_src`` None when it came via DERP."""
        now = self.svc.loop.now()
        if isinstance(message, CallMeMaybe):
            self.emit(self.core.on_call_me_maybe(sender, message, now))
        elif udp_src is None:
            return  # a ping/pong over DERP says nothing about a direct path
        elif isinstance(message, Ping):
            self.emit(self.core.on_ping(sender, udp_src, now))
        elif isinstance(message, Pong):
            self.emit(self.core.on_pong(sender, message, udp_src, now))

    # -- STUN --------------------------------------------------------------------------

    def _stun_periodic(self) -> None:
        self.stun_now()
        self.svc.loop.call_later(STUN_INTERVAL, self._stun_periodic)

    def stun_now(self) -> None:
        now = self.svc.loop.now()
        self.stun_pending = {t: v for t, v in self.stun_pending.items() if now - v[1] < STUN_TIMEOUT}
        self.stun_round = []
        for server in self.stun_targets:
            txid = os.urandom(12)
            self.stun_pending[txid] = (server, now)
            self.udp.send([binding_request(txid)], server)
            self.counters.incr("stun.request_tx")
        if self.stun_targets:
            self.svc.loop.call_later(STUN_TIMEOUT, self._stun_round_over)

    def on_stun(self, pkt: bytes, src: str) -> None:
        try:
            txid, mapped = parse_response(pkt)
        except StunError as exc:
            self.counters.incr(f"rx.drop.stun_{exc.reason}")
            return
        sent = self.stun_pending.pop(txid, None)
        if sent is None or sent[0] != src:
            self.counters.incr("rx.drop.stun_unexpected")
            return
        self.counters.incr("stun.response_rx")
        if mapped not in self.stun_round:
            self.stun_round.append(mapped)
        self._set_stun_endpoints(list(dict.fromkeys(self.stun_round + self.stun_endpoints)))

    def _stun_round_over(self) -> None:
        if self.stun_round:  # forget mappings no server confirmed this round
            self._set_stun_endpoints(list(self.stun_round))

    def _set_stun_endpoints(self, endpoints: list[str]) -> None:
        if endpoints != self.stun_endpoints:
            self.stun_endpoints = endpoints
            self.svc.log.info("stun_endpoints", endpoints=endpoints)
            self.publish()

    # -- outputs -----------------------------------------------------------------------

    def emit(self, out: Output) -> None:
        for s in out.send:
            pkt = self.boxes.seal(s.disco_key, s.message, os.urandom(NONCE_LEN))
            if s.udp is not None:
                self.udp.send([pkt], s.udp)
                self.counters.incr("disco.ping_tx")
            else:
                region = self.home.get(s.node_key, 0)
                if DERP_IN.send(self.derp_out, DerpSend(peer_key=s.node_key, region=region, packets=[pkt]),
                                self.counters):
                    self.counters.incr("disco.call_me_maybe_tx")
        now = self.svc.loop.now()
        for update in out.paths:
            if update.addr != update.was:  # a change of path, not a renewal: worth a line
                self.svc.log.info("path", peer=to_text("nodekey:", update.node_key)[8:20], addr=update.addr or "derp",
                                  was=update.was or "derp", **self.core.describe(update.node_key, now))
            worker = owner(update.node_key, len(self.wg_out))
            msg = PeerPath(peer_key=update.node_key, addr=update.addr, until=update.until, port=self.direct_port)
            WG_IN.send(self.wg_out[worker], msg, self.counters)
            if update.addr:
                self.counters.incr("paths.trusted_updates")
            else:
                self.counters.incr("paths.to_derp")
        self.timer.rearm()

    def endpoints(self) -> list[str]:
        return list(dict.fromkeys(self.local_endpoints + self.stun_endpoints))

    def refresh_endpoints(self) -> None:
        try:
            local = localaddrs.endpoints(self.udp.port, ipv6=self.udp.family != socket.AF_INET)
        except OSError as exc:
            self.counters.incr("paths.interface_error")
            self.svc.log.warning("interfaces", error=str(exc))
            local = self.local_endpoints
        if local != self.local_endpoints:
            self.local_endpoints = local
            self.svc.log.info("local_endpoints", endpoints=local)
        self.publish()
        self.svc.loop.call_later(ENDPOINT_REFRESH, self.refresh_endpoints)

    def publish(self) -> None:
        eps = self.endpoints()
        self.core.set_our_endpoints(eps)
        status = UdpStatus(port=self.udp.port, endpoints=tuple(eps[:16]))
        UDP_PUB.send(self.pub, status, self.counters)

    def _on_timer(self) -> None:
        self.emit(self.core.tick(self.svc.loop.now()))

    def counters_snapshot(self) -> dict[str, int]:
        return {f"paths.{k}": v for k, v in self.core.counters.items()}


def stun_targets(netmap: Netmap) -> list[str]:
    """``ip:port`` of the DERP map's STUN servers that are IP literals (no DNS here)."""
    out: list[str] = []
    regions = netmap.derp_map.regions if netmap.derp_map and netmap.derp_map.regions else {}
    for _, region in sorted(regions.items()):
        for node in (region.nodes or []) if region else []:
            if node.stun_port < 0:
                continue
            port = node.stun_port or 3478
            for host in (node.ipv4, node.host_name):
                if host and host != "none" and _is_ipv4(host):
                    out.append(f"{host}:{port}")
                    break
    return list(dict.fromkeys(out))[:STUN_TARGETS]


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return False
    return True
