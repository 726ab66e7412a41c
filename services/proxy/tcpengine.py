"""`TcpEngine`: the proxy's shell around our sans-IO `TcpStack`.

Inputs: TCP segments from peers (`IpPlane` hands every IPv4/IPv6 packet with protocol 6 to
`receive`, and a peer's TSMP reject or ICMP unreachable to `unreachable`), calls from the
local side (`connect`, `send`, `read`, `shutdown`, `abort`), and its timer. Outputs: the stack's IP packets, each routed by destination to the owning
WireGuard worker (`IpPlane.send`), and stack events dispatched to the handler registered
for the connection (`Splice`, or the inbound acceptor for `ConnectionRequest`).

Buffers: `RECV_BUFFER` and `SEND_BUFFER` per connection and direction; they fill only when
one side is slower than the other (a slow local reader, a slow peer). Congestion control:
CUBIC responding as `TCP_FLOWS` flows (see `TCP_FLOWS`); for A/B benchmarks
``$SUNBEAM_TCP_CONGESTION=newreno`` selects NewReno and ``$SUNBEAM_TCP_FLOWS=1`` plain RFC 9438
CUBIC, ``$SUNBEAM_TCP_QUICK_ACKS`` and ``$SUNBEAM_TCP_SPLIT_ACKS=0`` the receiver's ACK policy (`tcp.input`,
`tcp.output`) (an unusable value is logged and the default used).

``pump()`` runs at the end of every loop iteration (and after a timer): it drains events,
transmits, flushes the worker outbox, and re-arms the one timer. Ownership: the proxy's
loop thread, but for numpy's import: once the stack's first batch wants numpy
(`sunbeam.shared.proto.ip.wordsums`), a thread of its own imports it (~0.1 s) while the
loop goes on with the per-packet paths; the thread's one write is the module reference
the bulk paths read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sunbeam.shared.proto.ip.headers import PROTO_TCP
from sunbeam.shared.proto.ip.unreachable import Unreachable
from sunbeam.shared.proto.ip.wordsums import load_numpy, numpy_wanted
from sunbeam.shared.proto.tcp import (
    Closed,
    ConnectionRequest,
    Connected,
    PeerFinished,
    Readable,
    Reset,
    TcpStack,
    Writable,
)
from sunbeam.shared.proto.tcp.congestion import ALGORITHMS as CONGESTION_ALGORITHMS
from sunbeam.shared.runtime.coretimer import CoreTimer
from sunbeam.shared.runtime.service import Service

from .plane import IpPlane


RECV_BUFFER = 4 << 20
"""Per connection, bytes received but not yet written to the local socket (the window we
advertise). With 1 MB, a 200 MB download ran at ~112 MB/s, with 4 MB at ~127 and with
8 MB no faster (a bigger window means bigger bursts, so fewer, larger batches through
every stage). tailscaled's netstack lets its receive buffer grow to 8 MB."""
SEND_BUFFER = 4 << 20
"""Per connection, bytes read from the local socket and not yet acknowledged by the peer.
1 MB: ~118 MB/s for a 200 MB upload, 4 MB: ~130 (tailscaled: up to 6 MB)."""
ENV_CONGESTION = "SUNBEAM_TCP_CONGESTION"
ENV_FLOWS = "SUNBEAM_TCP_FLOWS"
ENV_QUICK_ACKS = "SUNBEAM_TCP_QUICK_ACKS"
ENV_SPLIT_ACKS = "SUNBEAM_TCP_SPLIT_ACKS"
TCP_QUICK_ACKS = 16
"""After out-of-order data, in-order segments ACKed every second one (`tcp.input`)."""
TCP_FLOWS = 2
"""Each proxied connection's CUBIC responds to loss as two standard flows would together
(Chromium QUIC's default emulation): the local application behind the proxy, and the
tunnel, often meet random loss on real links (Wi-Fi, mobile), where one RFC 9438 flow's
window settles at sqrt(1.5 / p) segments. At 20 ms each way + 0.5 % loss, 20 MB uploaded
(one run each, BENCHMARKS.md has the link bench): one flow 0.85 MB/s (its window ~15-25
segments between losses), two 2.01, tailscaled's netstack 1.21 (its flight averaged 42)."""


class ConnHandler(Protocol):
    def on_connected(self) -> None: ...
    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def on_peer_finished(self) -> None: ...
    def on_reset(self, reason: str) -> None: ...
    def on_closed(self) -> None: ...


def _env_int(svc: Service, name: str, default: int, lo: int, hi: int) -> int:
    """``$name`` as an integer in [lo, hi]; anything else is logged and ``default`` used."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if text.isdigit() and lo <= int(text) <= hi:
        return int(text)
    svc.log.warning("bad_env", name=name, value=text[:40], using=default, choices=f"{lo}-{hi}")
    return default


class TcpEngine:
    def __init__(self, svc: Service, plane: IpPlane) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.plane = plane
        self.counters = svc.counters
        congestion = os.environ.get(ENV_CONGESTION, "cubic")
        if congestion not in CONGESTION_ALGORITHMS:
            svc.log.warning("bad_env", name=ENV_CONGESTION, value=congestion[:40], using="cubic",
                            choices=sorted(CONGESTION_ALGORITHMS))
            congestion = "cubic"
        self.stack = TcpStack(random_bytes=os.urandom, recv_buffer=RECV_BUFFER, send_buffer=SEND_BUFFER,
                              congestion=congestion, flows=_env_int(svc, ENV_FLOWS, TCP_FLOWS, 1, 8),
                              quick_acks=_env_int(svc, ENV_QUICK_ACKS, TCP_QUICK_ACKS, 0, 1024),
                              split_acks=bool(_env_int(svc, ENV_SPLIT_ACKS, 1, 0, 1)))
        self.handlers: dict[int, ConnHandler] = {}
        self.numpy_loader: threading.Thread | None = None
        self.on_request: Callable[[ConnectionRequest], None] = lambda req: self.stack.refuse(req.conn_id)
        self.timer = CoreTimer(self.loop, self.stack.next_timer, self.loop.now, self._on_timer)
        self.gauges: dict[str, Callable[[], int]] = {"tcp_open": lambda: len(self.stack.connections()),
                                                     "tcp_handlers": lambda: len(self.handlers)}
        """Values reported with the counters: connections the stack holds (TIME-WAIT
        included) and those a local socket is attached to; others add theirs."""
        svc.extra_counters = lambda: {**svc.counters.snapshot(),
                                      **{f"tcp_{k}": v for k, v in self.stack.counters.items()},
                                      **{name: gauge() for name, gauge in self.gauges.items()}}
        plane.tcp_sink = self.receive
        plane.tcp_run_sink = self.receive_joined
        plane.on_unreachable = self.unreachable
        plane.on_addresses = self.stack.set_local_addresses
        self.loop.on_iteration_end(self.pump)

    # -- inputs ---------------------------------------------------------------------------

    def receive(self, packets: list[bytes], relayed: bool = False) -> None:
        self.stack.receive(packets, self.loop.now(), relayed)

    def receive_joined(self, entries: list[bytes], size: int, relayed: bool = False) -> bool:
        return self.stack.receive_joined(entries, size, self.loop.now(), relayed)

    def unreachable(self, u: Unreachable) -> None:
        """A TSMP reject / ICMP unreachable: a connect waiting on that flow fails at once."""
        if u.proto == PROTO_TCP:
            self.stack.reject(u.local, u.local_port, u.remote, u.remote_port, u.reason, self.loop.now())

    def connect(self, src_ip: str, dst: tuple[str, int], handler: ConnHandler) -> int:
        conn_id = self.stack.connect(src_ip, dst, self.loop.now())
        self.handlers[conn_id] = handler
        return conn_id

    def adopt(self, conn_id: int, handler: ConnHandler) -> None:
        """Attach ``handler`` to a connection accepted from a `ConnectionRequest`."""
        self.handlers[conn_id] = handler
        self.stack.accept(conn_id)

    # -- the pump -------------------------------------------------------------------------

    def pump(self) -> None:
        for _ in range(8):  # handlers may produce more events (e.g. a read opens the window)
            events = self.stack.events()
            if not events:
                break
            for ev in events:
                self._dispatch(ev)
        packets = self.stack.poll_bursts(self.loop.now())
        if packets:
            unrouted = self.plane.send_many(packets)
            if unrouted:
                self.counters.incr("tcp_out_no_route", unrouted)
        self.plane.outbox.flush()
        self.timer.rearm()
        if self.numpy_loader is None and numpy_wanted():
            self.numpy_loader = threading.Thread(target=self._load_numpy, name="numpy-import", daemon=True)
            self.numpy_loader.start()

    def _load_numpy(self) -> None:
        """On the loader thread (see the module docstring)."""
        try:
            load_numpy()
        except Exception as exc:  # numpy is a dependency: a broken install; the slow paths go on
            self.svc.log.warning("numpy_import_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, ConnectionRequest):
            self.on_request(ev)
            return
        handler = self.handlers.get(ev.conn_id)
        if handler is None:
            return
        if isinstance(ev, Connected):
            handler.on_connected()
        elif isinstance(ev, Readable):
            handler.on_readable()
        elif isinstance(ev, Writable):
            handler.on_writable()
        elif isinstance(ev, PeerFinished):
            handler.on_peer_finished()
        elif isinstance(ev, Reset):
            handler.on_reset(ev.reason)
        elif isinstance(ev, Closed):
            self.handlers.pop(ev.conn_id, None)
            handler.on_closed()

    def _on_timer(self) -> None:
        self.stack.handle_timer(self.loop.now())
        self.pump()
