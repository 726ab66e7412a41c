"""One timed bulk transfer over kernel TCP between two namespaces, checked end to end.

``tcp_transfer(src_ns, dst_ns, dst_addr, size)`` listens on ``dst_addr`` (an ephemeral port)
in namespace ``dst_ns``, connects from ``src_ns``, sends ``size`` random bytes and closes;
the receiving side (a thread here, its socket in ``dst_ns``) hashes what arrives until EOF.
The result says whether the sha256 of what arrived is the sha256 of what was sent, and how
long it took from the connect until the receiver saw EOF (so it includes the handshake and
the last bytes' way across, not only the sender's writes).

Used by the link emulator's tests (tests/realnet/test_linkemu.py: TCP intact through delay,
loss and reordering) and by bench/bench_links.py (the emulator's own ceiling). Both ends are
this process's sockets, so the figure is the path's (and the kernel's), not a contestant's.
Traffic stays between the two namespaces.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass

from sunbeam.refnet import netns

MB = 1 << 20


@dataclass(frozen=True)
class Transfer:
    size: int  # bytes sent
    seconds: float  # connect until the receiver saw EOF (or gave up)
    intact: bool  # exactly the bytes sent arrived, then EOF

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / MB if self.seconds > 0 else 0.0


def tcp_transfer(src_ns: str, dst_ns: str, dst_addr: str, size: int, *, timeout: float = 300.0) -> Transfer:
    """``size`` random bytes over one TCP connection from ``src_ns`` to ``dst_addr`` in
    ``dst_ns``. A receiver that has not seen EOF within ``timeout`` seconds counts as not
    intact (and ``seconds`` is then about ``timeout``); a failed connect raises OSError."""
    data = os.urandom(size)
    with netns.entered(dst_ns):
        srv = socket.create_server((dst_addr, 0))
    srv.settimeout(timeout)
    digests: list[str] = []

    def receive() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:  # closed or timed out: nothing arrived
            return
        h = hashlib.sha256()
        with conn:
            conn.settimeout(timeout)
            try:
                while chunk := conn.recv(1 << 20):
                    h.update(chunk)
            except OSError:
                return
        digests.append(h.hexdigest())

    receiver = threading.Thread(target=receive, name="tcp-transfer-rx", daemon=True)
    receiver.start()
    t0 = time.monotonic()
    try:
        with netns.entered(src_ns):
            c = socket.create_connection((dst_addr, srv.getsockname()[1]), timeout=60)
        with c:
            c.sendall(data)
        receiver.join(timeout=timeout)
        took = time.monotonic() - t0
    finally:
        srv.close()
    return Transfer(size, took, digests == [hashlib.sha256(data).hexdigest()])
