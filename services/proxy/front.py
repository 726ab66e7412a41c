"""`Front`: one local client connection until its tailnet connection is up, then a `Splice`.

Per connection: parse the proxy request (SOCKS5, HTTP; a forward listener has none),
resolve the target from the netmap, refuse at once what cannot work (an unknown name, an
address no peer routes: nothing is sent), open a tailnet TCP connection from our address
of the same family, and answer the client when it is connected or has failed.

Failures and what the client is told (SOCKS5 reply code, HTTP status); each is counted
``connect_failed_<reason>`` and logged at debug level with the connection's 4-tuple:

    unknown_name       no peer or MagicDNS name matches (and no
                       resolver to ask: see below)                    4 host unreachable   502
    name_not_resolved  the tailnet's resolvers gave no address        4 host unreachable   502
    no_resolvers       ... or control sent no resolver for it         4 host unreachable   502
    no_peer            a tailnet address no node has                  4 host unreachable   502
    no_exit_node       outside the tailnet, no exit_node configured   3 net unreachable    502
    exit_node_unusable exit_node names no peer offering an exit       3 net unreachable    502
    routes_not_accepted  a peer's subnet route covers it, but
                       accept_routes is off                           3 net unreachable    502
    no_route           an address outside the tailnet no peer routes  3 net unreachable    502
    no_source_address  we have no tailnet address of that family      3 net unreachable    502
    no_free_port       every local port toward it is taken (`ports`)  1 general failure    503
    denied             the peer's packet filter refused (TSMP reject,
                       ICMP administratively prohibited)              2 not allowed        403
    refused            RST (nothing listens), ICMP port unreachable   5 refused            502
    host_unreachable   ICMP host unreachable                          4 host unreachable   502
    net_unreachable    ICMP network unreachable                       3 net unreachable    502
    timeout            no answer within CONNECT_TIMEOUT               6 TTL expired        504

A name that is not a tailnet name is asked of the netmap's resolvers through the tunnel
when ``dns_forward`` is on or an exit node is in use (outside.py); otherwise it is
``unknown_name`` at once.

Debug log lines per connection: ``conn_open`` (listener kind, client, target, 4-tuple),
``conn_up`` (ms to connect), ``conn_failed`` (reason, ms), and ``conn_closed`` from the
splice (bytes each way, seconds, how it ended). Owned by the proxy's loop thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sunbeam.shared.config import Listener
from sunbeam.shared.netmap.routes import in_tailnet
from sunbeam.shared.proto.tcp import NoFreePort
from sunbeam.shared.runtime.log import DEBUG

from . import httpproxy, outside, socks5
from .splice import Splice

if TYPE_CHECKING:
    from .local import LocalSide
    from .routing import RouteTable

__all__ = ["CONNECT_TIMEOUT", "FAILURES", "Front"]

CONNECT_TIMEOUT = 30.0
"""Until disco gives a direct path, a burst of SYNs rides DERP, whose server queues only a
few dozen packets per client and drops the rest: retransmitted SYNs (1, 3, 7, 15 s) must fit."""


class Failure(NamedTuple):
    socks: socks5.Reply
    http: int
    text: str


FAILURES = {
    "unknown_name": Failure(socks5.Reply.HOST_UNREACHABLE, 502, "no tailnet node has that name"),
    "name_not_resolved": Failure(socks5.Reply.HOST_UNREACHABLE, 502, "the tailnet's resolvers found no address for that name"),
    "no_resolvers": Failure(socks5.Reply.HOST_UNREACHABLE, 502, "not a tailnet name, and the tailnet has no resolver for it"),
    "no_peer": Failure(socks5.Reply.HOST_UNREACHABLE, 502, "no tailnet node has that address"),
    "no_route": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502, "no tailnet peer routes that address"),
    "no_exit_node": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502,
                            "not a tailnet address, and no exit node is set (exit_node in the config)"),
    "exit_node_unusable": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502,
                                  "the configured exit node is not usable (sunbeam-ctl exit-node list)"),
    "routes_not_accepted": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502,
                                   "a peer routes that subnet, but accept_routes is off"),
    "no_source_address": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502, "we have no tailnet address of that family"),
    "no_free_port": Failure(socks5.Reply.GENERAL_FAILURE, 503, "no free local port toward that destination"),
    "denied": Failure(socks5.Reply.NOT_ALLOWED, 403, "the tailnet policy does not allow this connection"),
    "refused": Failure(socks5.Reply.CONNECTION_REFUSED, 502, "connection refused"),
    "host_unreachable": Failure(socks5.Reply.HOST_UNREACHABLE, 502, "host unreachable"),
    "net_unreachable": Failure(socks5.Reply.NETWORK_UNREACHABLE, 502, "network unreachable"),
    "timeout": Failure(socks5.Reply.TTL_EXPIRED, 504, "no answer from the peer"),
}
_RESET_AS = {"reset": "refused", "keepalive": "timeout"}
"""Stack `Reset` reasons that are not names in FAILURES."""


def unrouted_reason(ip: str, routes: RouteTable | None = None) -> str:
    """Why no peer takes ``ip`` (see the table in the module docstring)."""
    if in_tailnet(ip):
        return "no_peer"
    if routes is None:
        return "no_route"
    if routes.unaccepted_route(ip) is not None:
        return "routes_not_accepted"
    if routes.exit.problem is not None:
        return "exit_node_unusable"
    return "no_exit_node" if routes.exit.peer is None else "no_route"


class Front:
    def __init__(self, side: LocalSide, sock: Any, listener: Listener) -> None:
        self.side = side
        self.sock = sock
        self.listener = listener
        self.kind = listener.kind
        self.parser: Any = socks5.Socks5Server() if self.kind == "socks5" else (
            httpproxy.HttpProxyServer() if self.kind == "http" else None)
        self.splice = Splice(side.loop, side.engine, sock, on_done=self._done, log=side.log)
        self.timer: Any = None
        self.early = b""
        self.forward_request = False
        self.conn_id: int | None = None
        self.target = ""
        self.started = self.side.loop.now()

    def start(self) -> None:
        if self.parser is None:  # forward
            assert self.listener.target is not None
            self._open(self.listener.target.host, self.listener.target.port)
        else:
            self.side.loop.on_readable(self.sock, self._on_request_data)

    def _on_request_data(self, _s: Any) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close()
        if not data:
            return self._close()
        for ev in self.parser.receive_data(data):
            if isinstance(ev, (socks5.ConnectRequest, httpproxy.ConnectRequest)):
                self.side.loop.remove_reader(self.sock)
                self._open(ev.host, ev.port)
            elif isinstance(ev, httpproxy.ForwardRequest):
                self.side.loop.remove_reader(self.sock)
                self.forward_request = True
                self.early = ev.head
                self._open(ev.host, ev.port)
            elif isinstance(ev, (socks5.ProtocolError, httpproxy.ProtocolError)):
                self.side.counters.incr(f"{self.kind}_{ev.reason}")
                self._flush_parser()  # the parser's refusal (SOCKS 05 FF / 07, HTTP 400 ...)
                return self._close()
        self._flush_parser()

    def _flush_parser(self) -> None:
        out = self.parser.data_to_send() if self.parser is not None else b""
        if out:
            try:
                self.sock.send(out)
            except OSError:
                pass

    def _open(self, host: str, port: int) -> None:
        side = self.side
        self.target = f"{host}:{port}"
        self.started = self.side.loop.now()
        ip = side.names.resolve(host)
        if ip is None:
            if outside.may_ask(side, host):
                return outside.ask(side, host, lambda ip, reason: self._resolved(ip, reason, port))
            return self._fail("unknown_name")
        self._connect(ip, port)

    def _resolved(self, ip: str | None, reason: str, port: int) -> None:
        if self.splice.closed:
            return
        if ip is None:
            return self._fail(reason)
        self._connect(ip, port)

    def _connect(self, ip: str, port: int) -> None:
        side = self.side
        if side.engine.plane.routes.lookup(ip) is None:
            return self._fail(unrouted_reason(ip, side.engine.plane.routes))
        src = side.source_for(ip)
        if src is None:
            return self._fail("no_source_address")
        try:
            self.conn_id = side.engine.connect(src, (ip, port), self)
        except NoFreePort:
            return self._fail("no_free_port")
        if side.log.is_enabled_for(DEBUG):
            info = side.engine.stack.info(self.conn_id)
            side.log.debug("conn_open", conn=self.conn_id, listener=self.kind, client=_peername(self.sock),
                           target=self.target, local=_hostport(info["local"]), remote=_hostport(info["remote"]))
        self.timer = side.loop.call_later(CONNECT_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if self.conn_id is not None:
            self.side.engine.stack.abort(self.conn_id, self.side.loop.now())
        self._fail("timeout")

    # engine callbacks until the splice takes over ------------------------------------------------

    def on_connected(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        assert self.conn_id is not None
        self.side.log.debug("conn_up", conn=self.conn_id, ms=round((self.side.loop.now() - self.started) * 1000, 1))
        if isinstance(self.parser, socks5.Socks5Server):
            self.parser.reply(socks5.Reply.SUCCEEDED)
            self._flush_parser()
            self.early = self.parser.leftover()
        elif isinstance(self.parser, httpproxy.HttpProxyServer):
            if not self.forward_request:
                self.parser.reply_connect(True)
                self._flush_parser()
                self.early = self.parser.leftover()
            else:
                self.early += self.parser.body_data()
                self.splice.transform = self._forward_body
        self.side.engine.handlers[self.conn_id] = self.splice
        self.splice.started = self.started
        self.splice.attach(self.conn_id, self.early)

    def _forward_body(self, data: bytes) -> bytes:
        """Local bytes of a forwarded request -> the re-encoded body for upstream."""
        for ev in self.parser.receive_data(data):
            if isinstance(ev, httpproxy.ProtocolError):  # bad chunked body, EOF mid-body
                self.side.counters.incr(f"http_{ev.reason}")
                self.splice._abort_both(ev.reason)
                return b""
        return self.parser.body_data()

    def on_reset(self, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self._fail(_RESET_AS.get(reason, reason if reason in FAILURES else "refused"))

    def on_closed(self) -> None:
        self._close()

    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def on_peer_finished(self) -> None: ...

    def _fail(self, reason: str) -> None:
        """Tell the client why its connection cannot be made, count it, log it, close."""
        if self.splice.closed:
            return
        failure = FAILURES[reason]
        self.side.counters.incr(f"connect_failed_{reason}")
        self.side.log.debug("conn_failed", conn=self.conn_id, listener=self.kind, target=self.target,
                            reason=reason, ms=round((self.side.loop.now() - self.started) * 1000, 1))
        if isinstance(self.parser, socks5.Socks5Server):
            self.parser.reply(failure.socks)
            self._flush_parser()
        elif isinstance(self.parser, httpproxy.HttpProxyServer):
            self.parser.reply_error(failure.http, failure.text)
            self._flush_parser()
        self._close()

    def _close(self) -> None:
        self.side.loop.remove_reader(self.sock)
        self.splice._close_local()

    def _done(self, _splice: Splice) -> None:
        self.side.live.discard(self)


def _peername(sock: Any) -> str:
    try:
        return _hostport(sock.getpeername()[:2])
    except OSError:
        return "?"


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
