"""Opening the proxy's local listener sockets, and checking beforehand that they can open.

`open_listener` is the one place a local listener socket is made (TCP; IPv6 for a host
with a colon, else IPv4; ``SO_REUSEADDR``, so a port whose old connections linger in
TIME_WAIT is not refused; ``listen(256)``): the proxy serves on what it returns, and
`check_listeners` binds each address the same way and closes it at once, so a check that
passes means the proxy's own bind would have (barring a race with another program).

A ``dns`` listener serves UDP and TCP on the same address: `open_dns` opens both (with
port 0, one free port both protocols have). Its UDP socket (`open_udp`) gets no
``SO_REUSEADDR``: on Linux that would let it share a port with another UDP server that set
it too, splitting the queries between them instead of failing. No other kind listens on
UDP (SOCKS5 UDP ASSOCIATE is refused); ``inbound`` listeners listen on the tailnet, inside
our TCP stack, and are not checked here.

`problem` turns a failed bind into the one line the user sees::

    listener socks5 cannot listen on 127.0.0.1:1080: address already in use
    listener dns cannot listen on 127.0.0.1:5353: address already in use (UDP)
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from ..config import Address, Listener

__all__ = ["BACKLOG", "UdpBindError", "accept_ready", "check_listeners", "open_dns", "open_listener", "open_udp", "problem"]

BACKLOG = 256
PORT_ZERO_TRIES = 16
"""A dns listener on port 0: TCP ports tried until UDP has the same one free."""


class UdpBindError(OSError):
    """The UDP half of a dns listener failed (`problem` says so)."""


def open_listener(listen: Address) -> socket.socket:
    """A non-blocking TCP socket listening on ``listen``; raises OSError (closed on failure)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_udp(listen: Address) -> socket.socket:
    """A non-blocking UDP socket bound to ``listen`` (no SO_REUSEADDR); raises OSError."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((listen.host, listen.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_dns(listen: Address) -> tuple[socket.socket, socket.socket]:
    """``(tcp, udp)`` sockets on ``listen``, the same port (port 0: one free for both).
    Raises OSError, `UdpBindError` when only UDP failed; nothing stays open then."""
    for attempt in range(PORT_ZERO_TRIES if listen.port == 0 else 1):
        tcp = open_listener(listen)
        port = tcp.getsockname()[1]
        try:
            return tcp, open_udp(Address(host=listen.host, port=port))
        except OSError as exc:
            tcp.close()
            if listen.port == 0 and exc.errno == errno.EADDRINUSE and attempt + 1 < PORT_ZERO_TRIES:
                continue
            raise UdpBindError(exc.errno, exc.strerror) from exc
    raise AssertionError("unreachable")


def _why(listen: Address, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {listen.host}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES and 0 < listen.port < 1024:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address not available ({listen.host} is not an address of this machine)"
    if exc.errno == errno.EAFNOSUPPORT:
        return "address family not supported (IPv6 disabled?)"
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def problem(listener: Listener, exc: OSError) -> str:
    """The one line for ``listener`` failing to listen with ``exc``."""
    assert listener.listen is not None
    udp = " (UDP)" if isinstance(exc, UdpBindError) else ""
    return f"listener {listener.kind} cannot listen on {listener.listen}: {_why(listener.listen, exc)}{udp}"


def check_listeners(listeners: Iterable[Listener]) -> list[str]:
    """Bind and listen on each local listener's address as the proxy would, close it at
    once; one `problem` line per listener that cannot (none: all can). Port 0 always can."""
    problems: list[str] = []
    for listener in listeners:
        if listener.listen is None:  # inbound: on the tailnet, nothing to bind here
            continue
        try:
            for sock in open_dns(listener.listen) if listener.kind == "dns" else (open_listener(listener.listen),):
                sock.close()
        except OSError as exc:
            problems.append(problem(listener, exc))
    return problems


def accept_ready(lsock: socket.socket, counters: Any, most: int = 64) -> Iterator[socket.socket]:
    """The connections waiting on a listening socket, at most ``most`` per wake-up (the loop
    comes back for the rest). Errors never leave here: out of file descriptors is counted
    (``accept_fd_exhausted``) and ends the round (the backlog keeps them); a connection
    that died while queued is counted (``accept_aborted``) and skipped; anything else
    (``accept_error``: no buffers, a security module's veto...) ends the round."""
    for _ in range(most):
        try:
            sock, _addr = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                counters.incr("accept_fd_exhausted")
                return
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                counters.incr("accept_aborted")
                continue
            counters.incr("accept_error")
            return
        yield sock
