"""`IpPlane`: the proxy's IP side: packets in from peers, answers and our packets out.

Sockets:

- ``proxy-in`` PULL (bound here), `PROXY_IN_CODEC`: ``FromPeer(peer_key, packets)``
  from the WireGuard workers. Each packet goes through `IpResponder`: echo requests and
  TSMP pings addressed to us are answered to the same peer (via `WgOutbox`), echo
  replies go to the `PingServer`, everything else is counted (``ip.*``); malformed
  packets also get a rate-limited ``ip_drop`` log line per peer and reason.
- ``control-pub`` SUB (connected): the netmap, followed with `NetmapSubscription`. Our addresses come from ``self_node.addresses``, routes from the
  peers' ``allowed_ips``. On a seq gap the SUB re-subscribes, which makes the control
  service re-send its snapshot.

Ownership: the proxy's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq
from sunbeam.shared.messages.dataplane import PROXY_IN_CODEC, FromPeer
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap_sub import NetmapSubscription
from sunbeam.shared.proto.ip import EchoReplied, IpResponder, Reply
from sunbeam.shared.runtime import RateLimitedLog, decoding_handler, endpoint
from sunbeam.shared.runtime.service import Service

from .outbox import WgOutbox
from .routing import RouteTable

__all__ = ["IpPlane"]

IN_SOCKET = "proxy-in"
RCVHWM = 1000


class IpPlane:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.counters = svc.counters
        rundir = svc.context.runtime_dir
        self.outbox = WgOutbox(svc.loop, rundir, svc.context.wg_workers, svc.counters)
        self.responder = IpResponder(counters=svc.counters)
        self.routes = RouteTable()
        self.bad_log = RateLimitedLog(svc.log)
        self.on_echo_reply: Callable[[EchoReplied], None] = lambda _reply: None
        """Set by the ping server."""

        self.pull: zmq.Socket[Any] = svc.loop.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, RCVHWM)
        svc.loop.bind(self.pull, endpoint(rundir, IN_SOCKET))
        svc.loop.on_readable(self.pull, decoding_handler(PROXY_IN_CODEC, self._from_peer, svc.counters,
                                                         bad_log=self.bad_log, counter="proxy_in_bad_message"))

        self.netmap_sub = NetmapSubscription(svc.loop, rundir, svc.counters, self.apply_netmap)

    @property
    def netmap(self) -> Netmap | None:
        return self.netmap_sub.netmap

    # -- netmap ------------------------------------------------------------------------

    def apply_netmap(self, netmap: Netmap) -> None:
        addresses = netmap.self_node.addresses if netmap.self_node is not None else ()
        self.responder.set_addresses(addresses)
        self.routes = RouteTable.from_netmap(netmap)
        self.counters.incr("netmap_applied")
        self.svc.log.debug("netmap", addresses=list(addresses), peers=len(netmap.peers), routes=self.routes.size)

    # -- packets -----------------------------------------------------------------------

    def _from_peer(self, msg: FromPeer) -> None:
        self.counters.incr("ip_in_packets", len(msg.packets))
        for packet in msg.packets:
            result = self.responder.handle(packet)
            if isinstance(result, Reply):
                self.outbox.add(msg.peer_key, result.packet)
            elif isinstance(result, EchoReplied):
                self.on_echo_reply(result)
            else:
                drop = self.responder.last_drop
                if drop is not None and drop.malformed:
                    peer = msg.peer_key.hex()
                    self.bad_log.warning(f"{peer[:16]}:{drop.reason}", "ip_drop", peer=peer, reason=drop.reason,
                                         detail=drop.detail)

    def send(self, packet: bytes, dst: str) -> bool:
        """Send a packet we originate to the peer ``dst`` routes to; False if none."""
        key = self.routes.lookup(dst)
        if key is None:
            self.counters.incr("no_route")
            return False
        self.outbox.add(key, packet)
        return True
