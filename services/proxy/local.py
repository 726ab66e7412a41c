"""The proxy's local side: listeners on 127.0.0.1 and connections from tailnet peers.

Listener kinds (config ``[[contexts.X.listeners]]``):

    socks5   SOCKS5 CONNECT (IPv4, IPv6, names: peer hostnames and MagicDNS names resolve
             from the netmap)                                    -> `socks5.Socks5Server`
    http     HTTP proxy: CONNECT, and absolute-form requests      -> `httpproxy.HttpProxyServer`
    forward  every connection to one fixed ``target`` (name or IP : port)
    inbound  tailnet peers connecting to our tailnet address on ``port`` reach local
             ``target`` (as tailscaled's userspace mode does), if the netmap's packet
             filter allows it; otherwise the SYN is answered with RST
    dns      tailnet names over DNS, UDP and TCP on ``listen``      -> `dnsserver.DnsServer`
             (answers: dnsanswer.py; other names, with ``dns_forward``: ``side.dns``)

``side.dns`` (`dnsforward.DnsForwarder`) asks the netmap's resolvers through the tunnel;
it exists whatever the listeners (the proxies may use it for names outside the tailnet)
and fails every call unless ``dns_forward`` is on. ``side.zone`` is the dns listeners'
view of the current netmap (`dnsanswer.Zone`, built with ``side.names`` when a dns listener
is configured).

Per local connection a `Front` (front.py) parses the proxy request (if any), resolves the
target, opens a tailnet TCP connection from our address of the same family, answers the
client once it is connected (or at once with the reason it cannot be), and hands both ends
to a `Splice`. Inbound connections log ``inbound_refused`` / ``inbound_up`` at debug level
with their 4-tuple, and ``conn_closed`` when they end.

A local listener that cannot listen (port in use, a port below 1024 without the right,
an address not on this machine) is a config error: each one is logged and printed as one
line (`portcheck.problem`) and the proxy exits 2, which supervisord does not retry forever.
Owned by the proxy's loop thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any

from sunbeam.shared.config import Listener
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.names import NameTable
from sunbeam.shared.proto.tcp import ConnectionRequest
from sunbeam.shared.runtime.portcheck import accept_ready, open_listener, problem
from sunbeam.shared.runtime.service import Service

from .filter import PacketFilter
from .front import Front
from .splice import Splice
from .tcpengine import TcpEngine

if TYPE_CHECKING:
    from .dnsanswer import Zone
    from .dnsforward import DnsForwarder
    from .dnsserver import DnsServer


class ListenerUnavailable(SystemExit):
    """A configured listener cannot listen: exit 2, the services' code for a config error."""


class LocalSide:
    def __init__(self, svc: Service, engine: TcpEngine) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.log = svc.log
        self.engine = engine
        self.counters = svc.counters
        self.names = NameTable()
        ctx = svc.context
        self.dns: DnsForwarder | None = None
        """Only with a dns listener, ``dns_forward`` or an ``exit_node`` (dnspython costs ~9 MB)."""
        if ctx.dns_forward or ctx.exit_node or any(lst.kind == "dns" for lst in ctx.listeners):
            from .dnsforward import DnsForwarder

            self.dns = DnsForwarder(svc.loop, svc.counters, engine, self.source_for, ctx)
        self.zone: Zone | None = None
        self.dns_servers: list[DnsServer] = []
        self.filter = PacketFilter(None)
        self.addresses: list[str] = []
        self.inbound: dict[int, tuple[str, int]] = {}
        self.live: set[Any] = set()
        self.listen_socks: list[socket.socket] = []
        engine.plane.on_netmap.append(self._on_netmap)
        engine.on_request = self._on_inbound_request
        engine.gauges["local_open"] = lambda: len(self.live)
        problems: list[tuple[Listener, str]] = []
        for listener in svc.context.listeners:
            try:
                self._open(listener)
            except OSError as exc:
                problems.append((listener, problem(listener, exc)))
        if problems:
            self._give_up(problems)

    def _give_up(self, problems: list[tuple[Listener, str]]) -> None:
        for listener, line in problems:
            self.log.error("listener_unavailable", kind=listener.kind, addr=str(listener.listen), reason=line)
            print(f"sunbeam-proxy: {line}", file=sys.stderr, flush=True)
        for sock in self.listen_socks:
            self.loop.remove_reader(sock)
            sock.close()
        raise ListenerUnavailable(2)

    def _on_netmap(self, netmap: Netmap) -> None:
        self.names = NameTable.from_netmap(netmap)
        if self.dns is not None:
            self.dns.set_netmap(netmap)
        if self.dns_servers and self.dns is not None:
            from .dnsanswer import Zone

            self.zone = Zone.from_netmap(netmap, self.names, forward=self.dns.enabled)
        if netmap.packet_filter != self.filter.source:  # a changed filter: count its bad entries once
            self.filter = PacketFilter(netmap.packet_filter)
            if bad := self.filter.bad_entries:
                self.counters.incr("filter_bad_entries", len(bad))
                self.log.warning("filter_bad_entries", count=len(bad), entry=bad[0].entry, reason=bad[0].reason)
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
        if listener.kind == "dns":
            from .dnsanswer import Zone
            from .dnsserver import DnsServer

            assert self.dns is not None
            self.zone = Zone(self.names, forward=self.dns.enabled)
            server = DnsServer(self, listener)
            self.dns_servers.append(server)
            self.listen_socks.extend(server.sockets)
            return
        sock = open_listener(listener.listen)
        self.listen_socks.append(sock)
        self.loop.on_readable(sock, lambda s: self._accept(s, listener))
        self.log.info("listening", kind=listener.kind, addr=f"{listener.listen}",
                      port=sock.getsockname()[1], target=str(listener.target) if listener.target else None)

    def _accept(self, lsock: socket.socket, listener: Listener) -> None:
        for sock in accept_ready(lsock, self.counters):
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
            return self._refuse_inbound(req, "inbound_refused" if target else "inbound_no_listener")
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return self._refuse_inbound(req, "inbound_target_refused")
        splice = Splice(self.loop, self.engine, sock, on_done=self.live.discard, log=self.log)
        self.live.add(splice)

        def connected(_s: socket.socket) -> None:
            self.loop.remove_writer(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                sock.close()
                self.live.discard(splice)
                return self._refuse_inbound(req, "inbound_target_refused")
            self.counters.incr("inbound_accepted")
            self.log.debug("inbound_up", conn=req.conn_id, src=f"{req.src[0]}:{req.src[1]}", dst=f"{dst_ip}:{dst_port}",
                           target=f"{target[0]}:{target[1]}")
            splice.started = self.loop.now()
            self.engine.adopt(req.conn_id, splice)
            splice.conn_id = req.conn_id

        splice.on_connected = lambda: splice.attach(req.conn_id)  # type: ignore[method-assign]
        self.loop.on_writable(sock, connected)

    def _refuse_inbound(self, req: ConnectionRequest, reason: str) -> None:
        self.counters.incr(reason)
        self.log.debug("inbound_refused", conn=req.conn_id, reason=reason, src=f"{req.src[0]}:{req.src[1]}",
                       dst=f"{req.dst[0]}:{req.dst[1]}")
        self.engine.stack.refuse(req.conn_id)
