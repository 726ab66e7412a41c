"""`Dialer`: a TCP (and TLS) connection opened without blocking the service's loop.

Used by the control client (the /key fetch, the TS2021 connection) and the derp service
(each region). Steps, each driven by the loop:

1. resolve: an IP literal at once; a name by ``getaddrinfo`` on a helper thread (the C
   resolver has no non-blocking form), whose answer wakes the loop through a socket pair;
2. connect: a non-blocking ``connect`` to each address in turn, waiting for the socket
   to become writable (never polling), ``connect_timeout`` per address;
3. TLS (when a context is given): a non-blocking handshake, waiting for readable or
   writable as OpenSSL asks, within ``connect_timeout`` as well.

Then ``on_done(sock)`` with a non-blocking socket, or ``on_error(reason, answered)`` once
(a connect's reason is the system's word, e.g. "Connection refused": the caller names the
server; a resolver's or TLS's names the host):
``answered`` is True when the far end sent something (a TLS alert, a certificate): a server
that answers is not "unreachable". `ssl.SSLCertVerificationError` is passed as
``on_error(..., cert_error=exc)`` so the caller can say the certificate is not trusted.
`cancel()` stops a dialer at any step; nothing is called after it.

Ownership: the loop thread of the service that made it (the resolver thread only computes
and writes one byte).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .tlsctx import would_block

if TYPE_CHECKING:
    import ssl  # imported where a TLS handshake runs: plain-HTTP processes never load it

__all__ = ["Dialer", "send_available"]

Address = tuple[int, tuple[Any, ...]]  # (family, sockaddr)


def send_available(sock: socket.socket, out: bytearray) -> None:
    """Send as much of ``out`` as the non-blocking ``sock`` (TLS or not) takes now and
    remove it from ``out``; what is left waits for the caller's next try. A socket error
    (other than "would block") propagates as OSError."""
    while out:
        try:
            sent = sock.send(out)
        except would_block():  # ssl's want-read/write only if ssl is loaded (tlsctx)
            return
        del out[:sent]


class Dialer:
    def __init__(self, loop: Any, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None, connect_timeout: float = 3.0,
                 on_done: Callable[[socket.socket], None],
                 on_error: Callable[..., None],
                 prepare: Callable[[socket.socket], None] | None = None) -> None:
        self.loop = loop
        self.host, self.port = host, port
        self.tls, self.server_name = tls, server_name or host
        self.connect_timeout = connect_timeout
        self.on_done, self.on_error = on_done, on_error
        self.prepare = prepare
        self.sock: socket.socket | None = None
        self.answered = False
        self._addresses: list[Address] = []
        self._timer: Any = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._resolved: list[Address] | str | None = None
        self._over = False
        self._last_error = ""

    # -- 1. resolve ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return self._resolve_in_thread()
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        self._addresses = [(family, (self.host, self.port))]
        self._connect_next()

    def _resolve_in_thread(self) -> None:
        self._wake = socket.socketpair()
        self._wake[0].setblocking(False)
        self.loop.on_readable(self._wake[0], self._on_resolved)

        def resolve(wake: socket.socket = self._wake[1]) -> None:
            try:
                infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                self._resolved = [(family, addr) for family, _t, _p, _n, addr in infos]
            except OSError as exc:
                self._resolved = f"cannot resolve {self.host}: {exc.strerror or exc}"
            try:
                wake.send(b"!")
            except OSError:  # cancelled meanwhile: the pair is closed
                pass

        threading.Thread(target=resolve, name="dial-resolve", daemon=True).start()

    def _on_resolved(self, _source: Any) -> None:
        self._close_wake()
        if self._over:
            return
        resolved = self._resolved
        if isinstance(resolved, str):
            return self._fail(resolved)
        if not resolved:
            return self._fail(f"cannot resolve {self.host}: no address")
        self._addresses = resolved
        self._connect_next()

    def _close_wake(self) -> None:
        if self._wake is not None:
            self.loop.remove_reader(self._wake[0])
            for s in self._wake:
                s.close()
            self._wake = None

    # -- 2. connect ---------------------------------------------------------------------

    def _connect_next(self) -> None:
        while self._addresses and not self._over:
            family, addr = self._addresses.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            if self.prepare is not None:
                self.prepare(sock)
            code = sock.connect_ex(addr)
            if code in (0, errno.EINPROGRESS):
                self.sock = sock
                self.loop.on_writable(sock, self._on_connected)
                self._arm(lambda: self._next_address("connect timed out"))
                return
            sock.close()
            self._last_error = os.strerror(code)
        self._fail(self._last_error or "no address")  # the caller names the server

    def _next_address(self, error: str) -> None:
        self._drop_socket()
        self._last_error = error
        self._connect_next()

    def _on_connected(self, sock: socket.socket) -> None:
        self.loop.remove_writer(sock)
        if sock is not self.sock or self._over:
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return self._next_address(os.strerror(code))
        self._cancel_timer()
        self._addresses = []
        if self.tls is None:
            return self._done()
        try:
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.server_name, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            return self._fail(f"TLS with {self.host}:{self.port} failed: {exc}")
        self._arm(lambda: self._fail(f"TLS with {self.host}:{self.port} timed out"))
        self._tls_step()

    # -- 3. TLS -------------------------------------------------------------------------

    def _tls_step(self, _source: Any = None) -> None:
        import ssl  # loaded already: self.tls is an ssl.SSLContext (not at the top: tlsctx)

        sock = self.sock
        if self._over or not isinstance(sock, ssl.SSLSocket):
            return
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.on_readable(sock, self._tls_step)
            return
        except ssl.SSLWantWriteError:
            self.loop.on_writable(sock, self._tls_step)
            return
        except ssl.SSLCertVerificationError as exc:
            self.answered = True
            return self._fail(f"TLS with {self.host}:{self.port} failed: {exc}", cert_error=exc)
        except (OSError, ValueError) as exc:  # ssl.SSLError included
            if not isinstance(exc, (ssl.SSLEOFError, ConnectionError)):
                self.answered = True  # a TLS alert: the server is there
            return self._fail(f"TLS with {self.host}:{self.port} failed: {exc}")
        self.answered = True
        self._cancel_timer()
        self._done()

    # -- the end ------------------------------------------------------------------------

    def _done(self) -> None:
        sock, self.sock = self.sock, None
        self._over = True
        assert sock is not None
        self.on_done(sock)

    def _fail(self, reason: str, **extra: Any) -> None:
        if self._over:
            return
        self._over = True
        self._cancel_timer()
        self._close_wake()
        self._drop_socket()
        self.on_error(reason, self.answered, **extra)

    def cancel(self) -> None:
        """Stop dialling; neither callback runs."""
        self._over = True
        self._cancel_timer()
        self._close_wake()
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
            sock.close()

    def _arm(self, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.connect_timeout, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
