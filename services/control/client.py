"""The control service's shell around `ControlConnection`: sockets, timers, reconnects.

One connection at a time. Per connection: fetch the server's Noise key (``GET /key?v=``,
cached), open TCP (TLS for https), upgrade to TS2021, then the calls in `calls.py`:
register (registrar.py: resume, auth key or interactive login; logout), lite update, map
stream. Map frames feed the `NetmapBuilder`; every change is published (`NetmapPublisher`).

Running once peers can reach us: the map's self node (the server's view of us) carries
our home DERP region, so the server has told the peers too (before that, a peer's
WireGuard finds "no UDP or DERP addr" for us and retries only after 5 s); a server that
never shows it gets ``ANNOUNCE_TIMEOUT``. The home region is remembered across restarts
(`lastderp`) so a restart does not open that gap again.

Any failure closes the connection and retries after a `ReconnectBackoff`: within
``UNREACHABLE_CAP`` while nothing answers (refused, no route, connect timed out, closed
before a byte came back, or a reverse proxy's 502/503/504 to the upgrade: cheap to retry,
and the user waits for the first attempt after the server is back), exponentially up to
``RETRY_CAP`` when the server answered and failed. A
map arriving resets both. The last netmap stays published meanwhile. Failures the user must
fix (rejected auth key, capability version refused, a server
certificate that does not verify against the system store plus ``ca_file``) park the
service in Error with the reason, and it does not retry on its own. A reason is one line of
at most ``MAX_REASON`` printable characters (`httpanswer.printable`), whatever the server
put in the text it quotes: ``sunbeam-ctl`` prints it to a terminal.

Nothing here blocks the loop (`status` is answered and restarted services get their netmap
while the server hangs): the first ``/key`` fetch (`keyfetch.KeyFetch`; later reconnects
reuse the key) and the TS2021 connection are opened by `Dialer` (the name resolved on a
helper thread, the connect and the TLS handshake waited for by the poller,
``CONNECT_TIMEOUT`` each), and what the socket cannot take at once waits in ``_out`` until
it is writable.

Owned by the control service's loop thread (everything here).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from sunbeam.shared.messages.account import AccountReply, AccountRequest
from sunbeam.shared.netmap import NetmapBuilder
from sunbeam.shared.proto.controlbase import Initiator
from sunbeam.shared.proto.httpanswer import describe_answer, printable
from sunbeam.shared.proto.mapframes import FrameError, MapFrameDecoder
from sunbeam.shared.proto.tailcfg import BadControlMessage, decode_map_response
from sunbeam.shared.proto.ts2021 import (
    Connected,
    ConnectionClosed,
    ControlConnection,
    ControlProtocolError,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
)
from sunbeam.shared.runtime.backoff import ReconnectBackoff
from sunbeam.shared.runtime.dial import Dialer, send_available
from sunbeam.shared.runtime.log import RateLimitedLog
from sunbeam.shared.runtime.service import Service
from sunbeam.shared.runtime.tlsctx import (
    client_context,
    is_cert_error,
    is_tls_socket,
    untrusted_reason,
    would_block,
)

from . import calls, lastderp
from .keyfetch import KeyFetch
from .publication import Publication
from .registrar import Registrar
from .serverkey import ServerKeyError
from .state import State

if TYPE_CHECKING:
    import ssl  # only for annotations: an http:// control URL never loads ssl (tlsctx)

IO_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0  # the kernel resends a SYN after 1 s and 3 s; then a new attempt
UNREACHABLE_CAP = 2.0  # retry delay (1-2 s with jitter) while the server does not answer at all
RETRY_CAP = 60.0  # retry delay cap after the server answered and failed
GATEWAY_DOWN = (502, 503, 504)
"""Upgrade statuses from a reverse proxy whose control server is not there: retried like
a server that does not answer."""
HANDSHAKE_TIMEOUT = 20.0
STREAM_IDLE_TIMEOUT = 150.0  # Headscale sends a keepalive every ~50-60 s
ANNOUNCE_TIMEOUT = 5.0  # Headscale batches changes for ~1 s before telling nodes
RECV_SIZE = 1 << 18
MAX_REASON = 300  # characters of a Reconnecting/Error reason


def _one_line(reason: str) -> str:
    text = printable(reason)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


class _Call:
    """One request stream: collects status and body, calls ``done(status, body)`` at end."""

    def __init__(self, done: Callable[[int, bytes], None], limit: int = 1 << 20) -> None:
        self.done, self.limit = done, limit
        self.status = 0
        self.body = bytearray()

    def on_data(self, data: bytes) -> None:
        if len(self.body) < self.limit:
            self.body += data[: self.limit - len(self.body)]

    def on_end(self) -> None:
        self.done(self.status, bytes(self.body))


class _MapStream:
    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.status = 0
        self.decoder = MapFrameDecoder()
        self.error_body = bytearray()

    def on_data(self, data: bytes) -> None:
        if self.status != 200:
            self.error_body += data[: 2048 - len(self.error_body)]
            return
        try:
            bodies = self.decoder.feed(data)
        except FrameError as exc:
            self.client.drop_connection(f"map stream framing broken: {exc}", counter="map_frame_fatal")
            return
        for drop in self.decoder.drops:
            self.client.counters.incr("map_frame_corrupt")
            self.client.noisy.warning("corrupt", "map_frame_corrupt", reason=drop.reason, size=drop.size)
        for body in bodies:
            self.client.on_map_body(body)

    def on_end(self) -> None:
        if self.status != 200:
            text = self.error_body.decode(errors="replace").strip()
            self.client.on_map_refused(self.status, text)
        else:
            self.client.drop_connection("server ended the map stream")


class ControlClient:
    def __init__(self, svc: Service, me: calls.Identity, publication: Publication) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.log = svc.log
        self.noisy = RateLimitedLog(svc.log, max_lines=5, interval=60)
        self.counters = svc.counters
        self.ctx = svc.context
        self.me = me
        self.pub = publication
        url = urlsplit(self.ctx.control_url)
        self.url = url
        # https: the system store plus ca_file. Only then: loading the system store takes
        # ~35 ms of CPU at start, on connect's critical path (the config checked ca_file)
        self.tls = client_context(self.ctx.ca_file) if url.scheme == "https" else None
        self.host = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.server_key: bytes | None = None
        self.backoff = ReconnectBackoff(base=1.0, cap=RETRY_CAP, unreachable_cap=UNREACHABLE_CAP)
        self.answered = False  # the server sent something on this attempt
        self.sock: socket.socket | None = None
        self._dialing: Dialer | KeyFetch | None = None  # a connection being opened (never blocking the loop)
        self._out = bytearray()  # bytes for the server that its socket could not take yet
        self.conn: ControlConnection | None = None
        self.mapping = False  # this connection is registered and has opened its map stream
        self.streams: dict[int, Any] = {}
        self.builder = NetmapBuilder()
        self._idle_timer: Any = None
        self._announce_timer: Any = None
        self.registrar = Registrar(self)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.pub.set_state(State.STARTING)
        self.loop.call_later(0, self.connect)

    def connect(self) -> None:
        if self.loop.shutdown.is_set or self.sock is not None or self._dialing is not None:
            return
        if self.registrar.waiting_for_login:
            return self.registrar.wait_for_login(self.registrar.flow.why)
        self.counters.incr("connect_attempts")
        self.answered = False
        if self.server_key is None:  # the first attempt: the server's Noise key (later ones reuse it)
            self._dialing = KeyFetch(self.loop, self.ctx.control_url, self.me.capability_version, self.tls,
                                     connect_timeout=CONNECT_TIMEOUT, timeout=IO_TIMEOUT,
                                     on_key=self._on_server_key, on_error=self._on_key_error)
            return self._dialing.start()
        self._dial()

    def _on_server_key(self, key: bytes) -> None:
        self._dialing = None
        self.server_key = key
        self._server_answered()
        self._dial()

    def _on_key_error(self, exc: Exception, answered: bool) -> None:
        self._dialing = None
        if answered:
            self._server_answered()
        if isinstance(exc, ServerKeyError):
            return self.fail_permanently(str(exc)) if exc.permanent else self.retry_later(str(exc))
        if is_cert_error(exc):  # the user must trust the CA (ca_file) or fix the URL
            return self.fail_permanently(untrusted_reason(f"{self.host}:{self.port}", exc))
        self.retry_later(self._unreachable(getattr(exc, "strerror", None) or str(exc)))

    def _unreachable(self, why: str) -> str:
        return f"control server {self.host}:{self.port} unreachable: {why}"

    def _dial(self) -> None:
        """The TS2021 connection: TCP (and TLS for https) without blocking the loop."""
        self._dialing = Dialer(self.loop, self.host, self.port, tls=self.tls,
                             connect_timeout=CONNECT_TIMEOUT, on_done=self._on_dialed, on_error=self._on_dial_error)
        self._dialing.start()

    def _on_dial_error(self, reason: str, answered: bool,
                       cert_error: ssl.SSLCertVerificationError | None = None) -> None:
        self._dialing = None
        if "timed out" in reason:
            self.counters.incr("connect_timeout")
        if cert_error is not None:
            return self.fail_permanently(untrusted_reason(f"{self.host}:{self.port}", cert_error))
        if answered:
            self._server_answered()  # a TLS alert: the server is there
            return self.retry_later(reason)
        self.retry_later(self._unreachable(reason))

    def _on_dialed(self, sock: socket.socket) -> None:
        self._dialing = None
        if is_tls_socket(sock):
            self._server_answered()
        self.sock = sock
        self._out = bytearray()
        assert self.server_key is not None
        initiator = Initiator(machine_private=self.me.keys.machine.private_bytes(), server_public=self.server_key,
                              version=self.me.capability_version, ephemeral_private=os.urandom(32))
        self.conn = ControlConnection(host=self.url.netloc, initiator=initiator)
        self.loop.on_readable(sock, self._on_readable)
        self.pub.set_state(State.REGISTERING)
        self.arm_idle(HANDSHAKE_TIMEOUT, "no answer to the TS2021 handshake")
        self.flush()

    def _server_answered(self) -> None:
        if not self.answered:
            self.answered = True
            self.backoff.answered()

    def close_connection(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.loop.remove_writer(self.sock)
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.conn = None, None
        self.mapping = False
        self._out = bytearray()
        if self._dialing is not None:
            self._dialing.cancel()
            self._dialing = None
        self.streams.clear()
        self._cancel_idle()
        self._cancel_announce()
        self.registrar.connection_closed()

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def drop_connection(self, reason: str, *, counter: str = "connection_dropped") -> None:
        self.counters.incr(counter)
        self.close_connection()
        self.retry_later(reason)

    def retry_later(self, reason: str) -> None:
        reason = _one_line(reason)
        delay = self.backoff.next_delay(answered=self.answered)
        self.noisy.warning("reconnect", "control_reconnect", reason=reason, answered=self.answered,
                           retry_in=round(delay, 2))
        self.pub.set_state(State.RECONNECTING, reason)
        self.loop.call_later(delay, self.connect)

    def fail_permanently(self, reason: str) -> None:
        reason = _one_line(reason)
        self.close_connection()
        self.log.error("control_error", reason=reason)
        self.pub.set_state(State.ERROR, reason)

    def arm_idle(self, timeout: float, reason: str) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(timeout, lambda: self.drop_connection(reason, counter="idle_timeout"))

    # -- I/O ----------------------------------------------------------------------------

    def flush(self) -> None:
        if self.sock is None or self.conn is None:
            return
        self._out += self.conn.data_to_send()
        self._write_out()

    def _write_out(self, _source: Any = None) -> None:
        """As much of ``_out`` as the socket takes now; the rest when it is writable."""
        sock = self.sock
        if sock is None:
            return
        try:
            send_available(sock, self._out)
        except OSError as exc:
            return self.drop_connection(f"send failed: {exc}")
        if self._out:
            self.loop.on_writable(sock, self._write_out)
        else:
            self.loop.remove_writer(sock)

    def _on_readable(self, _source: Any) -> None:
        sock, conn = self.sock, self.conn
        if sock is None or conn is None:
            return
        try:
            data = sock.recv(RECV_SIZE)
            while is_tls_socket(sock) and sock.pending():
                data += sock.recv(RECV_SIZE)
        except would_block(want_write=False):  # SSLWantWriteError: an error below, as it always was
            return
        except OSError as exc:
            return self.drop_connection(f"connection error: {exc}")
        if data:
            self._server_answered()
        try:
            events = conn.receive_data(data)
        except ControlProtocolError as exc:
            if exc.status in GATEWAY_DOWN:
                self.answered = False  # a reverse proxy whose server is down: retry soon, as for no answer
            return self.drop_connection(str(exc), counter="protocol_error")
        for ev in events:
            if self.conn is not conn:
                return  # a handler dropped the connection
            try:
                self._on_event(ev)
            except ControlProtocolError as exc:  # a request the server's own frames refused
                return self.drop_connection(str(exc), counter="protocol_error")
        self.flush()

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Connected):
            self.log.info("ts2021_connected", early_payload=bool(ev.early_payload))
            self.registrar.send_register()
        elif isinstance(ev, ResponseStarted):
            stream = self.streams.get(ev.stream_id)
            if stream is not None:
                stream.status = ev.status
        elif isinstance(ev, ResponseData):
            stream = self.streams.get(ev.stream_id)
            if stream is not None:
                stream.on_data(ev.data)
        elif isinstance(ev, ResponseEnded):
            stream = self.streams.pop(ev.stream_id, None)
            if stream is not None:
                stream.on_end()
        elif isinstance(ev, StreamReset):
            if self.streams.pop(ev.stream_id, None) is not None:
                self.drop_connection(f"server reset a request stream (HTTP/2 error {ev.error_code})")
        elif isinstance(ev, ConnectionClosed):
            self.drop_connection(ev.reason)

    def _post(self, path: str, body: bytes, handler: Any) -> None:
        assert self.conn is not None
        sid = self.conn.post(path, body, headers=(("ts-lb", self.me.keys.node_public_text),))
        self.streams[sid] = handler

    def call(self, path: str, body: bytes, done: Callable[[int, bytes], None]) -> None:
        """POST ``body``; ``done(status, body)`` when the answer ended."""
        self._post(path, body, _Call(done))

    def on_account(self, req: AccountRequest, respond: Callable[[AccountReply], None]) -> None:
        """A `LoginRequest` / `LogoutRequest` from ``sunbeam-ctl`` (account.py)."""
        self.registrar.on_account(req, respond)
        self.flush()

    # -- the calls ----------------------------------------------------------------------

    def start_map(self) -> None:
        """Registered: tell the server our keys and endpoints, open the map stream."""
        self.mapping = True
        self.send_lite_update()
        self._post(calls.MAP_PATH, calls.map_stream_request(self.me), _MapStream(self))
        self.arm_idle(STREAM_IDLE_TIMEOUT, "map stream silent for too long")

    def send_lite_update(self) -> None:
        """Tell the server our DiscoKey, endpoints and PreferredDERP without a new stream.
        Only once this connection is registered and mapping: before that (no connection, the
        TS2021 upgrade or handshake under way, a login pending) `start_map` sends the latest."""
        if self.conn is None or not self.mapping:
            return
        self.call(calls.MAP_PATH, calls.lite_update_request(self.me), self._on_lite_update)
        self.flush()

    def _on_lite_update(self, status: int, body: bytes) -> None:
        if status != 200:
            self.noisy.warning("lite", "lite_update_failed", status=status, body=body[:200].decode(errors="replace"))
            self.counters.incr("lite_update_failed")
        else:
            self.counters.incr("lite_updates")

    def on_map_refused(self, status: int, text: str) -> None:
        if status == 400 and "version" in text.lower():
            hint = f"the server refuses capability version {self.me.capability_version}"
            return self.fail_permanently(f"map request: {describe_answer(status, body=text, hint=hint)}")
        self.drop_connection(f"map request refused: {describe_answer(status, body=text)}")

    def on_map_body(self, body: bytes) -> None:
        if self.conn is None:
            return  # an earlier frame of this read ended the connection (our key expired)
        self.arm_idle(STREAM_IDLE_TIMEOUT, "map stream silent for too long")
        try:
            resp = decode_map_response(body)
        except BadControlMessage as exc:
            self.counters.incr("map_response_malformed")
            self.noisy.warning("malformed", "map_response_malformed", error=str(exc)[:200])
            return
        self.counters.incr("map_responses")
        self.backoff.reset()  # the server works for us again
        change = self.builder.apply(resp)
        if change is not None:
            self.pub.publish_change(change, self.builder)
            self._maybe_choose_home_derp()
            if change.self_node is not None and self.registrar.on_own_node(change.self_node):
                return  # our key expired: the connection is closed
        # checked on every response, changed or not: after a reconnect the first one often
        # changes nothing we had
        if self.pub.state is not State.RUNNING:
            self._maybe_running()

    def _maybe_running(self) -> None:
        node = self.builder.snapshot().self_node
        if node is None:
            return
        if self.me.preferred_derp and node.home_derp != self.me.preferred_derp:
            if self._announce_timer is None:
                self.log.info("announce_wait", region=self.me.preferred_derp, server_has=node.home_derp)
                self.pub.set_state(State.REGISTERING, "waiting for the server to show peers our home DERP region")
                self._announce_timer = self.loop.call_later(ANNOUNCE_TIMEOUT, self._announce_timed_out)
            return
        self._running()

    def _announce_timed_out(self) -> None:
        self._announce_timer = None
        if self.conn is None or self.pub.state is State.RUNNING:
            return
        self.counters.incr("announce_unconfirmed")
        self.log.warning("announce_unconfirmed", region=self.me.preferred_derp, waited=ANNOUNCE_TIMEOUT)
        self._running()

    def _running(self) -> None:
        self._cancel_announce()
        self.pub.set_state(State.RUNNING)

    def _cancel_announce(self) -> None:
        if self._announce_timer is not None:
            self._announce_timer.cancel()
            self._announce_timer = None

    def _maybe_choose_home_derp(self) -> None:
        """Until the DERP service reports a measured home, use the map's lowest region."""
        derp_map = self.builder.snapshot().derp_map
        regions = sorted(r for r, region in (derp_map.regions or {}).items() if region) if derp_map else []
        if regions and self.me.preferred_derp not in regions:
            self.set_preferred_derp(regions[0])

    def set_preferred_derp(self, region: int) -> None:
        self.me = msgspec.structs.replace(self.me, preferred_derp=region)
        self.pub.set_home_derp(region)
        self.log.info("preferred_derp", region=region)
        try:
            lastderp.save(self.ctx.state_dir, self.ctx.control_url, region)
        except OSError as exc:
            self.noisy.warning("lastderp", "home_derp_not_saved", error=str(exc))
        self.send_lite_update()

    def set_endpoints(self, endpoints: tuple[str, ...]) -> None:
        """Our UDP endpoints (from the udp service) changed: tell the server."""
        if endpoints == self.me.endpoints:
            return
        self.me = msgspec.structs.replace(self.me, endpoints=endpoints)
        self.log.info("endpoints", endpoints=list(endpoints))
        self.send_lite_update()

    def stop(self) -> None:
        """After the loop ended (its sockets are closed): close the TCP connection."""
        self.close_connection()
