"""The UDP socket of the udp service (and of the WireGuard workers' direct sockets): dual-stack
bind, GRO receive, GSO send, address text forms.

Socket: AF_INET6 with IPV6_V6ONLY=0 bound to ``[::]:port`` (IPv4 peers appear as
``::ffff:a.b.c.d`` and are shown as ``a.b.c.d:port``); if IPv6 is unavailable, AF_INET on
``0.0.0.0:port`` (IPv6 destinations are then a counted drop). Non-blocking.

Linux UDP offload (probed at start like ts:net/batching/conn_linux.go tryEnableUDPOffload;
either may be missing, then the plain path is used and counted):

- receive, ``setsockopt(SOL_UDP=17, UDP_GRO=104, 1)``: the kernel may coalesce datagrams of
  one flow into one ``recvmsg``; a cmsg ``(SOL_UDP, UDP_GRO, int gso_size)`` says so, and
  the data is ``gso_size``-byte datagrams back to back (the last may be shorter);
- send, cmsg ``(SOL_UDP, UDP_SEGMENT=103, u16 gso_size)`` on ``sendmsg``: one call sends a
  run of equal-size datagrams to one destination (the last may be shorter), at most
  `MAX_GSO_SEGMENTS` of them and `MAX_GSO_BYTES` in all. Probed with
  ``getsockopt(SOL_UDP, UDP_SEGMENT)``. EIO from a GSO send (no checksum offload on the
  route's device) turns GSO off for good; EINVAL (a segment above the route MTU) resends
  that run datagram by datagram.

Sharing the port (``reuse_port``, the direct sockets of issue 20): the udp service's
socket then sets ``SO_REUSEPORT`` before its bind, and each WireGuard worker may bind its
own socket to the same port and ``connect()`` it to one peer's trusted endpoint
(`UdpSocket.connected`): Linux hands a datagram to the connected socket whose 4-tuple it
matches before any unconnected one, and never picks a connected socket for anyone else's
datagrams (``reuseport_select_sock_by_hash`` skips them), so that peer's datagrams go to
the worker and everything else still to the udp service. When a worker's socket closes
(kill -9 included) the kernel delivers that peer's datagrams to the wildcard socket again.
Sends on a connected socket give no address (the kernel's cached route). A connected socket
reports an ICMP error of an earlier datagram (port unreachable) as ECONNREFUSED on its next
send or receive: counted (``tx.econnrefused`` / ``rx.error.ECONNREFUSED``), and the send is
tried once more (the error was not about that datagram).

Counters: ``rx.datagrams``, ``rx.gro_batches`` (recvmsg calls returning > 1 datagram),
``rx.drop.truncated``, ``rx.error.<errno>``; ``tx.datagrams``, ``tx.gso_sends`` /
``tx.gso_datagrams``, ``tx.plain_sends``, ``tx.gso_fallback``, ``tx.gso_disabled``,
``tx.drop.<reason>`` (weighted by datagrams).

Ownership: the udp service's loop thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any

from ..proto.discohead import format_addr_port, parse_addr_port
from .counters import Counters

__all__ = ["MAX_GSO_BYTES", "MAX_GSO_SEGMENTS", "UdpSocket", "gso_runs"]

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS in older kernels (128 since 6.x); stay low
MAX_GSO_BYTES = 65000  # under the 65507-byte IPv4 UDP payload limit
RECV_BUFFER = 1 << 16
SOCKET_BUFFER = 4 << 20
_CACHE_MAX = 4096
_MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: ``flags & MsgFlag`` runs enum's Python operator


def gso_runs(packets: list[bytes], max_segments: int = MAX_GSO_SEGMENTS,
             max_bytes: int = MAX_GSO_BYTES) -> Iterator[list[bytes]]:
    """Split ``packets`` (order kept) into runs one GSO ``sendmsg`` can carry: the same
    size as the run's first packet, except a shorter one that ends the run."""
    if packets:  # a bulk batch: all of one size but maybe the last, cut without a loop
        size = len(packets[0])
        lengths = set(map(len, packets[:-1]))
        if (not lengths or lengths == {size}) and 0 < len(packets[-1]) <= size:
            step = max(1, min(max_segments, max_bytes // size))
            for i in range(0, len(packets), step):
                yield packets[i:i + step]
            return
    run: list[bytes] = []
    size = total = 0
    for pkt in packets:
        if run and (len(pkt) > size or len(run) >= max_segments or total + len(pkt) > max_bytes):
            yield run
            run = []
        if not run:
            size, total = len(pkt), 0
        run.append(pkt)
        total += len(pkt)
        if len(pkt) < size:  # a shorter datagram can only be the last segment
            yield run
            run = []
    if run:
        yield run


class UdpSocket:
    """The service's UDP socket (see the module docstring)."""

    def __init__(self, port: int, counters: Counters, *, offload: bool = True, reuse_port: bool = False,
                 family: int | None = None) -> None:
        """``reuse_port``: set ``SO_REUSEPORT`` (see the module docstring); ``family``: only
        that one (AF_INET6 dual-stack or AF_INET), else AF_INET6 with a fallback to AF_INET."""
        self.counters = counters
        self.sock = _open(port, reuse_port=reuse_port, family=family)
        self.family = self.sock.family
        self.peer = ""
        """``connected``: the peer's ``ip:port`` this socket is connected to ("" = none)."""
        self.port: int = self.sock.getsockname()[1]
        self.gro = offload and _try(lambda: self.sock.setsockopt(SOL_UDP, UDP_GRO, 1))
        self.gso = offload and _try(lambda: self.sock.getsockopt(SOL_UDP, UDP_SEGMENT))
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._ancsize = socket.CMSG_SPACE(4)
        self._src_text: dict[Any, str] = {}  # sockaddr -> text; cleared when full
        self._dst_addr: dict[str, Any] = {}  # text -> sockaddr; cleared when full

    @classmethod
    def connected(cls, port: int, dst: str, counters: Counters, *, family: int | None = None,
                  offload: bool = True) -> UdpSocket:
        """A socket bound to ``port`` with ``SO_REUSEPORT`` beside the udp service's, and
        connected to ``dst`` (``ip:port``). OSError / ValueError if either cannot be done."""
        self = cls(port, counters, offload=offload, reuse_port=True, family=family)
        try:
            self.sock.connect(self._sockaddr(dst))
        except (OSError, ValueError):
            self.sock.close()
            raise
        self.peer = dst
        return self

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # -- receive ---------------------------------------------------------------------

    def recv_bursts(self, budget: int, max_bytes: int = 0) -> list[tuple[bytes, str, int]]:
        """Up to ``budget`` recvmsg calls until EAGAIN (or, with ``max_bytes``, until that
        much was read): [(data, src text, segment size)], where a nonzero segment size says
        ``data`` is a GRO burst of datagrams that long, back to back (the last may be
        shorter), left for the caller to split or not."""
        out: list[tuple[bytes, str, int]] = []
        incr = self.counters.incr
        taken = 0
        for _ in range(budget):
            if max_bytes and taken >= max_bytes:
                break
            try:
                n, anc, flags, addr = self.sock.recvmsg_into([self._buf], self._ancsize)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. a queued ICMP error; the socket stays usable
                incr(f"rx.error.{errno.errorcode.get(exc.errno or 0, exc.errno)}")
                break
            if flags & _MSG_TRUNC:
                incr("rx.drop.truncated")
                continue
            gso_size = 0
            for level, kind, data in anc:
                if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
                    gso_size = int.from_bytes(data[:4], "little") if len(data) >= 4 else \
                        int.from_bytes(data[:2], "little")
            if 0 < gso_size < n:
                incr("rx.gro_batches")
                incr("rx.datagrams", -(-n // gso_size))
            else:
                gso_size = 0
                incr("rx.datagrams")
            out.append((bytes(self._view[:n]), self._text_of(addr), gso_size))
            taken += n
        return out

    def _text_of(self, addr: Any) -> str:
        text = self._src_text.get(addr)
        if text is None:
            text = sockaddr_text(addr)
            if len(self._src_text) >= _CACHE_MAX:
                self._src_text.clear()
            self._src_text[addr] = text
        return text

    # -- send ------------------------------------------------------------------------

    def send(self, packets: list[bytes], dst: str) -> None:
        """Send every packet to ``dst`` (``"ip:port"`` / ``"[v6]:port"``); failures are
        counted drops (the network may refuse; WireGuard and disco retry). On a connected
        socket, ``dst`` equal to its peer is sent without an address."""
        connected = dst == self.peer and bool(dst)
        addr = None if connected else self._dst_addr.get(dst)
        if addr is None and not connected:
            try:
                addr = self._sockaddr(dst)
            except ValueError:
                self.counters.incr("tx.drop.bad_dst", len(packets))
                return
            if len(self._dst_addr) >= _CACHE_MAX:
                self._dst_addr.clear()
            self._dst_addr[dst] = addr
        if not self.gso or len(packets) < 2:
            self._send_plain(packets, addr)
            return
        for run in gso_runs(packets):
            if len(run) == 1 or not self._send_gso(run, addr):
                self._send_plain(run, addr)

    def _send_gso(self, run: list[bytes], addr: Any, retried: bool = False) -> bool:
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(run[0])))]
        try:
            if addr is None:
                self.sock.sendmsg(run, cmsg, 0)
            else:
                self.sock.sendmsg(run, cmsg, 0, addr)  # one iovec per datagram: no joined copy
        except BlockingIOError:
            self.counters.incr("tx.drop.eagain", len(run))
            return True
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED and not retried:  # an earlier datagram's ICMP error
                self.counters.incr("tx.econnrefused")
                return self._send_gso(run, addr, True)
            if exc.errno == errno.EIO:
                self.gso = False
                self.counters.incr("tx.gso_disabled")
            elif exc.errno != errno.EINVAL:
                self._count_error(exc, len(run))
                return True
            self.counters.incr("tx.gso_fallback")
            return False
        self.counters.incr("tx.gso_sends")
        self.counters.incr("tx.gso_datagrams", len(run))
        self.counters.incr("tx.datagrams", len(run))
        return True

    def _send_plain(self, packets: list[bytes], addr: Any) -> None:
        sock = self.sock
        for i, pkt in enumerate(packets):
            for attempt in (0, 1):
                try:
                    if addr is None:
                        sock.send(pkt)
                    else:
                        sock.sendto(pkt, addr)
                    break
                except BlockingIOError:
                    self.counters.incr("tx.drop.eagain", len(packets) - i)
                    return
                except OSError as exc:
                    if exc.errno == errno.ECONNREFUSED and not attempt:  # an earlier datagram's ICMP error
                        self.counters.incr("tx.econnrefused")
                        continue
                    self._count_error(exc, len(packets) - i)
                    return
            self.counters.incr("tx.plain_sends")
            self.counters.incr("tx.datagrams")

    def _count_error(self, exc: OSError, n: int) -> None:
        self.counters.incr(f"tx.drop.{errno.errorcode.get(exc.errno or 0, 'oserror').lower()}", n)

    def _sockaddr(self, text: str) -> Any:
        addr, port = parse_addr_port(text)
        if self.family == socket.AF_INET:
            if addr.version != 4:
                raise ValueError("IPv6 destination on an IPv4-only socket")
            return (str(addr), port)
        if addr.version == 4:
            return (f"::ffff:{addr}", port, 0, 0)
        scope = addr.scope_id  # type: ignore[union-attr]
        scope_id = 0
        if scope:
            scope_id = int(scope) if scope.isdigit() else _if_index(scope)
        return (str(ipaddress.IPv6Address(addr.packed)), port, 0, scope_id)


def sockaddr_text(addr: Any) -> str:
    """``recvmsg``'s address tuple -> ``"ip:port"`` / ``"[v6]:port"`` / ``"[v6%scope]:port"``."""
    if len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    host, port, _flow, scope = addr
    ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    if scope and ip.ipv4_mapped is None:
        return f"[{ip}%{scope}]:{port}"
    return format_addr_port(ip, port)


def _if_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"unknown interface {name!r}") from None


def _try(probe: Any) -> bool:
    try:
        probe()
    except OSError:
        return False
    return True


def _open(port: int, *, reuse_port: bool = False, family: int | None = None) -> socket.socket:
    sock = None
    if family in (None, socket.AF_INET6):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:
            if family is not None:
                raise
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("::", port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE or family is not None:
                raise
            sock = None  # IPv6 disabled (EADDRNOTAVAIL, EAFNOSUPPORT): IPv4 only
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("0.0.0.0", port))
        except OSError:
            sock.close()
            raise
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        _try(lambda opt=opt: sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER))
    sock.setblocking(False)
    return sock
