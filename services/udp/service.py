"""`UdpService`: the UDP socket, inbound routing to the WireGuard workers, disco answers
(the sunbeam-udp process; main.py starts it).

State owned by this process (its loop thread): the UDP socket (`shared.runtime.udpsock.UdpSocket`), the
disco key's precomputed boxes, the per-iteration batches to the workers.

Sockets (declared in shared/channels.py; what this service does with each)::

    UDP [::]:$SUNBEAM_UDP_PORT (0 = random; logged as ``udp_listening port=…``)
    udp-in      PULL bind     `UDP_IN_CODEC`:  UdpSend -> datagrams out;
                                               DiscoReceived -> pongs via derp-in;
                                               PathWanted -> disco pings (paths.py);
                                               UdpForwarded -> as if received here
    wg-<k>-in   PUSH connect  `WG_IN_CODEC`:   UdpReceived(src, packets, segments), one
                                               per (worker, src) and loop iteration;
                                               PeerPath(peer, addr, until, port)
    derp-in     PUSH connect  `DERP_IN_CODEC`: DerpSend(peer, region, pongs / CallMeMaybe)
    udp-pub     PUB  bind     `UDP_PUB_CODEC`: UdpStatus(port, endpoints) for control
    control-pub SUB  connect  the netmap (peers' disco keys and endpoints)

Inbound datagrams: WireGuard transport messages (04 00 00 00, the data) go straight to the
worker their receiver index names -- a GRO burst that is all transport messages for one
receiver index (`transport_run_index`) goes whole, unsplit, with its segment size; then
STUN responses -> the path finder (our mapped endpoint); disco (magic ``TS💬``) ->
`discoreply.answer` (a ping is answered at once with a pong to its source), then the path
finder (`paths.PathFinder`: which direct address each peer is trusted at, see
`sunbeam.shared.proto.discopaths`); other WireGuard messages -> the worker
`wgroute.route` picks; anything else a counted drop ``rx.drop.<reason>``.
With direct sockets on (main.py), a worker receives its direct peers' datagrams on its own
socket and hands us what is ours (disco, mostly) as `UdpForwarded`: each datagram is
handled as above (``rx.from_wg``).
PUSH sockets have a bounded HWM; a full one is a counted drop (``wg_in.dropped`` /
``derp_in.dropped``, in packets).

Counters (health reply): see `udpsock` for ``rx.*``/``tx.*``; ``disco.ping_rx``,
``disco.pong_tx``, ``disco.pong_rx``, ``disco.call_me_maybe_rx`` (with ``_derp`` for
ones that came via DERP), ``rx.drop.disco_<reason>``, ``rx.to_wg``, ``offload.gro`` /
``offload.gso`` (1 if the kernel has it).
"""

from __future__ import annotations

import os
from typing import Any

from sunbeam.shared.channels import DERP_IN, UDP_IN, WG_IN
from sunbeam.shared.messages.dataplane import (
    UDP_IN_CODEC,
    WG_IN_CODEC,
    DerpSend,
    DiscoReceived,
    PathWanted,
    UdpForwarded,
    UdpReceived,
    UdpSend,
)
from sunbeam.shared.proto.disco import (
    NONCE_LEN,
    CallMeMaybe,
    DiscoBoxes,
    DiscoError,
    Ping,
    Pong,
    derp_src,
    looks_like_disco,
)
from sunbeam.shared.proto.stun import is_stun
from sunbeam.shared.proto.wireguard import split_segments, transport_run_index
from sunbeam.shared.runtime import (
    Batcher,
    RateLimitedLog,
    decoding_handler,
)
from sunbeam.shared.runtime.service import Service
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import worker_of_index

from .discoreply import answer
from .paths import PathFinder
from .wgroute import TRANSPORT_MIN_SIZE, route

_TRANSPORT = b"\x04\x00\x00\x00"
RECV_BUDGET = 256  # recvmsg calls per readable event; the poll is level-triggered
SUPPRESSED_REPORT_S = 60.0


class UdpService:
    """The shell: feeds datagrams and udp-in messages to the cores, sends their output."""

    def __init__(self, svc: Service, udp: UdpSocket, boxes: DiscoBoxes, node_key: bytes, *,
                 direct_sockets: bool = False) -> None:
        self.svc, self.udp, self.boxes = svc, udp, boxes
        self.counters = svc.counters
        self.workers = svc.context.wg_workers
        self.drops = RateLimitedLog(svc.log)
        rundir = svc.context.runtime_dir
        loop = svc.loop
        self.wg_out = [WG_IN.connect(loop, rundir, k=k) for k in range(self.workers)]
        self.derp_out = DERP_IN.connect(loop, rundir)
        self.batcher: Batcher[tuple[int, str]] = Batcher(
            WG_IN_CODEC, lambda dest, packets, segments: UdpReceived(
                src=dest[1], packets=packets, segments=segments if any(segments) else []),
            segmented=True)
        udp_in = UDP_IN.bind(loop, rundir)
        loop.on_readable(udp_in, decoding_handler(UDP_IN_CODEC, self.on_udp_in, self.counters,
                                                  bad_log=self.drops, counter="udp_in.bad_message"))
        self.paths = PathFinder(svc, udp, boxes, node_key, self.wg_out, self.derp_out,
                                direct_port=udp.port if direct_sockets else 0)
        loop.on_readable(udp, self.on_datagrams)
        loop.on_iteration_end(self.flush)
        loop.call_later(SUPPRESSED_REPORT_S, self._report_suppressed)

    def drop(self, reason: str, **kv: Any) -> None:
        self.counters.incr(f"rx.drop.{reason}")
        self.drops.warning(reason, "udp_drop", reason=reason, **kv)

    # -- from the network ------------------------------------------------------------

    def on_datagrams(self, _udp: UdpSocket) -> None:
        workers = self.workers
        for data, src, size in self.udp.recv_bursts(RECV_BUDGET):
            if size:
                # a GRO burst; mostly one session's transport messages, passed on whole
                index = transport_run_index(data, size)
                if index is not None:
                    worker = worker_of_index(index)
                    if worker < workers:
                        self._to_worker(worker, src, data, size, -(-len(data) // size))
                        continue
                datagrams = split_segments(data, size)
            else:
                datagrams = [data]
            for pkt in datagrams:
                self.on_datagram(pkt, src)

    def on_datagram(self, pkt: bytes, src: str) -> None:
        # the hot path: a WireGuard transport message (4, 0, 0, 0 | receiver index ...),
        # which neither STUN (first byte 0x00/0x01) nor disco ("TS") can look like
        if pkt[:4] == _TRANSPORT and len(pkt) >= TRANSPORT_MIN_SIZE:
            worker = worker_of_index(int.from_bytes(pkt[4:8], "little"))
            if worker < self.workers:
                self._to_worker(worker, src, pkt)
                return
        if is_stun(pkt):
            self.paths.on_stun(pkt, src)
            return
        if looks_like_disco(pkt):
            self.on_disco_udp(pkt, src)
            return
        routed = route(pkt, src, self.workers)
        if isinstance(routed, str):
            self.drop(routed, src=src, size=len(pkt))
            return
        worker = routed
        self._to_worker(worker, src, pkt)

    def _to_worker(self, worker: int, src: str, data: bytes, size: int = 0, count: int = 1) -> None:
        """Batch ``data`` (a datagram, or a GRO burst of ``count`` of ``size`` bytes) for
        ``worker``; send the batch once it is full."""
        full = self.batcher.add((worker, src), data, size, count)
        if full is not None:
            self._send_wg(full.dest[0], full.data, full.packets)

    def on_disco_udp(self, pkt: bytes, src: str) -> None:
        try:
            got = answer(self.boxes, pkt, src, os.urandom(NONCE_LEN))
        except DiscoError as exc:
            self.drop(f"disco_{exc.reason}", src=src, error=str(exc))
            return
        self._count_disco(got.message, "")
        if got.reply is not None:
            self.udp.send([got.reply], src)
            self.counters.incr("disco.pong_tx")
        self.paths.on_disco(got.sender, got.message, src)

    def flush(self) -> None:
        for batch in self.batcher.flush():
            self._send_wg(batch.dest[0], batch.data, batch.packets)

    def _send_wg(self, worker: int, data: bytes, packets: int) -> None:
        if WG_IN.send_encoded(self.wg_out[worker], data, self.counters, weight=packets):
            self.counters.incr("rx.to_wg", packets)

    # -- from the other services -----------------------------------------------------

    def on_udp_in(self, msg: UdpSend | DiscoReceived | PathWanted | UdpForwarded) -> None:
        if isinstance(msg, UdpSend):
            for dst in msg.dsts:
                self.udp.send(msg.packets, dst)
            return
        if isinstance(msg, UdpForwarded):
            self.counters.incr("rx.from_wg", len(msg.packets))
            for pkt in msg.packets:
                self.on_datagram(pkt, msg.src)
            return
        if isinstance(msg, PathWanted):
            self.paths.want(msg.peer_key)
            return
        replies = []
        src = derp_src(msg.region)
        for pkt in msg.packets:
            try:
                got = answer(self.boxes, pkt, src, os.urandom(NONCE_LEN))
            except DiscoError as exc:
                self.drop(f"disco_{exc.reason}", via="derp", peer=msg.peer_key, region=msg.region, error=str(exc))
                continue
            self._count_disco(got.message, "_derp")
            if got.reply is not None:
                replies.append(got.reply)
            self.paths.on_disco(got.sender, got.message, None)
        if replies:
            if DERP_IN.send(self.derp_out, DerpSend(peer_key=msg.peer_key, region=msg.region, packets=replies),
                            self.counters, weight=len(replies)):
                self.counters.incr("disco.pong_tx_derp", len(replies))

    def _count_disco(self, message: Any, suffix: str) -> None:
        if isinstance(message, Ping):
            self.counters.incr("disco.ping_rx" + suffix)
        elif isinstance(message, Pong):
            self.counters.incr("disco.pong_rx" + suffix)
        elif isinstance(message, CallMeMaybe):
            self.counters.incr("disco.call_me_maybe_rx" + suffix)

    def _report_suppressed(self) -> None:
        self.drops.report_suppressed()
        self.svc.loop.call_later(SUPPRESSED_REPORT_S, self._report_suppressed)
