"""`Splice`: one local TCP socket joined to one tailnet TCP connection of our stack.

Byte flow and back-pressure (nothing grows without bound):

    local socket --recv--> stack.send(conn)   if the stack's send buffer is full, keep the
                                               rest and stop reading the local socket until
                                               the stack says Writable
    stack.read(conn) --send--> local socket   if the local socket is full, keep the rest and
                                               stop reading the stack (its receive window
                                               closes, so the peer slows down) until the
                                               local socket is writable

EOF handling: local EOF -> our FIN after the buffered data (``stack.shutdown``); the peer's
FIN -> ``shutdown(SHUT_WR)`` on the local socket once everything before it was written.
A reset on either side resets the other (``SO_LINGER 0`` close locally, RST to the peer).

The local socket is non-blocking; the splice registers itself with the loop only while it
wants to read or write. Owned by the proxy's loop thread.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from sunbeam.shared.runtime.loop import ServiceLoop

from .tcpengine import TcpEngine

CHUNK = 1 << 18
MAX_READ = 1 << 18


class Splice:
    def __init__(self, loop: ServiceLoop, engine: TcpEngine, sock: socket.socket, *,
                 on_done: Callable[[Splice], None] = lambda s: None, log: Any = None) -> None:
        self.transform: Callable[[bytes], bytes] | None = None
        """Applied to local bytes before they go up (an HTTP proxy re-encodes a request body)."""
        self.loop = loop
        self.engine = engine
        self.stack = engine.stack
        self.sock = sock
        self.conn_id: int | None = None
        self.on_done = on_done
        self.up = b""  # local -> tunnel, not yet accepted by the stack
        self.down = b""  # tunnel -> local, not yet written to the socket
        self.local_eof = False
        self.peer_eof = False
        self.closed = False
        self.tunnel_closed = False
        self.reading_local = False
        self.bytes_up = 0
        """Bytes the stack took from the local socket (after ``transform``)."""
        self.bytes_down = 0
        """Bytes written to the local socket."""
        self.started: float | None = None
        """When the connection began; once set, closing logs ``conn_closed`` to ``log``."""
        self.ended = "closed"
        """How it ended: ``closed``, ``reset: <stack reason>`` or ``aborted: <why>``."""
        self.log = log

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, conn_id: int, early: bytes = b"") -> None:
        """The tailnet connection is established: start moving bytes both ways."""
        self.conn_id = conn_id
        self.up = early
        self._push_up()
        if not self.up and not self.local_eof:
            self._read_local(True)
        self.on_readable()

    def _read_local(self, on: bool) -> None:
        if on and not self.reading_local and not self.closed:
            self.loop.on_readable(self.sock, self._local_readable)
            self.reading_local = True
        elif not on and self.reading_local:
            self.loop.remove_reader(self.sock)
            self.reading_local = False

    # -- local -> tunnel ---------------------------------------------------------------------

    def _local_readable(self, _sock: socket.socket) -> None:
        try:
            data = self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._abort_both("local socket error")
        if not data:
            self.local_eof = True
            self._read_local(False)
            if not self.up and self.conn_id is not None:
                self.stack.shutdown(self.conn_id, self.loop.now())
            return
        self.up = self.transform(data) if self.transform is not None else data
        self._push_up()

    def _push_up(self) -> None:
        if self.conn_id is None or not self.up:
            return
        n = self.stack.send(self.conn_id, self.up, self.loop.now())
        self.bytes_up += n
        self.up = self.up[n:]
        if self.up:
            self._read_local(False)  # wait for Writable
        elif self.local_eof:
            self.stack.shutdown(self.conn_id, self.loop.now())
        else:
            self._read_local(True)

    def on_writable(self) -> None:
        self._push_up()

    # -- tunnel -> local ----------------------------------------------------------------------

    def on_readable(self) -> None:
        if self.down or self.conn_id is None or self.closed:
            return  # the local socket is behind: leave data in the stack (its window closes)
        while True:
            data = self.stack.read(self.conn_id, MAX_READ)
            if not data:
                break
            if not self._write_local(data):
                return
        if self.peer_eof:
            self._finish_local()

    def _write_local(self, data: bytes) -> bool:
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._abort_both("local socket error")
            return False
        self.bytes_down += n
        if n < len(data):
            self.down = data[n:]
            self.loop.on_writable(self.sock, self._local_writable)
            return False
        return True

    def _local_writable(self, _sock: socket.socket) -> None:
        data, self.down = self.down, b""
        self.loop.remove_writer(self.sock)
        if self._write_local(data):
            if self.tunnel_closed:
                self._finish_local()
                self._close_local()
            else:
                self.on_readable()

    def on_peer_finished(self) -> None:
        self.peer_eof = True
        self.on_readable()

    def _finish_local(self) -> None:
        if not self.down:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if self.local_eof:
                self._close_local()

    # -- endings ---------------------------------------------------------------------------------

    def on_connected(self) -> None:  # handled by the front-end that made the connection
        pass

    def on_reset(self, reason: str) -> None:
        self.ended = f"reset: {reason}"
        self._close_local(reset=True)

    def on_closed(self) -> None:
        self.tunnel_closed = True
        if not self.down:  # else _local_writable closes once the rest is written
            self._finish_local()
            self._close_local()

    def _abort_both(self, reason: str) -> None:
        self.ended = f"aborted: {reason}"
        if self.conn_id is not None:
            self.stack.abort(self.conn_id, self.loop.now())
        self._close_local(reset=True)

    def _close_local(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self._read_local(False)
        self.loop.remove_writer(self.sock)
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()
        if self.started is not None and self.log is not None:
            self.log.debug("conn_closed", conn=self.conn_id, how=self.ended, up=self.bytes_up, down=self.bytes_down,
                           s=round(self.loop.now() - self.started, 3))
        self.on_done(self)
