"""XML-RPC to supervisord over its unix socket (``<rundir>/supervisor.sock``).

What supervisor's own ``supervisor.xmlrpc.SupervisorTransport`` does for a ``unix://``
server URL, on the standard library alone: importing supervisor's module also loads its
compat layer (html.parser, the email package, importlib.metadata, medusa), ~15 ms of CPU
that `sunbeam-ctl connect` would spend while supervisord and the control service start
on the same two cores. Unlike it, every socket operation is bounded by ``timeout`` (a
stuck supervisord must not hang the ctl), without touching the process-wide default.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)  # the Host header; supervisord ignores it
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """``xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(path, timeout))``."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        conn = self._connection[1]
        if conn is None:  # one connection, kept for this transport's calls (close() ends it)
            conn = _UnixHTTPConnection(self._path, self._timeout)
            self._connection = ("localhost", conn)
        return conn
