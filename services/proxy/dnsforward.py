"""`DnsForwarder`: names outside the tailnet, asked of the netmap's resolvers through the tunnel.

Which resolvers: dnsresolvers.py (`resolvers_for`: the split-DNS route for the name, else
``DNSConfig.Resolvers``, else ``FallbackResolvers``; at most three).

How: one DNS-over-TCP exchange (RFC 7766: a 2-byte length, then the message) per lookup
and resolver, on our own userspace TCP (`TcpEngine.connect`, from our tailnet address of
the resolver's family), so the packets go wherever the route table sends them: a subnet
router or the exit node. The resolver gets a fresh query made from the question (random
ID, EDNS 0, the client's RD, CD and DO bits); its reply counts if it answers that query
(`Message.is_response`). A resolver that resets, closes, is unroutable or silent for its
share of `TIMEOUT` gives way to the next; when none is left (or `TIMEOUT` passed) the
lookup fails. Lookups of the same question in flight are one lookup (a client retrying
does not open another connection); at most `MAX_PENDING` lookups and `MAX_WAITERS`
callers each, beyond which a caller fails at once.

API (every callback runs later from the loop, never inside the call):

    query(msg, cb)          msg's question -> cb(the resolver's reply Message, or None)
    resolve(name, qtype, cb)  the same from a name and type ("A", "AAAA", ...)
    forward(wire, cb)       a client's query bytes -> cb(reply bytes with its ID and
                            question: the answer, or SERVFAIL; None if not a query)
    addresses(msg)          the A / AAAA addresses of a reply's answer section

When the context's ``dns_forward`` is off (``enabled``) every call fails (None / SERVFAIL),
except `resolve` with ``for_proxy=True``: the SOCKS5/HTTP fronts resolve names outside the
tailnet through the tunnel also when only an exit node is in use, as tailscaled resolves
them through its exit node.
Counters: ``dns_upstream_<ok|timeout|reset|refused|no_route|...>`` per resolver tried,
``dns_forward_overload``. Owned by the proxy's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.proto.tailcfg import DNSConfig
from sunbeam.shared.proto.tcp import NoFreePort
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.loop import ServiceLoop

from . import dnsanswer
from .dnsresolvers import addresses, resolvers_for

if TYPE_CHECKING:
    from .tcpengine import TcpEngine

__all__ = ["TIMEOUT", "DnsForwarder", "addresses", "resolvers_for"]

TIMEOUT = 6.0
"""Seconds a lookup may take, shared among its resolvers. A first SYN toward a peer may
wait on DERP (our stack retransmits it after 1 and 3 s); stub resolvers give up after
5 s and ask again, which joins the lookup in flight."""
MAX_PENDING = 128
MAX_WAITERS = 64
LINGER = 5.0
"""After the reply, our FIN; a resolver that has not closed by then gets a RST."""

Callback = Callable[[dns.message.Message | None], None]


class DnsForwarder:
    def __init__(self, loop: ServiceLoop, counters: Counters, engine: TcpEngine,
                 source_for: Callable[[str], str | None], context: Any) -> None:
        self.loop = loop
        self.counters = counters
        self.engine = engine
        self.source_for = source_for
        self.context = context
        """The service's `Context`; read when asked (``dns_forward``), not at construction."""
        self.config: DNSConfig | None = None
        self.pending: dict[tuple[Any, ...], _Lookup] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.context.dns_forward)

    def set_netmap(self, netmap: Netmap) -> None:
        self.config = netmap.dns

    # -- the API -------------------------------------------------------------------------------

    def query(self, msg: dns.message.Message, callback: Callback, *, for_proxy: bool = False) -> None:
        if not (self.enabled or for_proxy) or len(msg.question) != 1:
            return self._fail_soon(callback, None)
        q = msg.question[0]
        do = bool(msg.ednsflags & dns.flags.DO) if msg.edns >= 0 else False
        key = (q.name.canonicalize(), q.rdtype, q.rdclass, msg.flags & (dns.flags.RD | dns.flags.CD), do)
        lookup = self.pending.get(key)
        if lookup is not None:
            if len(lookup.callbacks) >= MAX_WAITERS:
                return self._fail_soon(callback, "dns_forward_overload")
            lookup.callbacks.append(callback)
            return
        if len(self.pending) >= MAX_PENDING:
            return self._fail_soon(callback, "dns_forward_overload")
        servers = resolvers_for(self.config, q.name)
        if not servers:
            return self._fail_soon(callback, "dns_upstream_no_resolvers")
        upstream = dns.message.make_query(q.name, q.rdtype, q.rdclass, use_edns=0, want_dnssec=do,
                                          payload=dnsanswer.EDNS_PAYLOAD,
                                          flags=msg.flags & (dns.flags.RD | dns.flags.CD))
        self.pending[key] = lookup = _Lookup(self, key, upstream, servers, callback)
        lookup.next_server()

    def resolve(self, name: str, qtype: str | int, callback: Callback, *, for_proxy: bool = False) -> None:
        try:
            rdtype = dns.rdatatype.RdataType.make(qtype) if isinstance(qtype, int) else qtype
            msg = dns.message.make_query(name, rdtype)
        except (dns.exception.DNSException, ValueError):
            return self._fail_soon(callback, None)
        self.query(msg, callback, for_proxy=for_proxy)

    def forward(self, wire: bytes, callback: Callable[[bytes | None], None]) -> None:
        try:
            msg = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - untrusted bytes
            msg = None
        if msg is None or msg.flags & dns.flags.QR or msg.opcode() != dns.opcode.QUERY or len(msg.question) != 1:
            self.loop.call_later(0, lambda: callback(None))
            return
        self.query(msg, lambda reply: callback(dnsanswer.relay(msg, reply, udp=False).wire))

    def _fail_soon(self, callback: Callback, counter: str | None) -> None:
        if counter:
            self.counters.incr(counter)
        self.loop.call_later(0, lambda: callback(None))


class _Lookup:
    """One question in flight: its resolvers tried in turn, its callers."""

    def __init__(self, fwd: DnsForwarder, key: tuple[Any, ...], query: dns.message.Message,
                 servers: list[tuple[str, int]], callback: Callback) -> None:
        self.fwd = fwd
        self.key = key
        self.query = query
        self.wire = query.to_wire(prepend_length=True)
        self.servers = list(servers)
        self.callbacks = [callback]
        self.attempt: _Attempt | None = None
        self.deadline = fwd.loop.now() + TIMEOUT
        self.timer = fwd.loop.call_later(TIMEOUT, self._timeout)
        self.done = False

    def next_server(self) -> None:
        loop = self.fwd.loop
        while self.servers and not self.done:
            server = self.servers.pop(0)
            share = max(0.0, self.deadline - loop.now()) / (len(self.servers) + 1)
            self.attempt = _Attempt(self, server)
            if self.attempt.start(share):
                return
        if not self.done:
            self.finish(None)

    def attempt_failed(self, reason: str) -> None:
        self.fwd.counters.incr(f"dns_upstream_{reason}")
        self.attempt = None
        self.fwd.loop.call_later(0, self.next_server)  # not from inside the engine's dispatch

    def _timeout(self) -> None:
        if self.attempt is not None:
            self.attempt.give_up("timeout")
        self.finish(None)

    def finish(self, reply: dns.message.Message | None) -> None:
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        self.fwd.pending.pop(self.key, None)
        callbacks = self.callbacks
        self.fwd.loop.call_later(0, lambda: [callback(reply) for callback in callbacks])


class _Attempt:
    """One TCP exchange with one resolver (the engine's handler for that connection)."""

    def __init__(self, lookup: _Lookup, server: tuple[str, int]) -> None:
        self.lookup = lookup
        self.engine = lookup.fwd.engine
        self.server = server
        self.conn_id: int | None = None
        self.out = lookup.wire
        self.buf = b""
        self.over = False
        self.timer: Any = None

    def start(self, timeout: float) -> bool:
        """Open the connection; False (counted) when it cannot even start."""
        fwd, ip = self.lookup.fwd, self.server[0]
        src = fwd.source_for(ip)
        reason = None
        if self.engine.plane.routes.lookup(ip) is None:
            reason = "no_route"
        elif src is None:
            reason = "no_source_address"
        else:
            try:
                self.conn_id = self.engine.connect(src, self.server, self)
            except NoFreePort:
                reason = "no_free_port"
            except ValueError:  # src is no longer ours (a netmap moved our address)
                reason = "no_source_address"
        if reason is not None:
            self.over = True
            fwd.counters.incr(f"dns_upstream_{reason}")
            return False
        self.timer = fwd.loop.call_later(timeout, lambda: self.give_up("timeout", next_server=True))
        return True

    def give_up(self, reason: str, next_server: bool = False) -> None:
        if self.over:
            return
        self._end()
        if self.conn_id is not None:
            self.engine.stack.abort(self.conn_id, self.lookup.fwd.loop.now())
        if next_server:
            self.lookup.attempt_failed(reason)
        else:
            self.lookup.fwd.counters.incr(f"dns_upstream_{reason}")

    def _end(self) -> None:
        self.over = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- ConnHandler -------------------------------------------------------------------------

    def on_connected(self) -> None:
        self.on_writable()

    def on_writable(self) -> None:
        if self.out and self.conn_id is not None and not self.over:
            n = self.engine.stack.send(self.conn_id, self.out, self.lookup.fwd.loop.now())
            self.out = self.out[n:]

    def on_readable(self) -> None:
        assert self.conn_id is not None
        data = self.engine.stack.read(self.conn_id, 1 << 17)
        if self.over or not data:
            return
        self.buf += data
        if len(self.buf) < 2 or len(self.buf) < 2 + int.from_bytes(self.buf[:2], "big"):
            return
        size = int.from_bytes(self.buf[:2], "big")
        try:
            reply = dns.message.from_wire(self.buf[2:2 + size])
        except Exception:  # noqa: BLE001 - the resolver's bytes are untrusted too
            reply = None
        if reply is None or not self.lookup.query.is_response(reply):
            return self.give_up("bad_reply", next_server=True)
        self._end()
        self.lookup.fwd.counters.incr("dns_upstream_ok")
        now = self.lookup.fwd.loop.now()
        self.engine.stack.shutdown(self.conn_id, now)
        self.timer = self.lookup.fwd.loop.call_later(LINGER, self._linger_over)
        self.lookup.finish(reply)

    def _linger_over(self) -> None:
        self.timer = None
        if self.conn_id is not None:
            self.engine.stack.abort(self.conn_id, self.lookup.fwd.loop.now())

    def on_peer_finished(self) -> None:
        self._failed("eof")

    def on_reset(self, reason: str) -> None:
        self._failed("refused" if reason == "refused" else "reset")

    def on_closed(self) -> None:
        if self.over and self.timer is not None:  # lingering after the reply
            self.timer.cancel()
            self.timer = None
        self._failed("closed")

    def _failed(self, reason: str) -> None:
        if not self.over:
            self._end()
            self.lookup.attempt_failed(reason)
