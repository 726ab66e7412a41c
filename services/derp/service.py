"""The derp service: region connections, packet routing between DERP and the other services.

Sockets (declared in shared/channels.py): follows ``control-pub`` (`NetmapSubscription`);
binds ``derp-in`` (`DerpSend(peer_key, region, packets)`: relay each packet via ``region``,
0 = our home, connecting it if needed) and ``derp-pub`` (`DerpStatus(home_region,
connected, state)` on every change and every STATUS_INTERVAL s); sends relayed packets
that start with the disco magic ``TS💬`` to udp as `DiscoReceived` on ``udp-in``, every
other one to worker k = owner(peer_key, wg_workers) as `DerpReceived` on ``wg-{k}-in``.

Inbound packets are batched per (peer, region) and kind within one loop iteration and sent
at its end. A batch that finds its socket's queue full is dropped and its packets counted
(``udp_in.dropped``, ``wg_in.dropped``).

Regions (see `regions`): the home region and every peer's home region are kept connected;
a region a `DerpSend` names is connected on demand. A region no longer wanted (and not used
by a DerpSend for GRACE s) is disconnected GRACE s later.

Keys: the node key is read from ``<state_dir>/keys.json``, which the control service
creates; if it is not there yet we wait for it rather than create it (two processes racing
to create it could each end up holding a different key).

Owned by the derp service's loop thread (everything here).
"""

from __future__ import annotations

from sunbeam.shared.channels import DERP_IN, DERP_PUB, UDP_IN, WG_IN
from sunbeam.shared.keys import KEYS_FILE, load_or_create
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    UDP_IN_CODEC,
    WG_IN_CODEC,
    DerpReceived,
    DerpSend,
    DerpStatus,
    DiscoReceived,
)
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.follow import NetmapSubscription
from sunbeam.shared.proto.derp import DISCO_MAGIC
from sunbeam.shared.runtime.batching import Batcher, EncodedBatch
from sunbeam.shared.runtime.log import RateLimitedLog
from sunbeam.shared.runtime.loop import decoding_handler
from sunbeam.shared.runtime.service import Service
from sunbeam.shared.runtime.tlsctx import client_context
from sunbeam.shared.sharding import owner

from .connection import RegionConnection
from .regions import dial_for, home_region, uses_tls, wanted_regions

STATUS_INTERVAL = 5.0
GRACE = 60.0
KEYS_POLL = 0.5


class DerpService:
    def __init__(self, svc: Service) -> None:
        self.svc, self.loop, self.ctx = svc, svc.loop, svc.context
        # for every TLS region; none under an http control URL, where no region uses TLS:
        # the context holds the system's CA store (~1.1 MB)
        self.tls = client_context(self.ctx.ca_file) if uses_tls(self.ctx.control_url) else None
        self.log, self.counters = svc.log, svc.counters
        self.noisy = RateLimitedLog(svc.log, max_lines=5, interval=60)
        self.node_private: bytes | None = None
        self.home = 0
        self.ever_connected = False
        self.conns: dict[int, RegionConnection] = {}
        self.demand: dict[int, float] = {}  # region -> last DerpSend naming it
        self.unwanted_since: dict[int, float] = {}
        self._dirty: set[RegionConnection] = set()
        self._last_status: DerpStatus | None = None
        rundir = self.ctx.runtime_dir
        loop = self.loop
        self.pub = DERP_PUB.bind(loop, rundir)
        self.derp_in = DERP_IN.bind(loop, rundir)
        loop.on_readable(self.derp_in, decoding_handler(DERP_IN_CODEC, self.on_derp_send, self.counters,
                                                        bad_log=self.noisy, counter="derp_in_bad_message"))
        self.udp_out = UDP_IN.connect(loop, rundir)
        self.wg_out = [WG_IN.connect(loop, rundir, k=k) for k in range(self.ctx.wg_workers)]
        self.netmap_sub = NetmapSubscription(loop, rundir, self.counters, self._on_netmap)
        self.disco_batches: Batcher[tuple[bytes, int]] = Batcher(
            UDP_IN_CODEC, lambda d, p: DiscoReceived(peer_key=d[0], region=d[1], packets=p))
        self.wg_batches: Batcher[tuple[bytes, int]] = Batcher(
            WG_IN_CODEC, lambda d, p: DerpReceived(peer_key=d[0], region=d[1], packets=p))
        loop.on_iteration_end(self._end_of_iteration)
        svc.on_stop.append(self.close_all)

    # -- start: keys ---------------------------------------------------------------------

    def start(self) -> None:
        self._tick()
        self._load_keys(first=True)

    def _load_keys(self, first: bool = False) -> None:
        if not (self.ctx.state_dir / KEYS_FILE).exists():
            if first:
                self.log.info("waiting_for_keys", path=str(self.ctx.state_dir / KEYS_FILE))
            self.loop.call_later(KEYS_POLL, self._load_keys)
            return
        keys, _created = load_or_create(self.ctx.state_dir)  # exists: read only
        self.node_private = keys.node.private_bytes()
        self.log.info("keys", node_key=keys.node_public_text)
        self.reconcile()

    # -- netmap -> regions ----------------------------------------------------------------

    def _on_netmap(self, _netmap: Netmap) -> None:
        self.reconcile()

    @property
    def netmap(self) -> Netmap | None:
        return self.netmap_sub.netmap

    def reconcile(self) -> None:
        """Bring the set of region connections in line with the netmap and recent demand."""
        netmap = self.netmap
        if self.node_private is None or netmap is None:
            return
        now = self.loop.now()
        home = home_region(netmap.derp_map)
        if home != self.home:
            self.log.info("derp_home", region=home, was=self.home)
            self.home = home
        wanted = wanted_regions(netmap, home) | {r for r, t in self.demand.items() if now - t < GRACE}
        for region in sorted(wanted):
            dial = dial_for(region, netmap.derp_map, self.ctx.control_url)
            if dial is None:
                continue
            self.unwanted_since.pop(region, None)
            conn = self.conns.get(region)
            if conn is None:
                self._open(region)
            elif conn.dial != dial:
                conn.redial(dial)
        for region, conn in self.conns.items():
            conn.set_preferred(region == home)
            if region not in wanted:
                self.unwanted_since.setdefault(region, now)
        self.publish_status()

    def _open(self, region: int) -> RegionConnection | None:
        dial = dial_for(region, self.netmap.derp_map if self.netmap else None, self.ctx.control_url)
        if dial is None or self.node_private is None:
            return None
        conn = RegionConnection(self.loop, dial, self.node_private, counters=self.counters, log=self.log,
                                noisy=self.noisy, on_packet=self.on_packet, on_state=self._on_conn_state,
                                tls=self.tls, preferred=region == self.home)
        self.conns[region] = conn
        conn.start()
        return conn

    def _on_conn_state(self, conn: RegionConnection) -> None:
        if conn.connected and conn.region == self.home:
            self.ever_connected = True
        self.publish_status()

    def _tick(self) -> None:
        now = self.loop.now()
        for region, since in list(self.unwanted_since.items()):
            if now - since >= GRACE and region in self.conns and region not in self._demanded(now):
                self.log.info("derp_region_closed", region=region, reason="no longer needed")
                self.conns.pop(region).close()
                del self.unwanted_since[region]
        for region in [r for r, t in self.demand.items() if now - t >= GRACE]:
            del self.demand[region]
        self.reconcile()
        self.publish_status(force=True)
        self.noisy.report_suppressed()
        self.loop.call_later(STATUS_INTERVAL, self._tick)

    def _demanded(self, now: float) -> set[int]:
        return {r for r, t in self.demand.items() if now - t < GRACE}

    # -- status ---------------------------------------------------------------------------

    def status(self) -> DerpStatus:
        connected = tuple(sorted(r for r, c in self.conns.items() if c.connected))
        home_up = self.home in connected
        state = "connected" if home_up else ("disconnected" if self.ever_connected else "starting")
        return DerpStatus(home_region=self.home if self.ever_connected else 0, connected=connected, state=state)

    def publish_status(self, force: bool = False) -> None:
        status = self.status()
        if status == self._last_status and not force:
            return
        if status != self._last_status:
            self.log.info("derp_status", home_region=status.home_region, connected=list(status.connected),
                          state=status.state)
        self._last_status = status
        DERP_PUB.send(self.pub, status, self.counters)

    # -- data ---------------------------------------------------------------------------

    def on_derp_send(self, msg: DerpSend) -> None:
        region = msg.region or self.home
        if region == 0 or self.node_private is None:
            self.counters.incr("derp_send_dropped_no_home", len(msg.packets))
            return
        self.demand[region] = self.loop.now()
        conn = self.conns.get(region) or self._open(region)
        if conn is None:
            self.counters.incr("derp_send_dropped_unknown_region", len(msg.packets))
            self.noisy.warning(f"unknown_region:{region}", "derp_send_unknown_region", region=region)
            return
        self.unwanted_since.pop(region, None)
        for packet in msg.packets:
            conn.send(msg.peer_key, packet)
        self._dirty.add(conn)

    def on_packet(self, region: int, src: bytes, packet: bytes) -> None:
        self.counters.incr("derp_packets_received")
        if packet.startswith(DISCO_MAGIC):
            batch = self.disco_batches.add((src, region), packet)
            if batch is not None:
                self._send_disco(batch)
        else:
            batch = self.wg_batches.add((src, region), packet)
            if batch is not None:
                self._send_wg(batch)

    def _send_disco(self, batch: EncodedBatch[tuple[bytes, int]]) -> None:
        UDP_IN.send_encoded(self.udp_out, batch.data, self.counters, weight=batch.packets)

    def _send_wg(self, batch: EncodedBatch[tuple[bytes, int]]) -> None:
        sock = self.wg_out[owner(batch.dest[0], len(self.wg_out))]
        WG_IN.send_encoded(sock, batch.data, self.counters, weight=batch.packets)

    def _end_of_iteration(self) -> None:
        for batch in self.disco_batches.flush():
            self._send_disco(batch)
        for batch in self.wg_batches.flush():
            self._send_wg(batch)
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()

    def close_all(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
