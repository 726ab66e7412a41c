"""What the tests' small HTTP servers share: reading one request head."""

from __future__ import annotations

import socket


def recv_head(sock: socket.socket) -> bytes | None:
    """Bytes from ``sock`` up to and including the blank line that ends an HTTP head (and
    whatever arrived with it in the last read); None if the peer closed before it."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        head += chunk
    return head
