"""One DERP region's connection: the shell around `DerpClientCore` (socket, timers, retries).

Lifecycle of an attempt (``gen`` numbers attempts; callbacks of an older one are ignored)::

    connecting   `Dialer` (shared/runtime/dial.py): the name resolved off the loop, a
                 non-blocking TCP connect, then (https control URL only) a non-blocking
                 TLS handshake, SNI = HostName, verified with the service's context
                 (system store + ``ca_file``, `sunbeam.shared.runtime.tlsctx`) unless the
                 node says InsecureForTests; at most CONNECT_TIMEOUT each
    handshake    GET /derp upgrade, ServerKey, ClientInfo, ServerInfo; at most
                 HANDSHAKE_TIMEOUT; packets queued meanwhile wait in the core
    connected    NotePreferred(true) went out right after ClientInfo if this is home
    backoff      after any failure: reconnect after `ReconnectBackoff`: within 1-2 s
                 while the server sends nothing (refused, unreachable, timed out: it is
                 down, and the DERP server embedded in Headscale comes back with it), 1 s
                 doubling to 30 s (jittered) once it answered and then failed; reset once
                 a login succeeds; a server's Restarting frame schedules the retry after
                 its ``reconnect_in`` instead

Keepalive: a Ping every PING_INTERVAL while connected (the server also sends KeepAlive
every ~60 s); nothing read for READ_TIMEOUT -> reconnect.

Writes never block the loop: the socket is non-blocking; what it does not take stays in
``out`` and is retried by a short timer. A packet that would push ``out`` plus the core's
queue past MAX_BACKLOG is dropped (counter ``derp_send_dropped_backlog``); with no
connection at all it is dropped too (``derp_send_dropped_no_conn``): WireGuard and disco
retry on their own. Name resolution (only for a node given by name, not IP) blocks.

Owned by the derp service's loop thread.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sunbeam.shared.proto.derp import (
    Closed,
    Connected,
    DerpClientCore,
    Dropped,
    Event,
    Health,
    PeerGone,
    Received,
    Restarting,
)
from sunbeam.shared.runtime.backoff import ReconnectBackoff
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.dial import Dialer, send_available
from sunbeam.shared.runtime.log import RateLimitedLog, StructLogger
from sunbeam.shared.runtime.loop import ServiceLoop
from sunbeam.shared.runtime.tlsctx import (
    insecure_context,
    is_tls_socket,
    untrusted_reason,
    would_block,
)

from .regions import Dial

if TYPE_CHECKING:
    import ssl  # only for annotations: no TLS region, no ssl loaded (tlsctx)

CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
PING_INTERVAL = 30.0
READ_TIMEOUT = 120.0
WRITE_RETRY = 0.005
MAX_BACKLOG = 1 << 20
RECV_SIZE = 1 << 16
RCVBUF = 4 << 20
RECV_BUDGET = 16  # reads per readiness, so one busy region cannot starve the others


class RegionConnection:
    def __init__(self, loop: ServiceLoop, dial: Dial, node_private: bytes, *, counters: Counters,
                 log: StructLogger, noisy: RateLimitedLog, on_packet: Callable[[int, bytes, bytes], None],
                 on_state: Callable[[RegionConnection], None], tls: ssl.SSLContext | None,
                 preferred: bool = False) -> None:
        self.loop, self.dial, self.region = loop, dial, dial.region
        self.tls = tls
        self._private = node_private
        self.counters, self.log, self.noisy = counters, log, noisy
        self.on_packet, self.on_state = on_packet, on_state
        self.preferred = preferred
        self.state = "idle"
        self.last_error: str | None = None
        self.backoff = ReconnectBackoff(base=1.0, cap=30.0)
        self.answered = False
        """The server sent a byte on the current attempt."""
        self.core: DerpClientCore | None = None
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.gen = 0
        self.last_read = 0.0
        self._timers: dict[str, Any] = {}
        self._dialer: Dialer | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def start(self) -> None:
        if self.state in ("idle", "closed"):
            self._connect()

    def close(self) -> None:
        """Stop for good (the region is no longer needed)."""
        self._teardown()
        self.state = "closed"

    def redial(self, dial: Dial) -> None:
        """The DERPMap moved this region: reconnect to the new address."""
        self.dial = dial
        self._teardown()
        self._connect()

    def set_preferred(self, preferred: bool) -> None:
        if preferred != self.preferred:
            self.preferred = preferred
            if self.core is not None and not self.core.closed:
                self.core.note_preferred(preferred)
                self.flush()

    def send(self, dst_key: bytes, packet: bytes) -> bool:
        core = self.core
        if core is None or core.closed:
            self.counters.incr("derp_send_dropped_no_conn")
            return False
        if len(self.out) + core.bytes_queued + len(packet) > MAX_BACKLOG:
            self.counters.incr("derp_send_dropped_backlog")
            return False
        before = core.dropped
        core.send_packet(dst_key, packet)
        if core.dropped != before:
            self.counters.incr("derp_send_dropped_early")
            return False
        self.counters.incr("derp_packets_sent")
        return True

    def flush(self) -> None:
        """Write what the core produced; the rest waits for a retry timer."""
        if self.core is None or self.sock is None or self.state not in ("handshake", "connected"):
            return
        self.out += self.core.data_to_send()
        try:
            send_available(self.sock, self.out)
        except OSError as exc:
            return self._fail(f"send failed: {exc}")
        if self.out and "write" not in self._timers:
            gen = self.gen
            self._timers["write"] = self.loop.call_later(WRITE_RETRY, lambda: self._write_retry(gen))

    # -- connecting ---------------------------------------------------------------------

    def _connect(self) -> None:
        self.gen += 1
        self.state = "connecting"
        self.answered = False
        self.counters.incr("derp_connect_attempts")
        d, gen = self.dial, self.gen
        self.core = DerpClientCore(self._private, nonce=os.urandom(24))
        if self.preferred:
            self.core.note_preferred(True)
        self.out = bytearray()
        tls = (insecure_context() if d.insecure else self.tls) if d.tls else None
        if d.tls and tls is None:  # our bug: the service and dial_for disagree (regions.uses_tls)
            raise RuntimeError(f"region {d.region}: a TLS dial without a TLS context")
        self._dialer = Dialer(self.loop, d.host, d.port, tls=tls, server_name=d.server_name,
                              connect_timeout=CONNECT_TIMEOUT, prepare=_tune,
                              on_done=lambda sock: self._dialed(sock, gen),
                              on_error=lambda reason, answered, cert_error=None:
                              self._dial_failed(reason, answered, cert_error, gen))
        self._dialer.start()
        self.on_state(self)

    def _dialed(self, sock: socket.socket, gen: int) -> None:
        if gen != self.gen:
            sock.close()
            return
        self._dialer = None
        self.sock = sock
        if is_tls_socket(sock) and not self.answered:  # its certificate came
            self.answered = True
            self.backoff.answered()
        self._start_derp(gen)

    def _dial_failed(self, reason: str, answered: bool, cert_error: ssl.SSLCertVerificationError | None,
                     gen: int) -> None:
        if gen != self.gen:
            return
        self._dialer = None
        if answered and not self.answered:
            self.answered = True
            self.backoff.answered()
        d = self.dial
        if cert_error is not None:
            where = f"{d.host}:{d.port}" if d.server_name == d.host else f"{d.server_name} ({d.host}:{d.port})"
            return self._fail(untrusted_reason(where, cert_error))
        if reason.startswith(("TLS", "cannot resolve")):
            return self._fail(reason)
        self._fail(f"connect to {d.host}:{d.port} failed: {reason}")

    def _start_derp(self, gen: int) -> None:
        assert self.core is not None and self.sock is not None
        self.state = "handshake"
        self.last_read = self.loop.now()
        self.out += self.core.upgrade_request(self.dial.server_name)
        self.loop.on_readable(self.sock, lambda _s: self._on_readable(gen))
        self._arm("deadline", HANDSHAKE_TIMEOUT, lambda: self._fail("no DERP login within the timeout"), gen)
        self.flush()

    # -- reading ------------------------------------------------------------------------

    def _on_readable(self, gen: int) -> None:
        for _ in range(RECV_BUDGET):
            if gen != self.gen or self.sock is None or self.core is None:
                return
            try:
                data = self.sock.recv(RECV_SIZE)
            except would_block():
                break
            except OSError as exc:
                return self._fail(f"connection error: {exc}")
            self.last_read = self.loop.now()
            if data and not self.answered:
                self.answered = True
                self.backoff.answered()
            for ev in self.core.receive_data(data):
                if gen != self.gen:
                    return
                self._on_event(ev, gen)
            if not data or gen != self.gen:
                return
        else:
            # budget used up: TLS may hold decrypted bytes the poller cannot see
            if is_tls_socket(self.sock) and self.sock.pending():
                self._arm("read", 0, lambda: self._on_readable(gen), gen)
        self.flush()

    def _on_event(self, ev: Event, gen: int) -> None:
        if isinstance(ev, Received):
            self.on_packet(self.region, ev.src_key, ev.packet)
        elif isinstance(ev, Connected):
            self._cancel("deadline")
            self.state = "connected"
            self.last_error = None
            self.backoff.reset()
            self.log.info("derp_connected", region=self.region, server_key=ev.server_key, host=self.dial.host,
                          port=self.dial.port, tls=self.dial.tls, preferred=self.preferred)
            self._arm("ping", PING_INTERVAL, lambda: self._keepalive(gen), gen)
            self.on_state(self)
        elif isinstance(ev, Closed):
            self._fail(ev.reason)
        elif isinstance(ev, Dropped):
            self.counters.incr("derp_frame_malformed")
            self.noisy.warning(f"malformed:{self.region}", "derp_frame_malformed", region=self.region,
                               frame_type=ev.frame_type, reason=ev.reason)
        elif isinstance(ev, PeerGone):
            self.counters.incr("derp_peer_gone")
        elif isinstance(ev, Health):
            self.noisy.warning(f"health:{self.region}", "derp_health", region=self.region,
                               problem=ev.problem or "healthy again")
        elif isinstance(ev, Restarting):
            self.log.info("derp_server_restarting", region=self.region, reconnect_in=ev.reconnect_in)
            self._teardown()
            self.state = "backoff"
            self.last_error = "server restarting"
            self.backoff.reset()
            self._arm("retry", max(ev.reconnect_in, 0.1), self._connect, self.gen)
            self.on_state(self)
        # Ping (answered by the core), Pong, KeepAlive, PeerPresent: nothing to do

    def _keepalive(self, gen: int) -> None:
        if gen != self.gen or self.core is None:
            return
        if self.loop.now() - self.last_read > READ_TIMEOUT:
            return self._fail(f"nothing read for {READ_TIMEOUT:.0f} s")
        self.core.ping(os.urandom(8))
        self.flush()
        self._arm("ping", PING_INTERVAL, lambda: self._keepalive(gen), gen)

    def _write_retry(self, gen: int) -> None:
        self._timers.pop("write", None)
        if gen == self.gen:
            self.flush()

    # -- failure and teardown -----------------------------------------------------------

    def _fail(self, reason: str) -> None:
        was = self.state
        self._teardown()
        self.state = "backoff"
        self.last_error = reason
        self.counters.incr("derp_connection_failed")
        delay = self.backoff.next_delay(answered=self.answered)
        self.noisy.warning(f"fail:{self.region}", "derp_reconnect", region=self.region, was=was, reason=reason,
                           retry_in=round(delay, 2))
        self._arm("retry", delay, self._connect, self.gen)
        self.on_state(self)

    def _teardown(self) -> None:
        self.gen += 1
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            try:
                self.sock.close()
            except OSError:
                pass
        if self._dialer is not None:
            self._dialer.cancel()
            self._dialer = None
        self.sock, self.core = None, None
        self.out = bytearray()

    def _arm(self, name: str, delay: float, callback: Callable[[], object], gen: int) -> None:
        self._cancel(name)

        def fire() -> None:
            if self._timers.get(name) is handle:
                del self._timers[name]
            if gen == self.gen:
                callback()

        handle = self.loop.call_later(delay, fire)
        self._timers[name] = handle

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A deep receive buffer absorbs bursts: the DERP server queues only a few dozen
    # packets per client and drops the rest while our socket is full.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
