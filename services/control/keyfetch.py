"""`KeyFetch`: ``GET {control_url}/key`` without blocking the control service's loop.

`Dialer` opens the connection (TLS for https), the request goes out when the socket is
writable, and the answer's bytes feed `serverkey.KeyAnswer` as they arrive, within
``timeout`` in all. Exactly one callback runs: ``on_key(key)``, or
``on_error(exc, answered)`` with a `ServerKeyError` (the server answered, not with a
key), an `ssl.SSLCertVerificationError`, or an `OSError` (nobody answered: refused,
unresolvable, timed out, closed without a word); ``answered`` says whether the server
sent anything.

Ownership: the control service's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sunbeam.shared.runtime.dial import Dialer, send_available
from sunbeam.shared.runtime.tlsctx import is_tls_socket, would_block

from .serverkey import KeyAnswer, ServerKeyError

if TYPE_CHECKING:
    import ssl  # only for annotations: an http:// control URL never loads ssl (tlsctx)

__all__ = ["KeyFetch"]

RECV_SIZE = 65536


class KeyFetch:
    def __init__(self, loop: Any, control_url: str, capability_version: int, tls: ssl.SSLContext | None, *,
                 connect_timeout: float, timeout: float, on_key: Callable[[bytes], None],
                 on_error: Callable[[Exception, bool], None]) -> None:
        url = urlsplit(control_url)
        self.loop = loop
        self.on_key, self.on_error = on_key, on_error
        self.answer = KeyAnswer(control_url, capability_version)
        self.out = bytearray(self.answer.request)
        self.sock: Any = None
        self.answered = False
        self.done = False
        self.dial = Dialer(loop, url.hostname or "", url.port or (443 if url.scheme == "https" else 80),
                         tls=tls if url.scheme == "https" else None, connect_timeout=connect_timeout,
                         on_done=self._connected, on_error=self._dial_failed)
        self.timer = loop.call_later(timeout, lambda: self._fail(TimeoutError(f"no answer to GET /key within "
                                                                              f"{timeout:g}s")))

    def start(self) -> None:
        self.dial.start()

    def cancel(self) -> None:
        self.done = True
        self._close()

    def _dial_failed(self, reason: str, answered: bool, cert_error: ssl.SSLCertVerificationError | None = None
                     ) -> None:
        self.answered = answered
        self._fail(cert_error if cert_error is not None else OSError(reason))

    def _connected(self, sock: Any) -> None:
        if self.done:
            sock.close()
            return
        self.sock = sock
        self.answered = self.answered or is_tls_socket(sock)  # its certificate came
        self.loop.on_readable(sock, self._read)
        self._write()

    def _write(self, _source: Any = None) -> None:
        sock = self.sock
        if self.done:
            return
        try:
            send_available(sock, self.out)
        except OSError as exc:
            return self._fail(exc)
        if self.out:
            self.loop.on_writable(sock, self._write)
        else:
            self.loop.remove_writer(sock)

    def _read(self, _source: Any) -> None:
        if self.done:
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except would_block():
            return
        except OSError as exc:
            return self._fail(exc)
        self.answered = self.answered or bool(data)
        try:
            key = self.answer.feed(data)
        except (ServerKeyError, OSError) as exc:
            return self._fail(exc)
        if key is not None:
            self.done = True
            self._close()
            self.on_key(key)

    def _fail(self, exc: Exception) -> None:
        if self.done:
            return
        self.done = True
        self._close()
        self.on_error(exc, self.answered or isinstance(exc, ServerKeyError))

    def _close(self) -> None:
        self.timer.cancel()
        self.dial.cancel()
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.loop.remove_writer(self.sock)
            self.sock.close()
            self.sock = None
