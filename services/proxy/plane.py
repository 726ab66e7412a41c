"""`IpPlane`: the proxy's IP side: packets in from peers, answers and our packets out.

Sockets:

- ``proxy-in`` PULL (bound here), `PROXY_IN_CODEC`: ``FromPeer(peer_key, packets,
  segments)`` from the WireGuard workers. A stretch of equal packets (an entry with a
  segment size) goes to the TCP engine whole when it is one run of data segments its
  connection takes (``tcp_run_sink``), else one by one like the rest. Each packet goes
  through `IpResponder`: echo requests and
  TSMP pings addressed to us are answered to the same peer (via `WgOutbox`), echo
  replies go to the `PingServer`, TSMP rejects and ICMP destination unreachables to the
  TCP engine (``on_unreachable``), everything else is counted (``ip.*``); malformed
  packets also get a rate-limited ``ip_drop`` log line per peer and reason.
- ``control-pub`` SUB (connected): the netmap, followed with `NetmapSubscription`. Our addresses come from ``self_node.addresses``, routes from the
  peers' ``allowed_ips`` (with the context's ``accept_routes`` and ``exit_node``). On a seq gap the SUB re-subscribes, which makes the control
  service re-send its snapshot.

Ownership: the proxy's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable

from sunbeam.shared.channels import PROXY_IN
from sunbeam.shared.messages.dataplane import PROXY_IN_CODEC, FromPeer
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.follow import NetmapSubscription
from sunbeam.shared.proto.ip import EchoReplied, IpResponder, Reply
from sunbeam.shared.proto.ip.unreachable import Unreachable
from sunbeam.shared.proto.tcp.bulk import Burst, Outgoing
from sunbeam.shared.proto.wireguard.messages import split_segments
from sunbeam.shared.runtime import RateLimitedLog, decoding_handler
from sunbeam.shared.runtime.service import Service

from .outbox import WgOutbox
from .routing import RouteTable

__all__ = ["IpPlane"]


def _is_tcp(packet: bytes) -> bool:
    """IPv4 protocol 6, or IPv6 next header 6 (no extension headers: those go to the responder)."""
    if len(packet) < 20:
        return False
    version = packet[0] >> 4
    return (version == 4 and packet[9] == 6) or (version == 6 and len(packet) >= 40 and packet[6] == 6)



class IpPlane:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.counters = svc.counters
        rundir = svc.context.runtime_dir
        self.outbox = WgOutbox(svc.loop, rundir, svc.context.wg_workers, svc.counters)
        self.responder = IpResponder(counters=svc.counters)
        self.routes = RouteTable()
        self._exit_logged: object = None
        self.bad_log = RateLimitedLog(svc.log)
        self.on_echo_reply: Callable[[EchoReplied], None] = lambda _reply: None
        """Set by the ping server."""
        self.tcp_sink: Callable[[list[bytes], bool], None] | None = None
        """Set by the TCP engine: takes every TCP segment (IPv4/IPv6 protocol 6) from peers,
        and whether they came over DERP (`FromPeer.relayed`)."""
        self.tcp_run_sink: Callable[[list[bytes], int, bool], bool] | None = None
        """Set by the TCP engine: takes a run of packets of one size back to back in
        entries whole, or says False (they then go one by one); relayed as ``tcp_sink``."""
        self.on_unreachable: Callable[[Unreachable], None] = lambda _u: None
        """Set by the TCP engine: a peer's TSMP reject or ICMP unreachable for a flow of ours."""
        self.on_addresses: Callable[[list[str]], None] = lambda _addrs: None
        """Set by the TCP engine: our tailnet addresses (without prefix length) changed."""
        self.on_netmap: list[Callable[[Netmap], None]] = []

        self.pull = PROXY_IN.bind(svc.loop, rundir)
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
        ctx = self.svc.context
        self.routes = RouteTable.from_netmap(netmap, accept_routes=ctx.accept_routes, exit_node=ctx.exit_node)
        self.on_addresses([a.split("/")[0] for a in addresses])
        for callback in self.on_netmap:
            callback(netmap)
        self.counters.incr("netmap_applied")
        self.svc.log.debug("netmap", addresses=list(addresses), peers=len(netmap.peers), routes=self.routes.size)
        exit_node = self.routes.exit
        seen = (exit_node.peer.id if exit_node.peer else None, exit_node.problem)
        if seen != self._exit_logged:
            self._exit_logged = seen
            if exit_node.problem:
                self.svc.log.warning("exit_node_unusable", reason=exit_node.problem)
            elif exit_node.peer is not None:
                self.svc.log.info("exit_node", peer=exit_node.peer.name.rstrip("."), id=exit_node.peer.id)

    # -- packets -----------------------------------------------------------------------

    def _from_peer(self, msg: FromPeer) -> None:
        if msg.segments:
            self._runs_from_peer(msg.peer_key, msg.packets, msg.segments, msg.relayed)
        else:
            self._packets_from_peer(msg.peer_key, msg.packets, msg.relayed)

    def _runs_from_peer(self, peer_key: bytes, entries: list[bytes], segments: list[int], relayed: bool) -> None:
        """A batch with runs (`FromPeer.segments`), in order: consecutive run entries of one
        packet size (each maybe ending with a shorter packet) go to the TCP engine whole
        (``tcp_run_sink``); what it does not take, and single packets, go one by one."""
        if len(segments) != len(entries):
            self.counters.incr("from_peer_bad_segments")
            return
        single: list[bytes] = []
        i, n = 0, len(entries)
        while i < n:
            size = segments[i]
            if not size:
                single.append(entries[i])
                i += 1
                continue
            j = i + 1
            while j < n and segments[j] == size:
                j += 1
            if single:
                self._packets_from_peer(peer_key, single, relayed)
                single = []
            run = entries[i:j]
            if self.tcp_run_sink is not None and self.tcp_run_sink(run, size, relayed):
                self.counters.incr("ip_in_packets", sum(-(-len(e) // size) for e in run))
            else:
                self._packets_from_peer(peer_key, [p for e in run for p in split_segments(e, size)], relayed)
            i = j
        if single:
            self._packets_from_peer(peer_key, single, relayed)

    def _packets_from_peer(self, peer_key: bytes, packets: list[bytes], relayed: bool) -> None:
        self.counters.incr("ip_in_packets", len(packets))
        tcp = []
        for packet in packets:
            if self.tcp_sink is not None and _is_tcp(packet):
                tcp.append(packet)
                continue
            result = self.responder.handle(packet)
            if isinstance(result, Reply):
                self.outbox.add(peer_key, result.packet)
            elif isinstance(result, EchoReplied):
                self.on_echo_reply(result)
            elif isinstance(result, Unreachable):
                self.on_unreachable(result)
            else:
                drop = self.responder.last_drop
                if drop is not None and drop.malformed:
                    peer = peer_key.hex()
                    self.bad_log.warning(f"{peer[:16]}:{drop.reason}", "ip_drop", peer=peer, reason=drop.reason,
                                         detail=drop.detail)

        if tcp:
            self.tcp_sink(tcp, relayed)  # type: ignore[misc]

    def send_many(self, packets: Outgoing) -> int:
        """Send IP packets we originate (well-formed: our TCP stack built them), each to the
        peer its destination routes to, runs of one destination in one call, a `Burst`
        whole (its packets share one connection); returns how many had no route (counted
        ``no_route``)."""
        lookup, add_many = self.routes.lookup, self.outbox.add_many
        unrouted = 0
        run: list[bytes] = []
        run_dst: bytes | None = None
        for packet in packets:
            if isinstance(packet, Burst):
                if run:
                    unrouted += self._send_run(run_dst, run, lookup, add_many)  # type: ignore[arg-type]
                    run, run_dst = [], None
                key = lookup(bytes(packet.data[16:20]))
                if key is None:
                    self.counters.incr("no_route", packet.packet_count)
                    unrouted += packet.packet_count
                else:
                    self.outbox.add_burst(key, packet)
                continue
            dst = packet[16:20] if packet[0] >> 4 == 4 else packet[24:40]
            if dst != run_dst:
                if run:
                    unrouted += self._send_run(run_dst, run, lookup, add_many)  # type: ignore[arg-type]
                run, run_dst = [], dst
            run.append(packet)
        if run:
            unrouted += self._send_run(run_dst, run, lookup, add_many)  # type: ignore[arg-type]
        return unrouted

    def _send_run(self, dst: bytes, run: list[bytes], lookup: Callable[[bytes], bytes | None],
                  add_many: Callable[[bytes, list[bytes]], None]) -> int:
        key = lookup(dst)
        if key is None:
            self.counters.incr("no_route", len(run))
            return len(run)
        add_many(key, run)
        return 0

    def send(self, packet: bytes, dst: str | bytes) -> bool:
        """Send a packet we originate to the peer ``dst`` (text or packed) routes to; False if none."""
        key = self.routes.lookup(dst)
        if key is None:
            self.counters.incr("no_route")
            return False
        self.outbox.add(key, packet)
        return True
