"""`TcpStack`: every TCP connection of one node, sans-IO and batch-oriented.

    receive(ip_packets, now)  ->  demultiplex by (remote addr, local addr, remote port,
                                  local port), checksum, segment arrival per connection
    poll(now)                 ->  IP packets to transmit: immediate answers (RSTs,
                                  duplicate ACKs) first, then each connection with
                                  something to send (data, retransmissions, one ACK)
    events()                  ->  ConnectionRequest / Connected / Readable / Writable /
                                  PeerFinished / Reset / Closed, in order
    next_timer(), handle_timer(now)   retransmission, persist, keepalive, TIME-WAIT timers

Demultiplexing key: the inbound packet's own bytes, ``src | dst | sport | dport``, i.e.
IPv4 bytes 12..24 and IPv6 bytes 8..44 (no IPv6 extension headers), so the fast path
looks a connection up with one slice. The fast path verifies the IPv4 header checksum
and the TCP checksum over the whole packet at once (the IP header is a multiple of 16 bits
and sums to 0 when valid), the word sums of a whole batch computed together
(`sunbeam.shared.proto.ip.wordsums`); anything unusual (IPv4 options,
fragments, trailing bytes are fine) goes through `segment.parse_packet`. A stretch of at
least `bulk.BULK_MIN` equal-length packets in a batch (a bulk transfer's full segments) is
first tried whole: `bulk.check` does the fast path's checks for all of them as array
operations and joins their data, and the connection takes the run in one step
(`_Input.input_bulk`) or the stretch goes packet by packet as before.

Segments for no connection (RFC 9293 3.10.7.1): a SYN to a listened port on one of our
addresses becomes a ``REQUESTED`` connection and a `ConnectionRequest` (at most
``max_requests`` at once; more SYNs are dropped, counted ``drop_syn_queue_full``); a RST
is ignored; anything else to our addresses is answered with a RST
(<SEQ=SEG.ACK><CTL=RST>, or <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>). Packets for other
addresses are dropped (``drop_not_local``).

Counters (``counters``, a `collections.Counter`): ``packets_in``, ``packets_out``;
``drop_<reason>`` for refused packets (the reasons of `segment.parse_packet`, e.g.
``not_tcp`` for every other protocol, plus ``not_local``, ``syn_queue_full``,
``bad_options``); ``rst_sent``, ``rst_ignored``; ``retransmit``, ``fast_retransmit`` (a
recovery episode), ``rto``, ``tail_loss_probe``, ``window_probe``, ``dsack``, ``undo``;
``out_of_order``, ``unacceptable``, ``zero_window_drop``; ``reset_<reason>``,
``request_timeout``; ``reject_ignored`` (see `reject`); ``bulk_runs`` (runs of data segments
checked and taken at once, see `bulk`); ``no_free_port`` (a `connect`
found no usable local port, see `ports`). The last refused packet's reason and detail are
in ``last_drop`` for a rate-limited log. Packets are ``bytes`` (a trailing pad after the IP length is fine).

Ownership: one stack per proxy process, used from its loop thread only.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

from ..ip.headers import Malformed, addr_bytes, addr_text, packed_set
from ..ip.wordsums import word_sum, word_sums
from .bulk import BULK_MIN, Burst, Outgoing
from .bulk import check as bulk_check
from .bulk import check_entries as bulk_check_entries
from .connection import Config, Connection
from .events import ConnectionRequest, Event, Readable
from .ports import NoFreePort, PortChooser
from .segment import (
    ACK,
    FIN,
    RST,
    SYN,
    build_packet,
    parse_options,
    parse_packet,
)
from .states import CLOSED, REQUESTED, SYN_SENT
from .states import M32 as _M32
from .states import STATE_NAMES as _NAMES

if TYPE_CHECKING:
    from .segment import Segment
    from .tcb import _Tcb

__all__ = ["TcpStack"]

_SEQ = struct.Struct("!IIBBH")
"""seq, ack, data offset << 4, flags, window: TCP header bytes 4..16."""


class TcpStack:
    def __init__(self, *, random_bytes: Callable[[int], bytes], mss4: int = 1240, mss6: int = 1220,
                 recv_buffer: int = 1 << 20, send_buffer: int = 1 << 20, max_requests: int = 1024,
                 **options: Any) -> None:
        """``options`` go to `Config` (sack, min_rto, max_rto, syn_retries, max_retries,
        time_wait, request_timeout, keepalive_idle/interval/count, ttl, congestion, flows)."""
        self.cfg = Config(mss4=mss4, mss6=mss6, recv_buffer=recv_buffer, send_buffer=send_buffer, **options)
        self.ports = PortChooser(random_bytes(32))
        self._now = 0.0
        """The latest ``now`` a caller gave: when a connection closes, for `ports`."""
        self.rcv_wnd_max = self.cfg.recv_buffer
        """What each connection the packets being received reach may advertise at most:
        ``cfg.relayed_window`` when they came through a relay (``receive``'s ``relayed``)."""
        self.max_requests = max_requests
        self.counters: Counter[str] = Counter()
        self.last_drop: tuple[str, str] = ("", "")
        self._local: frozenset[bytes] = frozenset()
        self._listen: set[int] = set()
        self._by_key: dict[bytes, Connection] = {}
        self._by_id: dict[int, Connection] = {}
        self._next_id = 1
        self._requests = 0
        self._out: Outgoing = []
        self._dirty: list[_Tcb] = []
        """Connections with something to send (queued by `_Tcb._mark`)."""
        self._events: list[Event] = []
        self._readable: list[_Tcb] = []
        self._heap: list[tuple[float, int, _Tcb]] = []
        """(time, tie, connection); an entry is stale unless its time is the connection's ``heap_at``."""
        self._tie = itertools.count()

    # --- configuration ---------------------------------------------------------------

    def set_local_addresses(self, addrs: Iterable[str]) -> None:
        self._local = packed_set(addrs)

    def listen(self, port: int) -> None:
        self._listen.add(port)

    def unlisten(self, port: int) -> None:
        self._listen.discard(port)

    # --- packets in ------------------------------------------------------------------

    def receive(self, packets: list[bytes], now: float, relayed: bool = False) -> None:
        """Segments from peers; ``relayed``: they came through a relay (DERP), so each
        connection they reach advertises at most ``Config.relayed_window`` until one comes
        another way (see `output`)."""
        self._now = now
        self.rcv_wnd_max = self.cfg.relayed_window if relayed else self.cfg.recv_buffer
        count = len(packets)
        self.counters["packets_in"] += count
        if count < BULK_MIN:
            self._receive_each(packets, now)
        else:
            # stretches of at least BULK_MIN equal-length packets (a bulk transfer's full
            # segments) are tried whole (`bulk`); the rest, and a stretch refused, go one by one
            lengths = [len(p) for p in packets]
            done = i = 0
            while i < count:
                length = lengths[i]
                j = i + 1
                while j < count and lengths[j] == length:
                    j += 1
                if j - i >= BULK_MIN:
                    if done < i:
                        self._receive_each(packets[done:i], now)
                    if not self._receive_bulk(packets[i:j], length, now):
                        self._receive_each(packets[i:j], now)
                    done = j
                i = j
            if done < count:
                self._receive_each(packets[done:] if done else packets, now)
        self._report_readable()

    def receive_joined(self, entries: list[bytes], length: int, now: float, relayed: bool = False) -> bool:
        """Packets of ``length`` bytes back to back in ``entries``, each maybe ending with
        one shorter packet (the WireGuard worker's form of a run, `FromPeer.segments`):
        taken whole if they are one run of data segments its connection takes
        (`bulk.check_entries`; as `receive` takes a stretch of equal packets); False:
        nothing changed, hand them to `receive` one by one."""
        first = entries[0] if entries else b""
        conn = self._by_key.get(first[12:24]) if len(first) >= 40 else None
        if conn is None:
            return False
        run = bulk_check_entries(entries, length, conn.addr_sum)
        self._now = now
        self.rcv_wnd_max = self.cfg.relayed_window if relayed else self.cfg.recv_buffer
        last = entries[-1]
        last_len = (len(last) % length or length) - 40
        if run is None or not conn.input_bulk(run.seqw, run.ackw, run.wnd, run.data, last_len, run.last_flags, now):
            return False
        self.counters["packets_in"] += sum(-(-len(e) // length) for e in entries)
        self.counters["bulk_runs"] += 1
        self._report_readable()
        return True

    def _report_readable(self) -> None:
        if self._readable:
            events = self._events
            for c in self._readable:
                if c.readable:
                    c.readable = False
                    events.append(Readable(c.id))
            self._readable = []

    def _receive_each(self, packets: list[bytes], now: float) -> None:
        """The packets one by one (in-order data of one connection still in runs)."""
        by_key = self._by_key
        unpack = _SEQ.unpack_from
        from_bytes = int.from_bytes
        sums = word_sums(packets)
        # A run: data segments without options for one connection (IPv4 or IPv6), each
        # starting where the one before ended, with the same ACK and window (a bulk
        # transfer's batch); handed over together (`_Input.input_run`) when the next packet
        # does not extend it.
        run: list[tuple[bytes, int, int, int]] = []
        run_conn: Connection | None = None
        run_seq = run_next = run_ack = run_wnd = 0
        for i, pkt in enumerate(packets):
            n = len(pkt)
            conn = None  # set when the packet takes the fast path, with where its parts are
            if n >= 40 and pkt[0] == 0x45 and pkt[9] == 6 and not (pkt[6] & 0x3F or pkt[7]):
                total = pkt[2] << 8 | pkt[3]
                found = by_key.get(pkt[12:24])
                if found is not None and 40 <= total <= n:
                    doff = (pkt[32] >> 4) << 2
                    if 20 <= doff <= total - 20:
                        if from_bytes(pkt[:20], "big") % 0xFFFF:
                            self._drop("bad_ip_checksum")
                            continue
                        if ((sums[i] if total == n else word_sum(pkt[:total])) + found.addr_sum + total - 14) % 0xFFFF:
                            self._drop("bad_tcp_checksum")
                            continue
                        conn, tcp_at, opt, dend = found, 24, 40, total
            elif n >= 60 and pkt[0] >> 4 == 6 and pkt[6] == 6:
                plen = pkt[4] << 8 | pkt[5]
                end = 40 + plen
                found = by_key.get(pkt[8:44])
                if found is not None and 60 <= end <= n:
                    doff = (pkt[52] >> 4) << 2
                    if 20 <= doff <= plen:
                        if ((sums[i] if end == n else word_sum(pkt[:end])) - from_bytes(pkt[:8], "big") + plen + 6) \
                                % 0xFFFF:
                            self._drop("bad_tcp_checksum")
                            continue
                        conn, tcp_at, opt, dend = found, 44, 60, end
            if conn is None:
                if run:  # the run ends before a packet for the slow path
                    self._input_run(run_conn, run_seq, run_next, run_ack, run_wnd, run, now)  # type: ignore[arg-type]
                    run, run_conn = [], None
                self._receive_slow(pkt, now)
                continue
            # ``opt``: where the TCP options start (the header's fixed 20 bytes end); ``dend``:
            # where the segment ends (trailing bytes after the IP length are not part of it)
            seqw, ackw, _off, flags, wnd = unpack(pkt, tcp_at)
            if doff == 20 and dend > opt and flags & 0x37 == ACK:
                if conn is run_conn and seqw == run_next and ackw == run_ack and wnd == run_wnd:
                    run.append((pkt, opt, dend, flags))
                    run_next = (seqw + dend - opt) & _M32
                    continue
                if run:
                    self._input_run(run_conn, run_seq, run_next, run_ack, run_wnd, run, now)  # type: ignore[arg-type]
                run = [(pkt, opt, dend, flags)]
                run_conn, run_seq, run_ack, run_wnd = conn, seqw, ackw, wnd
                run_next = (seqw + dend - opt) & _M32
                continue
            if run:
                self._input_run(run_conn, run_seq, run_next, run_ack, run_wnd, run, now)  # type: ignore[arg-type]
                run, run_conn = [], None
            conn.input(seqw, ackw, flags, wnd, pkt, opt, opt - 20 + doff, dend, now)
        if run:
            self._input_run(run_conn, run_seq, run_next, run_ack, run_wnd, run, now)  # type: ignore[arg-type]

    def _receive_bulk(self, packets: list[bytes], length: int, now: float) -> bool:
        """Packets all ``length`` bytes long taken as one run of data segments (`bulk`), if
        they are one and their connection takes it whole; False: nothing changed."""
        first = packets[0]
        if length <= 40 or first[0] != 0x45:  # no data (or not even the headers)
            return False
        conn = self._by_key.get(first[12:24])
        if conn is None:
            return False
        run = bulk_check(packets, length, conn.addr_sum)
        if run is None or not conn.input_bulk(run.seqw, run.ackw, run.wnd, run.data, length - 40, run.last_flags,
                                              now):
            return False
        self.counters["bulk_runs"] += 1
        return True

    @staticmethod
    def _input_run(conn: Connection, seqw: int, next_seqw: int, ackw: int, wnd: int,
                   run: list[tuple[bytes, int, int, int]], now: float) -> None:
        if len(run) == 1:
            pkt, off, end, flags = run[0]
            conn.input(seqw, ackw, flags, wnd, pkt, off, off, end, now)
        else:
            conn.input_run(seqw, ackw, wnd, run, (next_seqw - seqw) & _M32, now)

    def _receive_slow(self, pkt: bytes, now: float) -> None:
        try:
            seg = parse_packet(pkt)
        except Malformed as e:
            self._drop(e.reason, e.detail)
            return
        key = seg.src + seg.dst + seg.sport.to_bytes(2, "big") + seg.dport.to_bytes(2, "big")
        conn = self._by_key.get(key)
        if conn is not None:
            buf = seg.options + seg.payload
            conn.input(seg.seq, seg.ack, seg.flags, seg.window, buf, 0, len(seg.options), len(buf), now)
            return
        if seg.dst not in self._local:
            self._drop("not_local", addr_text(seg.dst))
            return
        flags = seg.flags
        if flags & RST:
            self.counters["rst_ignored"] += 1
            return
        if flags & (SYN | ACK | FIN) == SYN and seg.dport in self._listen:
            self._passive_open(seg, key, now)
            return
        if flags & ACK:
            rst = build_packet(seg.dst, seg.src, seg.dport, seg.sport, seg.ack, 0, RST, 0)
        else:
            rst = build_packet(seg.dst, seg.src, seg.dport, seg.sport, 0, (seg.seq + seg.seg_len) & _M32,
                               RST | ACK, 0)
        self._out.append(rst)
        self.counters["rst_sent"] += 1

    def _passive_open(self, seg: Segment, key: bytes, now: float) -> None:
        if self._requests >= self.max_requests:
            self._drop("syn_queue_full")
            return
        try:
            opts = parse_options(seg.options)
        except Malformed as e:
            self._drop(e.reason, e.detail)
            return
        conn = self._new(seg.dst, seg.dport, seg.src, seg.sport, key, now)
        conn.irs = seg.seq
        conn.rcv_nxt = conn.rcv_adv = seg.seq + 1
        conn.apply_syn_options(opts)
        conn.snd_wnd = conn.max_snd_wnd = seg.window
        conn.snd_wl1 = seg.seq
        conn.open_passive(now)
        self._requests += 1
        self._events.append(ConnectionRequest(conn.id, (addr_text(seg.src), seg.sport),
                                              (addr_text(seg.dst), seg.dport)))

    # --- connections -----------------------------------------------------------------

    def _new(self, laddr: bytes, lport: int, raddr: bytes, rport: int, key: bytes, now: float) -> Connection:
        iss = self.ports.isn(key, now)
        conn = Connection(self, self.cfg, self._next_id, laddr, lport, raddr, rport, iss, now)
        assert conn.key == key
        self._next_id += 1
        self._by_key[key] = conn
        self._by_id[conn.id] = conn
        return conn

    def _get(self, conn_id: int) -> Connection | None:
        conn = self._by_id.get(conn_id)
        if conn is None and not 0 < conn_id < self._next_id:
            raise KeyError(f"no connection {conn_id} was ever made")
        return conn

    def connect(self, src_ip: str, dst: tuple[str, int], now: float) -> int:
        """Open a connection from our ``src_ip`` to ``dst``; its local port never repeats a
        4-tuple that is open or closed within `PortChooser.horizon` (see `ports`).
        Raises ValueError for an address that is not ours or of the other family, and
        `NoFreePort` when every port toward ``dst`` is taken."""
        self._now = now
        laddr, raddr, rport = addr_bytes(src_ip), addr_bytes(dst[0]), dst[1]
        if len(laddr) != len(raddr):
            raise ValueError(f"connect from {src_ip} to {dst[0]}: address families differ")
        if laddr not in self._local:
            raise ValueError(f"{src_ip} is not one of our addresses")
        prefix = raddr + laddr + rport.to_bytes(2, "big")
        try:
            lport = self.ports.choose(prefix, self._by_key, self._listen, now)
        except NoFreePort:
            self.counters["no_free_port"] += 1
            raise
        conn = self._new(laddr, lport, raddr, rport, prefix + lport.to_bytes(2, "big"), now)
        conn.open_active(now)
        return conn.id

    def reject(self, local: bytes, local_port: int, remote: bytes, remote_port: int, reason: str,
               now: float) -> bool:
        """The far side says our flow ``local:local_port -> remote:remote_port`` cannot go
        through (a TSMP reject, an ICMP destination unreachable; addresses packed). A
        connection still waiting for its SYN-ACK ends at once with `Reset` ``reason``
        (True); an established one takes it as a soft error and carries on (RFC 1122
        4.2.3.9), as does a flow we have no connection for (counted ``reject_ignored``)."""
        self._now = now
        conn = self._by_key.get(remote + local + remote_port.to_bytes(2, "big") + local_port.to_bytes(2, "big"))
        if conn is None or conn.state != SYN_SENT:
            self.counters["reject_ignored"] += 1
            return False
        conn._fail(reason)
        return True

    def accept(self, conn_id: int) -> None:
        conn = self._get(conn_id)
        if conn is not None:
            conn.accept(0.0)
            self._requests -= 1

    def refuse(self, conn_id: int) -> None:
        conn = self._get(conn_id)
        if conn is None:
            return
        if conn.state != REQUESTED:
            raise ValueError(f"connection {conn_id} is {_NAMES[conn.state]}, not a request")
        conn._tx(self._out, 0, RST | ACK, b"", b"", 0)
        self.counters["rst_sent"] += 1
        conn._finish()

    def send(self, conn_id: int, data: bytes | memoryview, now: float) -> int:
        conn = self._get(conn_id)
        return conn.send(data, now) if conn is not None else 0

    def read(self, conn_id: int, max_bytes: int = 1 << 16) -> bytes:
        conn = self._get(conn_id)
        return conn.read(max_bytes) if conn is not None else b""

    def shutdown(self, conn_id: int, now: float) -> None:
        conn = self._get(conn_id)
        if conn is not None:
            conn.shutdown(now)

    def abort(self, conn_id: int, now: float) -> None:
        self._now = now
        conn = self._get(conn_id)
        if conn is not None:
            conn.abort(now)

    def info(self, conn_id: int) -> dict[str, Any]:
        conn = self._get(conn_id)
        if conn is None:
            return {"conn_id": conn_id, "state": "CLOSED"}
        return conn.info()

    def connections(self) -> list[int]:
        """Ids of the connections not yet reported `Closed`."""
        return list(self._by_id)

    # --- packets out, events, timers -------------------------------------------------

    def poll(self, now: float) -> list[bytes]:
        """The packets to send, in order."""
        out = self.poll_bursts(now)
        flat: list[bytes] = []
        for p in out:
            if isinstance(p, Burst):
                flat += p.packets()
            else:
                flat.append(p)
        return flat

    def poll_bursts(self, now: float) -> Outgoing:
        """`poll`, but a run of segments built at once stays one `Burst` (the proxy hands
        it to the WireGuard worker whole)."""
        out = self._out
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for conn in dirty:
                if conn.dirty:
                    conn.output(now, out)
        self._out = []
        self.counters["packets_out"] += len(out)  # (and a burst's others, as `_send_bulk` counts them)
        return out

    def events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    def next_timer(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].heap_at != heap[0][0]:
            heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Run the timers due at ``now``; each connection once per call (a timer it re-arms
        for ``now`` or earlier runs at the next call)."""
        self._now = now
        heap = self._heap
        due: list[_Tcb] = []
        while heap and heap[0][0] <= now:
            t, _, conn = heappop(heap)
            if conn.heap_at == t and conn.state != CLOSED:
                conn.heap_at = float("inf")  # consumed: an older entry for the same time is stale
                due.append(conn)
        for conn in due:
            if conn.state != CLOSED:
                conn.on_timer(now)

    # --- used by connections ---------------------------------------------------------

    def _schedule(self, conn: _Tcb, t: float) -> None:
        heappush(self._heap, (t, next(self._tie), conn))

    def _forget(self, conn: _Tcb) -> None:
        """``conn`` entered CLOSED: stop demultiplexing to it and running its timers."""
        if self._by_key.get(conn.key) is conn:
            del self._by_key[conn.key]
            self.ports.closed(conn.key, self._now)
        conn.heap_at = -1.0

    def _closed(self, conn: _Tcb) -> None:
        """``Closed`` was reported for ``conn``: its id is gone."""
        self._by_id.pop(conn.id, None)

    def _drop(self, reason: str, detail: str = "") -> None:
        self.counters["drop_" + reason] += 1
        self.last_drop = (reason, detail)
