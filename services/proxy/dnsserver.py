"""`DnsServer`: the sockets of one ``kind = "dns"`` listener, UDP and TCP on one address.

The shell around dnsanswer.py (what to answer) and dnsforward.py (names it forwards):
it reads queries, hands each to `answer` with the zone of the current netmap
(``LocalSide.zone``), counts the outcome, and sends the reply; a forwarded query is
answered when `LocalSide.dns` calls back (`relay`).

UDP: up to `UDP_BATCH` datagrams per readable event; a reply the socket cannot take at
once is dropped (``dns_udp_send_dropped``): the client asks again.

TCP (RFC 7766): each message is a 2-byte length and the query; a connection may carry
many queries, answered as they complete (a forwarded one may come after a later local
one: each reply carries its query's ID). Limits, each counted:

    MAX_TCP_CLIENTS  connections at once; one more is closed at accept   dns_drop_tcp_too_many
    MAX_QUERY        a length of 0 or above it closes the connection     dns_drop_tcp_length
    IDLE_TIMEOUT     no query and nothing owed for that long: closed     dns_tcp_idle_closed
    OUT_CAP          replies not yet taken by the client; above it we
                     stop reading its queries until it reads
    MAX_IN_FLIGHT    forwarded queries in flight per connection; above
                     it, reading pauses until one is answered

Owned by the proxy's loop thread.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sunbeam.shared.config import Listener
from sunbeam.shared.runtime.portcheck import accept_ready, open_dns

from .dnsanswer import MAX_QUERY, answer, relay

if TYPE_CHECKING:
    from .local import LocalSide

__all__ = ["IDLE_TIMEOUT", "MAX_TCP_CLIENTS", "DnsServer"]

UDP_BATCH = 256
MAX_TCP_CLIENTS = 64
IDLE_TIMEOUT = 10.0
OUT_CAP = 64 << 10
MAX_IN_FLIGHT = 16
READ_CHUNK = 16 << 10


class DnsServer:
    def __init__(self, side: LocalSide, listener: Listener) -> None:
        assert listener.listen is not None
        self.side = side
        self.loop = side.loop
        self.counters = side.counters
        self.tcp, self.udp = open_dns(listener.listen)
        self.clients: set[_TcpClient] = set()
        self.loop.on_readable(self.udp, self._on_udp)
        self.loop.on_readable(self.tcp, self._on_accept)
        self.port = self.udp.getsockname()[1]
        side.engine.gauges["dns_tcp_clients"] = lambda: len(self.clients)
        side.log.info("listening", kind="dns", addr=str(listener.listen), port=self.port, proto="udp+tcp")

    @property
    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return self.tcp, self.udp

    def handle(self, wire: bytes, send: Callable[[bytes], None], *, udp: bool,
               done: Callable[[], None] = lambda: None) -> bool:
        """Answer one query: ``send`` gets the reply (now, or when a forward completes,
        then ``done()`` is called too). True when a forward is in flight."""
        zone, forwarder = self.side.zone, self.side.dns
        assert zone is not None and forwarder is not None  # both made with a dns listener
        out = answer(wire, zone, udp=udp)
        self.counters.incr(out.counter)
        if out.wire is not None:
            send(out.wire)
        query = out.forward
        if query is None:
            return False

        def forwarded(reply: Any) -> None:
            result = relay(query, reply, udp=udp)
            self.counters.incr(result.counter)
            if result.wire is not None:
                send(result.wire)
            done()

        forwarder.query(query, forwarded)
        return True

    # -- UDP ---------------------------------------------------------------------------------

    def _on_udp(self, sock: socket.socket) -> None:
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.incr("dns_udp_recv_error")
                return
            self.counters.incr("dns_udp_queries")
            self.handle(data, functools.partial(self._send_udp, addr=addr), udp=True)

    def _send_udp(self, wire: bytes, addr: Any) -> None:
        try:
            self.udp.sendto(wire, addr)
        except OSError:  # full, or the client is gone: it will ask again
            self.counters.incr("dns_udp_send_dropped")

    # -- TCP ---------------------------------------------------------------------------------

    def _on_accept(self, lsock: socket.socket) -> None:
        for sock in accept_ready(lsock, self.counters):
            if len(self.clients) >= MAX_TCP_CLIENTS:
                self.counters.incr("dns_drop_tcp_too_many")
                sock.close()
                continue
            sock.setblocking(False)
            self.counters.incr("accepted_dns")
            client = _TcpClient(self, sock)
            self.clients.add(client)
            client.start()


class _TcpClient:
    """One TCP connection to the dns listener."""

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.buf = bytearray()
        self.out = bytearray()
        self.in_flight = 0
        self.eof = False
        self.parsing = False
        self.closed = False
        self.reading = False
        self.last_active = self.loop.now()
        self.timer: Any = None

    def start(self) -> None:
        self._read(True)
        self._arm_idle(IDLE_TIMEOUT)

    def _read(self, on: bool) -> None:
        on = on and not self.eof and not self.closed
        if on and not self.reading:
            self.loop.on_readable(self.sock, self._on_readable)
        elif not on and self.reading:
            self.loop.remove_reader(self.sock)
        self.reading = on

    def _arm_idle(self, delay: float) -> None:
        self.timer = self.loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self.timer = None
        if self.closed:
            return
        left = self.last_active + IDLE_TIMEOUT - self.loop.now()
        if left > 0 or self.in_flight:
            return self._arm_idle(max(left, 0.5))
        self.server.counters.incr("dns_tcp_idle_closed")
        self.close()

    def _on_readable(self, _s: socket.socket) -> None:
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close()
        self.last_active = self.loop.now()
        if not data:
            self.eof = True
            self._read(False)
            self._parse()
            return self._maybe_finish()
        self.buf += data
        self._parse()

    def _room(self) -> bool:
        return len(self.out) <= OUT_CAP and self.in_flight < MAX_IN_FLIGHT

    def _parse(self) -> None:
        """Answer the complete queries in the buffer while the caps allow; what is left waits
        for a forward to finish or the client to read (both call here again)."""
        if self.parsing:  # a reply sent from inside handle() lands here: the outer loop goes on
            return
        self.parsing = True
        try:
            while len(self.buf) >= 2 and not self.closed and self._room():
                size = int.from_bytes(self.buf[:2], "big")
                if size == 0 or size > MAX_QUERY:
                    self.server.counters.incr("dns_drop_tcp_length")
                    return self.close()
                if len(self.buf) < 2 + size:
                    break
                wire = bytes(self.buf[2:2 + size])
                del self.buf[:2 + size]
                self.server.counters.incr("dns_tcp_queries")
                if self.server.handle(wire, self._send, udp=False, done=self._forward_done):
                    self.in_flight += 1
        finally:
            self.parsing = False
        if not self.eof and not self.closed:
            self._read(self._room())

    def _forward_done(self) -> None:
        self.in_flight -= 1
        self._parse()
        self._maybe_finish()

    def _send(self, wire: bytes) -> None:
        if self.closed:
            return
        self.out += len(wire).to_bytes(2, "big") + wire
        self._flush()

    def _flush(self, _s: Any = None) -> None:
        if self.closed:
            return
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return self.close()
        del self.out[:n]
        if n:
            self.last_active = self.loop.now()
        if self.out:
            self.loop.on_writable(self.sock, self._flush)
        else:
            self.loop.remove_writer(self.sock)
        self._parse()
        self._maybe_finish()

    def _has_query(self) -> bool:
        return len(self.buf) >= 2 and len(self.buf) >= 2 + int.from_bytes(self.buf[:2], "big")

    def _maybe_finish(self) -> None:
        """After the client's EOF: close once every query it sent is answered and flushed (a
        partial last query is dropped)."""
        if self.eof and not self.in_flight and not self.out and not self.parsing and not self._has_query():
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self._read(False)
        self.closed = True
        self.loop.remove_writer(self.sock)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sock.close()
        self.server.clients.discard(self)
