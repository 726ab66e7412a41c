"""Local ports for the connections we open, and initial sequence numbers, sans-IO.

Why this matters: whichever end closes a TCP connection first holds its 4-tuple in
TIME-WAIT (a Linux or gVisor peer: 60 s) and silently drops a new SYN on that 4-tuple,
whatever its ISN. Our listeners send every connection to a peer from one tailnet address,
so a port drawn at random from a small range, reused toward the same ``peer:port`` within
a minute, hangs the new connection until its SYN retries run out. Measured against a real
tailscaled peer before this module: every unanswered SYN (169 of 169) reused such a port;
fresh ports were all answered.

Ports (RFC 6056 3.3.4, Algorithm 4, "double-hash port selection")::

    offset = F(local IP, remote IP, remote port, secret)        32 bits of a keyed BLAKE2s
    index  = G(local IP, remote IP, remote port, secret)        another 32 bits, mod TABLE
    port   = FIRST + (offset + table[index]) % COUNT; table[index] += 1, until one is free

so successive connections toward one destination walk the whole range (64,512 ports)
from a secret starting point before any port comes back, and an off-path observer cannot
predict the next port. A port is free when no open connection (``in_use``) has that
4-tuple, it is not one we listen on, and no connection on that 4-tuple closed within
``horizon`` seconds (default 120 s: twice the longest TIME-WAIT we know of). When none is
free, `NoFreePort` says so; nothing waits.

Initial sequence numbers (RFC 6528)::

    ISN = M + F(local IP, local port, remote IP, remote port, secret)   mod 2**32

with M a clock ticking every 4 microseconds (``now`` is the caller's monotonic seconds),
so the ISNs of successive connections on one 4-tuple increase, and those of different
4-tuples are unrelated.

Keys are the stack's demultiplexing keys: ``remote addr | local addr | remote port |
local port`` (ports 16-bit big-endian).
"""

from __future__ import annotations

from _blake2 import blake2s  # = hashlib.blake2s; hashlib would load OpenSSL's libcrypto (~0.5 MB)
from collections.abc import Container

__all__ = ["FIRST_PORT", "ISN_CLOCK_HZ", "LAST_PORT", "NoFreePort", "PortChooser"]

FIRST_PORT, LAST_PORT = 1024, 65535
"""The ephemeral range: every port above the well-known ones (RFC 6056 3.2)."""
TABLE = 4096
"""Counters of Algorithm 4's table; destinations that hash to one counter share its
progress (RFC 6056 suggests a few thousand)."""
HORIZON = 120.0
ISN_CLOCK_HZ = 250_000
"""RFC 6528's M: one tick per 4 microseconds."""
_M32 = 0xFFFFFFFF


class NoFreePort(Exception):
    """Every port toward one destination is open or closed too recently to reuse."""


class PortChooser:
    def __init__(self, secret: bytes, *, horizon: float = HORIZON, first: int = FIRST_PORT,
                 last: int = LAST_PORT) -> None:
        if len(secret) < 16:
            raise ValueError("the secret needs at least 16 bytes")
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        self._port_key = secret[:16]
        self._isn_key = secret[16:32] if len(secret) >= 32 else blake2s(secret, digest_size=16).digest()
        self.horizon = horizon
        self.first, self.count = first, last - first + 1
        self._table = [0] * TABLE
        self._recent: dict[bytes, float] = {}
        """4-tuple key -> when its connection closed; insertion order is closing order."""

    def choose(self, prefix: bytes, in_use: Container[bytes], reserved: Container[int], now: float) -> int:
        """A local port for a new connection whose key starts with ``prefix`` (remote addr |
        local addr | remote port). Raises `NoFreePort`."""
        self._expire(now)
        digest = blake2s(prefix, key=self._port_key, digest_size=8).digest()
        offset = int.from_bytes(digest[:4], "big")
        index = int.from_bytes(digest[4:], "big") % TABLE
        table, recent, first, count = self._table, self._recent, self.first, self.count
        for _ in range(count):
            port = first + (offset + table[index]) % count
            table[index] += 1
            key = prefix + port.to_bytes(2, "big")
            if key not in in_use and key not in recent and port not in reserved:
                return port
        raise NoFreePort(f"all {count} local ports toward this destination are in use or closed "
                         f"within the last {self.horizon:.0f} s")

    def closed(self, key: bytes, now: float) -> None:
        """The connection on ``key`` is gone: keep its 4-tuple out of use for ``horizon``."""
        self._recent.pop(key, None)
        self._recent[key] = now
        self._expire(now)

    def recently_closed(self) -> int:
        return len(self._recent)

    def _expire(self, now: float) -> None:
        recent = self._recent
        limit = now - self.horizon
        while recent:
            key = next(iter(recent))
            if recent[key] > limit:
                break
            del recent[key]

    def isn(self, key: bytes, now: float) -> int:
        """The initial sequence number for a connection on ``key`` (RFC 6528)."""
        f = int.from_bytes(blake2s(key, key=self._isn_key, digest_size=4).digest(), "big")
        return (int(now * ISN_CLOCK_HZ) + f) & _M32
