"""One WireGuard worker process: the sole owner of the peers that hash to it.

Sockets (declared in shared/channels.py): binds ``wg-{k}-in`` (ToPeer from the proxy,
UdpReceived from udp, DerpReceived from derp, PeerPath from udp's path finder, a
forwarded initiation from another worker); sends UdpSend / PathWanted / UdpForwarded on ``udp-in``,
DerpSend on ``derp-in``, FromPeer (decrypted, source-checked packets) on ``proxy-in``,
and a handshake initiation that belongs to worker j on ``wg-{j}-in``; follows
``control-pub`` for the netmap (which peers we own, their AllowedIPs, endpoints and home
DERP region).

Ownership: a peer belongs to worker ``owner(node_key, wg_workers)``; this worker's
`Device` holds only those peers. Inbound messages reach the right worker without shared
state: the udp service routes types 2/3/4 by the worker number in the receiver index,
DERP by the sender's key; a type-1 initiation from an unknown address may land anywhere:
we decrypt the initiator's static key and forward the datagram to its owner.

Paths: the udp service's disco path finder sends `PeerPath(peer, addr, until)`: while
``until`` has not passed, transport data to the peer goes to that one UDP address only;
otherwise over DERP via the peer's home region (to every UDP endpoint the netmap gives as
well only when the peer has no home region). Sending data to a peer also sends
`PathWanted` to the udp service (at most every WANT_INTERVAL per peer), which probes for
a direct path or keeps confirming the one it has, as tailscaled does for active peers.
Handshake messages never go two ways at once: a peer that gets two copies of one
initiation can answer both (wireguard-go checks the timestamp and records it under
separate locks), keep the second session and drop the first, the one we installed, so
everything we send is lost until a rehandshake 15 s later. A response goes back the way
its initiation came; an initiation goes to the trusted direct address, else the UDP
address the peer last reached us from when that is fresh (UDP_FRESH), else over DERP.

Direct sockets (`direct.py`, issue 20): when a `PeerPath` carries udp's port, the worker
opens its own UDP socket on that port connected to the peer's trusted address; it then
sends that peer's datagrams itself and receives them from the kernel, skipping the udp
service both ways. What such a socket receives that is not this worker's WireGuard (disco,
mostly) goes to udp as `UdpForwarded` on ``udp-in``.

Per-peer stats (``sunbeam-ctl peers``): the service's ctl socket answers `PeersRequest`
with `Worker.peer_stats`, one `PeerStats` per owned peer. Its path is "direct" while a
trusted direct address (or a fresh authenticated UDP receipt) exists, else "derp" once
anything authenticated arrived over DERP (the region it came through), else "". The byte
counts and last handshake survive a restart of this worker: they continue the totals saved
in ``<rundir>/wg-<k>.stats`` (`statsfile.py`: written every second when changed and at a
clean stop, so a kill -9 loses at most the last second's counts).

Everything here is owned by the worker's loop thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import zmq
from sunbeam.shared.channels import DERP_IN, PROXY_IN, UDP_IN, WG_IN
from sunbeam.shared.keys import from_text, to_text
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.messages.ctl import PeerStats
from sunbeam.shared.messages.dataplane import (
    WG_IN_CODEC,
    DerpReceived,
    DerpSend,
    FromPeer,
    PathWanted,
    PeerPath,
    ToPeer,
    UdpForwarded,
    UdpReceived,
    UdpSend,
    join_runs,
    split_runs,
)
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.follow import NetmapSubscription
from sunbeam.shared.netmap.routes import choose_exit_node, routed_prefixes
from sunbeam.shared.proto.wireguard import (
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    Device,
    split_segments,
)
from sunbeam.shared.runtime import RateLimitedLog
from sunbeam.shared.runtime.coretimer import CoreTimer
from sunbeam.shared.runtime.service import Service
from sunbeam.shared.sharding import owner

from .direct import DirectSockets
from .peerroute import IterationBatches, PeerRoute
from .statsfile import (
    PeerTotals,
    StatsFile,
    StatsSaver,
    Totals,
    load_totals,
    stats_path,
)

MAX_BATCH = 256
# Bytes of inbox messages taken per wakeup before our output goes on: draining up to 256
# GRO-burst messages (megabytes) first held the proxy's input back until all were
# decrypted, and the TCP sender's window with it (download 131 -> 148-152 MB/s here).
INBOX_BYTES = 256 * 1024
WANT_INTERVAL = 1.0  # s: PathWanted per peer at most this often
DIRECT_SWEEP = 1.0  # s: direct sockets of lapsed paths are closed this often
_HANDSHAKE = (MESSAGE_INITIATION, MESSAGE_RESPONSE)
_INITIATION = bytes((MESSAGE_INITIATION,))


class Worker:
    def __init__(self, svc: Service, node_private: bytes) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.counters = svc.counters
        self.noisy = RateLimitedLog(svc.log, max_lines=10, interval=60)
        ctx = svc.context
        self.index = svc.worker or 0
        self.workers = ctx.wg_workers
        self.device = Device(private_key=node_private, worker=self.index, random_bytes=os.urandom,
                             wall_clock=time.time)
        # monotonic -> unix time for display and the stats file, fixed at start so that a
        # handshake's time reads the same at every look (a later wall-clock step shifts
        # what is shown, never a timer)
        self._wall_offset = time.time() - self.loop.now()
        self.routes: dict[bytes, PeerRoute] = {}
        self.out = IterationBatches()
        rundir = ctx.runtime_dir
        z = self.loop
        stats_file = StatsFile(stats_path(rundir, self.index), self.index, self.workers)
        self.totals = PeerTotals(load_totals(stats_file, self.counters, svc.log))
        self.stats_saver = StatsSaver(z, stats_file, self._totals_snapshot, self.counters, self.noisy)
        self.stats_saver.start()

        self.inbox = WG_IN.bind(z, rundir, k=self.index)
        z.on_readable(self.inbox, self._on_inbox)

        self.netmap_sub = NetmapSubscription(z, rundir, self.counters, self._apply_netmap)

        self.udp = UDP_IN.connect(z, rundir)
        self.derp = DERP_IN.connect(z, rundir)
        self.proxy = PROXY_IN.connect(z, rundir)
        self.peers_out = {j: WG_IN.connect(z, rundir, k=j) for j in range(self.workers) if j != self.index}
        self.direct = DirectSockets(z, self.counters, self.noisy, self.index, self._on_direct)
        svc.on_stop.append(self.direct.close_all)
        z.call_later(DIRECT_SWEEP, self._sweep_direct)
        z.on_iteration_end(self._flush)
        self.timer = CoreTimer(self.loop, self.device.next_timer, self.loop.now, self._on_timer)

    # -- netmap -------------------------------------------------------------------------

    def _apply_netmap(self, netmap: Netmap) -> None:
        ctx = self.svc.context
        exit_node = choose_exit_node(netmap, ctx.exit_node).peer
        wanted: dict[bytes, Any] = {}
        for peer in netmap.peers:
            try:
                key = from_text("nodekey:", peer.key)
            except ValueError:
                self.counters.incr("netmap_bad_key")
                continue
            if owner(key, self.workers) == self.index:
                wanted[key] = peer
        for key in list(self.routes):
            if key not in wanted:
                self.direct.close(key)
                self.totals.fold(key, self._live(key))
                self.device.remove_peer(key)
                del self.routes[key]
        for key, peer in wanted.items():
            self.device.set_peer(key, routed_prefixes(peer, accept_routes=ctx.accept_routes, exit_node=exit_node))
            route = self.routes.setdefault(key, PeerRoute())
            route.endpoints, route.home_derp = tuple(peer.endpoints), peer.home_derp
        self.counters.incr("netmap_updates")
        self.timer.rearm()

    # -- inbound ------------------------------------------------------------------------

    def _on_inbox(self, sock: zmq.Socket[Any]) -> None:
        now = self.loop.now()
        taken = 0
        for _ in range(MAX_BATCH):
            if taken >= INBOX_BYTES:
                break
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            taken += len(frame)
            try:
                msg = WG_IN_CODEC.decode(frame)
            except BadMessage as exc:
                self.counters.incr("inbox_bad_message")
                self.noisy.warning("inbox", "bad_message", error=str(exc)[:200])
                continue
            if isinstance(msg, ToPeer):
                packets = split_runs(msg.packets, msg.segments) if msg.segments else msg.packets
                if packets is None:
                    self.counters.incr("inbox_bad_message")
                    self.noisy.warning("inbox", "bad_message", error="segments do not match packets")
                    continue
                self._send_ip(msg.peer_key, packets, now)
            elif isinstance(msg, UdpReceived):
                self._on_udp_received(msg, now)
            elif isinstance(msg, DerpReceived):
                self._receive(msg.packets, now, derp_from=msg.peer_key, derp_region=msg.region)
            elif isinstance(msg, PeerPath):
                route = self.routes.get(msg.peer_key)
                if route is not None:
                    route.direct, route.direct_until, route.direct_port = msg.addr, msg.until, msg.port
                    self.counters.incr("path_updates")
                    self.direct.set_path(msg.peer_key, msg.addr if now < msg.until else "", msg.port, now)
        self.timer.rearm()

    def _on_udp_received(self, msg: UdpReceived, now: float) -> None:
        if msg.segments:
            self._receive_bursts(msg, now)
        else:
            self._receive(msg.packets, now, udp_src=msg.src)

    def _on_direct(self, peer_key: bytes, sock: Any) -> None:
        """A peer's direct socket is readable: ours to decrypt, the rest to udp."""
        mine, sizes, other = self.direct.receive(sock, self.loop.now())
        for src, pkts in other.items():
            for i in range(0, len(pkts), MAX_BATCH):
                UDP_IN.send(self.udp, UdpForwarded(src=src, packets=pkts[i:i + MAX_BATCH]), self.counters)
            self.counters.incr("direct.to_udp", len(pkts))
        if mine:
            now = self.loop.now()
            for i in range(0, len(mine), MAX_BATCH):
                part = sizes[i:i + MAX_BATCH]
                self._on_udp_received(UdpReceived(src=sock.peer, packets=mine[i:i + MAX_BATCH],
                                                  segments=part if any(part) else []), now)
            self.timer.rearm()

    def _sweep_direct(self) -> None:
        """Close the sockets of lapsed paths and stale sources (udp may be gone: no PeerPath)."""
        now = self.loop.now()
        for key in set(self.direct.by_peer) | set(self.direct.trusted):
            route = self.routes.get(key)
            self.direct.sweep(key, route is not None and bool(route.direct_path(now)), now)
        self.loop.call_later(DIRECT_SWEEP, self._sweep_direct)

    def _send_ip(self, peer_key: bytes, packets: Sequence[bytes | memoryview], now: float) -> None:
        if peer_key not in self.routes:
            self.counters.incr("to_unknown_peer_drop", len(packets))
            return
        msgs = self.device.encapsulate(peer_key, packets, now)
        if msgs:
            self._to_peer(peer_key, msgs, now)

    def _receive(self, pkts: list[bytes], now: float, *, udp_src: str | None = None,
                 derp_from: bytes | None = None, derp_region: int = 0) -> None:
        """One batch from one source, decrypted in one `decapsulate_batch` call (one result
        per peer). An initiation that arrived over UDP may belong to another worker: those
        are forwarded to their owner first."""
        if udp_src is not None:
            pkts = [p for p in pkts if p[:1] != _INITIATION or not self._forwarded(p, now, udp_src)]
        if not pkts:
            return
        src = udp_src.encode() if udp_src is not None else b""
        for result in self.device.decapsulate_batch(pkts, now, src=src):
            self._apply(result, now, udp_src, derp_from, derp_region)

    def _receive_bursts(self, msg: UdpReceived, now: float) -> None:
        """A UDP batch holding GRO bursts (an entry with a segment size): a burst of one
        session's transport messages is decrypted whole (`Device.decapsulate_run`), any
        other entry as usual, in order."""
        if len(msg.segments) != len(msg.packets):
            self.counters.incr("inbox_bad_message")
            self.noisy.warning("inbox", "bad_message", error="segments do not match packets")
            return
        src, plain = msg.src, []
        for pkt, size in zip(msg.packets, msg.segments, strict=True):
            result = self.device.decapsulate_run(pkt, size, now) if size else None
            if result is None:
                plain.extend(split_segments(pkt, size))
                continue
            if plain:
                self._receive(plain, now, udp_src=src)
                plain = []
            self._apply(result, now, src, None, 0)
        if plain:
            self._receive(plain, now, udp_src=src)

    def _forwarded(self, pkt: bytes, now: float, udp_src: str) -> bool:
        """An initiation from UDP: forwarded (or dropped as invalid) unless it is ours."""
        initiator = self.device.initiator_static(pkt, now)
        if initiator is None:
            self.counters.incr("initiation_invalid")
            return True
        target = owner(initiator, self.workers)
        if target == self.index:
            return False
        self.out.forward[(target, udp_src)].append(pkt)
        self.counters.incr("initiation_forwarded")
        return True

    def _apply(self, result: Any, now: float, udp_src: str | None, derp_from: bytes | None,
               derp_region: int) -> None:
        if result.error:
            self.noisy.info(result.error, "wg_drop", reason=result.error)
        peer = result.peer_key
        if peer is None:
            if result.to_peer and udp_src is not None:  # a cookie reply goes back to the source
                self.out.udp[(udp_src,)].extend(result.to_peer)
            return
        route = self.routes.get(peer)
        if route is not None and result.error is None:  # every message of the batch authenticated
            if udp_src is not None:
                route.heard_over_udp(udp_src, now)
                if route.direct_port and udp_src not in self.direct.addrs(peer):  # through udp
                    self.direct.add_source(peer, udp_src, route.direct_port, now)
            elif derp_from is not None:
                route.heard_over_derp(derp_region, now)
        if result.to_peer:
            self._to_peer(peer, result.to_peer, now, reply_udp=udp_src, reply_derp=derp_from is not None)
        if result.to_tunnel:
            self.out.proxy[peer].extend(result.to_tunnel)
            if derp_from is not None:
                self.out.relayed.add(peer)

    # -- outbound -----------------------------------------------------------------------

    def _to_peer(self, peer_key: bytes, msgs: list[bytes], now: float, *, reply_udp: str | None = None,
                 reply_derp: bool = False) -> None:
        """Transport data every way we know; each handshake message one way only.
        ``reply_udp`` / ``reply_derp``: where the message we are answering came from."""
        route = self.routes.get(peer_key)
        if route is None:
            return
        data = msgs
        if any(m[0] in _HANDSHAKE for m in msgs):
            data = []
            for m in msgs:
                if m[0] not in _HANDSHAKE:
                    data.append(m)
                    continue
                answer = m[0] == MESSAGE_RESPONSE and (reply_udp or reply_derp)
                udp = reply_udp if answer else route.handshake_udp(now)
                if udp:
                    self.out.udp[(udp,)].append(m)
                elif answer or route.home_derp or not route.udp_dsts():
                    self.out.derp[(peer_key, route.home_derp)].append(m)
                else:  # no DERP region known: the netmap's endpoints are all we have
                    self.out.udp[tuple(route.udp_dsts())].append(m)
            if not data:
                return
        if now - route.last_wanted >= WANT_INTERVAL:
            route.last_wanted = now
            self.out.wanted.append(peer_key)
        direct = route.direct_path(now)
        if direct:
            self.out.udp[(direct,)].extend(data)
        elif route.home_derp or not route.endpoints:
            self.out.derp[(peer_key, route.home_derp)].extend(data)
        else:  # no DERP region known: the netmap's endpoints are all we have
            self.out.udp[tuple(route.udp_dsts())].extend(data)

    def _flush(self) -> None:
        out, self.out = self.out, IterationBatches()
        by_addr = self.direct.by_addr
        for dsts, msgs in out.udp.items():
            sock = by_addr.get(dsts[0]) if by_addr and len(dsts) == 1 else None
            if sock is not None:  # the peer's own socket: no hop through udp
                sock.send(msgs, dsts[0])
                continue
            for i in range(0, len(msgs), MAX_BATCH):
                UDP_IN.send(self.udp, UdpSend(dsts=list(dsts), packets=msgs[i:i + MAX_BATCH]), self.counters)
        for (key, region), msgs in out.derp.items():
            for i in range(0, len(msgs), MAX_BATCH):
                DERP_IN.send(self.derp, DerpSend(peer_key=key, region=region, packets=msgs[i:i + MAX_BATCH]),
                             self.counters)
        for key, pkts in out.proxy.items():
            relayed = key in out.relayed
            for i in range(0, len(pkts), MAX_BATCH):
                entries, segments = join_runs(pkts[i:i + MAX_BATCH])  # a bulk stretch: one entry per 64 kB
                PROXY_IN.send(self.proxy, FromPeer(peer_key=key, packets=entries, segments=segments, relayed=relayed),
                              self.counters)
        for key in out.wanted:
            UDP_IN.send(self.udp, PathWanted(peer_key=key), self.counters)
        for (target, src), pkts in out.forward.items():
            WG_IN.send(self.peers_out[target], UdpReceived(src=src, packets=pkts), self.counters)

    # -- timers -------------------------------------------------------------------------

    def _on_timer(self) -> None:
        now = self.loop.now()
        for peer_key, msgs in self.device.update_timers(now):
            self._to_peer(peer_key, msgs, now)
        self.timer.rearm()

    def peer_stats(self) -> list[PeerStats]:
        """`PeerStats` of every peer this worker owns (the ctl socket's `PeersReply`)."""
        now = self.loop.now()
        out = []
        for key, route in self.routes.items():
            total = self.totals.total(key, self._live(key))
            path, udp, region = route.path(now)
            out.append(PeerStats(key=to_text("nodekey:", key), worker=self.index, path=path, endpoint=udp,
                                 derp_region=region, last_handshake=total.last_handshake,
                                 rx_bytes=total.rx_bytes, tx_bytes=total.tx_bytes))
        return out

    # -- per-peer totals across restarts (statsfile.py) ---------------------------------

    def _live(self, key: bytes) -> Totals:
        """The device's counters for a peer: what this process counted."""
        stats = self.device.peer_stats(key)
        at = stats["last_handshake"]  # on the loop's monotonic clock; Totals hold unix time
        return Totals(stats["rx_bytes"], stats["tx_bytes"], at + self._wall_offset if at is not None else 0.0)

    def _totals_snapshot(self) -> dict[bytes, Totals]:
        return self.totals.snapshot({key: self._live(key) for key in self.routes})

    def health_counters(self) -> dict[str, int]:
        merged = dict(self.counters.snapshot())
        merged.update({f"wg_{k}": v for k, v in self.device.counters.items()})
        merged["peers"] = len(self.routes)
        return merged
