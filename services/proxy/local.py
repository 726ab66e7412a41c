"""The proxy's local side: listeners on 127.0.0.1 and connections from tailnet peers.

Listener kinds (config ``[[contexts.X.listeners]]``):

    socks5   SOCKS5 CONNECT (IPv4, IPv6, names: peer hostnames and MagicDNS names resolve
             from the netmap)                                    -> `socks5.Socks5Server`
    http     HTTP proxy: CONNECT, and absolute-form requests      -> `httpproxy.HttpProxyServer`
    forward  every connection to one fixed ``target`` (name or IP : port)
    inbound  tailnet peers connecting to our tailnet address on ``port`` reach local
             ``target`` (as tailscaled's userspace mode does), if the netmap's packet
             filter allows it; otherwise the SYN is answered with RST

Per local connection a front-end parses the proxy request (if any), resolves the target,
opens a tailnet TCP connection from our address of the same family, answers the client
once it is connected (or with the error), and hands both ends to a `Splice`.
Owned by the proxy's loop thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import Any

from sunbeam.shared.config import Listener
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.proto.tcp import ConnectionRequest
from sunbeam.shared.runtime.service import Service

from . import httpproxy, socks5
from .filter import PacketFilter
from .names import NameTable
from .splice import Splice
from .tcpengine import TcpEngine

# Until disco gives a direct path, a burst of SYNs rides DERP, whose server queues only a few
# dozen packets per client and drops the rest: retransmitted SYNs (1, 3, 7, 15 s) must fit.
CONNECT_TIMEOUT = 30.0
MAX_PENDING_REQUEST = 64 * 1024


class LocalSide:
    def __init__(self, svc: Service, engine: TcpEngine) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.log = svc.log
        self.engine = engine
        self.counters = svc.counters
        self.names = NameTable()
        self.filter = PacketFilter(None)
        self.addresses: list[str] = []
        self.inbound: dict[int, tuple[str, int]] = {}
        self.live: set[Any] = set()
        self.listen_socks: list[socket.socket] = []
        engine.plane.on_netmap.append(self._on_netmap)
        engine.on_request = self._on_inbound_request
        for listener in svc.context.listeners:
            self._open(listener)

    def _on_netmap(self, netmap: Netmap) -> None:
        self.names = NameTable.from_netmap(netmap)
        self.filter = PacketFilter(netmap.packet_filter)
        me = netmap.self_node
        self.addresses = [a.split("/")[0] for a in me.addresses] if me else []

    # -- listeners ---------------------------------------------------------------------------

    def _open(self, listener: Listener) -> None:
        if listener.kind == "inbound":
            assert listener.port is not None and listener.target is not None
            self.inbound[listener.port] = (listener.target.host, listener.target.port)
            self.engine.stack.listen(listener.port)
            self.log.info("listening", kind="inbound", port=listener.port, target=str(listener.target))
            return
        assert listener.listen is not None
        family = socket.AF_INET6 if ":" in listener.listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.listen.host, listener.listen.port))
        sock.listen(256)
        sock.setblocking(False)
        self.listen_socks.append(sock)
        self.loop.on_readable(sock, lambda s, lst=listener: self._accept(s, lst))
        self.log.info("listening", kind=listener.kind, addr=f"{listener.listen}",
                      port=sock.getsockname()[1], target=str(listener.target) if listener.target else None)

    def _accept(self, lsock: socket.socket, listener: Listener) -> None:
        for _ in range(64):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self.counters.incr("accept_fd_exhausted")
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.counters.incr(f"accepted_{listener.kind}")
            front = Front(self, sock, listener)
            self.live.add(front)
            front.start()

    # -- outbound connections -------------------------------------------------------------------

    def source_for(self, dst_ip: str) -> str | None:
        version = ipaddress.ip_address(dst_ip).version
        return next((a for a in self.addresses if ipaddress.ip_address(a).version == version), None)

    # -- inbound connections ----------------------------------------------------------------------

    def _on_inbound_request(self, req: ConnectionRequest) -> None:
        src_ip, _src_port = req.src
        dst_ip, dst_port = req.dst
        target = self.inbound.get(dst_port)
        if target is None or not self.filter.allows(src_ip, dst_ip, dst_port):
            self.counters.incr("inbound_refused" if target else "inbound_no_listener")
            self.engine.stack.refuse(req.conn_id)
            return
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.counters.incr("inbound_target_refused")
            self.engine.stack.refuse(req.conn_id)
            return
        splice = Splice(self.loop, self.engine, sock, on_done=self.live.discard)
        self.live.add(splice)

        def connected(_s: socket.socket) -> None:
            self.loop.remove_writer(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.counters.incr("inbound_target_refused")
                self.engine.stack.refuse(req.conn_id)
                sock.close()
                self.live.discard(splice)
                return
            self.counters.incr("inbound_accepted")
            self.engine.adopt(req.conn_id, splice)
            splice.conn_id = req.conn_id

        splice.on_connected = lambda: splice.attach(req.conn_id)  # type: ignore[method-assign]
        self.loop.on_writable(sock, connected)


class Front:
    """One local client connection until its tailnet connection is up, then a `Splice`."""

    def __init__(self, side: LocalSide, sock: socket.socket, listener: Listener) -> None:
        self.side = side
        self.sock = sock
        self.listener = listener
        self.kind = listener.kind
        self.parser: Any = socks5.Socks5Server() if self.kind == "socks5" else (
            httpproxy.HttpProxyServer() if self.kind == "http" else None)
        self.splice = Splice(side.loop, side.engine, sock, on_done=self._done)
        self.timer: Any = None
        self.early = b""
        self.forward_request = False

    def start(self) -> None:
        if self.parser is None:  # forward
            assert self.listener.target is not None
            self._open(self.listener.target.host, self.listener.target.port)
        else:
            self.side.loop.on_readable(self.sock, self._on_request_data)

    def _on_request_data(self, _s: socket.socket) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._fail(None)
        if not data:
            return self._fail(None)
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
                return self._fail(None)
        self._flush_parser()

    def _flush_parser(self) -> None:
        out = self.parser.data_to_send() if self.parser is not None else b""
        if out:
            try:
                self.sock.send(out)
            except OSError:
                pass

    def _open(self, host: str, port: int) -> None:
        ip = self.side.names.resolve(host)
        if ip is None:
            self.side.counters.incr("resolve_failed")
            return self._fail("host_unreachable")
        src = self.side.source_for(ip)
        if src is None:
            self.side.counters.incr("no_source_address")
            return self._fail("network_unreachable")
        self.conn_id = self.side.engine.connect(src, (ip, port), self)
        self.timer = self.side.loop.call_later(CONNECT_TIMEOUT, lambda: self._timeout())

    def _timeout(self) -> None:
        self.side.counters.incr("connect_timeout")
        self.side.engine.stack.abort(self.conn_id, time.monotonic())
        self._fail("ttl_expired")

    # engine callbacks until the splice takes over ------------------------------------------------

    def on_connected(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
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
        self.side.counters.incr("connect_refused")
        self._fail("connection_refused")

    def on_closed(self) -> None:
        self._fail(None)

    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def on_peer_finished(self) -> None: ...

    def _fail(self, why: str | None) -> None:
        if self.splice.closed:
            return
        if why and isinstance(self.parser, socks5.Socks5Server):
            code = {"host_unreachable": socks5.Reply.HOST_UNREACHABLE,
                    "network_unreachable": socks5.Reply.NETWORK_UNREACHABLE,
                    "connection_refused": socks5.Reply.CONNECTION_REFUSED,
                    "ttl_expired": socks5.Reply.TTL_EXPIRED}[why]
            self.parser.reply(code)
            self._flush_parser()
        elif why and isinstance(self.parser, httpproxy.HttpProxyServer):
            self.parser.reply_error(504 if why == "ttl_expired" else 502, why.replace("_", " "))
            self._flush_parser()
        self.side.loop.remove_reader(self.sock)
        self.splice._close_local()

    def _done(self, _splice: Splice) -> None:
        self.side.live.discard(self)
