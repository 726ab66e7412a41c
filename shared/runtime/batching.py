"""Batching packets into messages, and sending without ever blocking the loop.

`Batcher`: packets are added per destination (a worker number, a peer key, ...). A
destination's batch is encoded and handed back as soon as it holds ``max_packets`` packets
or ``max_bytes`` bytes of packet data; whatever is left is handed back by `flush()`, which
the service loop calls at the end of every poll iteration. So a batch never waits longer
than one iteration, and a busy iteration produces few, large messages. Within a
destination, packet order is preserved; batches come out in the order their destination
first received a packet.

`send_bounded`: every data-plane socket has a bounded high-water mark. Sending uses
``zmq.NOBLOCK``; when the HWM is reached (or no peer is connected yet) ZeroMQ raises
``zmq.Again`` and the message is *dropped and counted* instead of stalling the loop.
Dropping is safe on the data plane: WireGuard and TCP both recover from loss.

Ownership: a `Batcher` belongs to the loop thread that calls it; so does `Counters`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

import zmq

from ..messages.codec import Codec
from ..messages.dataplane import MAX_PACKETS_PER_BATCH
from .counters import Counters

__all__ = ["Batcher", "EncodedBatch", "send_bounded"]

D = TypeVar("D", bound=Hashable)

DEFAULT_MAX_PACKETS = 128
DEFAULT_MAX_BYTES = 256 * 1024


class EncodedBatch(NamedTuple, Generic[D]):
    """One encoded message ready to send to ``dest``."""

    dest: D
    data: bytes
    packets: int
    """How many packets ``data`` carries (to count packets, not messages, on a drop); a
    GRO burst counts as the datagrams in it."""


class _Pending:
    __slots__ = ("count", "packets", "segments", "size")

    def __init__(self) -> None:
        self.packets: list[bytes | memoryview] = []
        self.segments: list[int] = []
        self.size = 0
        self.count = 0


class Batcher(Generic[D]):
    """Accumulates packets per destination; encodes them with ``make_message``.

    ``make_message(dest, packets)`` builds the Struct (e.g. ``lambda key, p:
    FromPeer(peer_key=key, packets=p)``); ``codec`` encodes it. A batcher made with
    ``segmented=True`` takes entries that may be many packets (``add(..., segment=size,
    count=n)``, a GRO burst) and calls ``make_message(dest, packets, segments)`` with a
    segment size per entry (0: one packet).
    """

    def __init__(
        self,
        codec: Codec[Any],
        make_message: Callable[..., Any],
        *,
        max_packets: int = DEFAULT_MAX_PACKETS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segmented: bool = False,
    ) -> None:
        if not 1 <= max_packets <= MAX_PACKETS_PER_BATCH:
            raise ValueError(f"max_packets must be in 1..{MAX_PACKETS_PER_BATCH}")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._codec = codec
        self._make_message = make_message
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.segmented = segmented
        self._pending: dict[D, _Pending] = {}  # owned by the loop thread

    def add(self, dest: D, packet: bytes | memoryview, segment: int = 0, count: int = 1) -> EncodedBatch[D] | None:
        """Queue ``packet`` (``count`` packets of ``segment`` bytes back to back, in a
        segmented batcher) for ``dest``; return ``dest``'s batch if it is now full."""
        pending = self._pending.get(dest)
        if pending is None:
            pending = self._pending[dest] = _Pending()
        pending.packets.append(packet)
        if self.segmented:
            pending.segments.append(segment)
        pending.size += len(packet)
        pending.count += count
        if len(pending.packets) >= self.max_packets or pending.size >= self.max_bytes:
            del self._pending[dest]
            return self._encode(dest, pending)
        return None

    def add_many(self, dest: D, packets: list[bytes]) -> list[EncodedBatch[D]]:
        """`add` for each of ``packets`` (single packets, also in a segmented batcher),
        without a call per packet; returns the batches that filled up, in order."""
        full: list[EncodedBatch[D]] = []
        pending = self._pending.get(dest)
        if pending is None:
            pending = self._pending[dest] = _Pending()
        queued, max_packets, max_bytes = pending.packets, self.max_packets, self.max_bytes
        segmented = self.segmented
        for packet in packets:
            queued.append(packet)
            if segmented:
                pending.segments.append(0)
            pending.size += len(packet)
            pending.count += 1
            if len(queued) >= max_packets or pending.size >= max_bytes:
                full.append(self._encode(dest, pending))
                pending = self._pending[dest] = _Pending()
                queued = pending.packets
        if not queued:
            del self._pending[dest]
        return full

    def flush(self) -> list[EncodedBatch[D]]:
        """Encode and return every non-empty batch, emptying the batcher."""
        pending, self._pending = self._pending, {}
        return [self._encode(dest, p) for dest, p in pending.items()]

    @property
    def pending_packets(self) -> int:
        return sum(p.count for p in self._pending.values())

    def _encode(self, dest: D, pending: _Pending) -> EncodedBatch[D]:
        if self.segmented:
            message = self._make_message(dest, pending.packets, pending.segments)  # type: ignore[call-arg]
        else:
            message = self._make_message(dest, pending.packets)
        return EncodedBatch(dest, self._codec.encode(message), pending.count)


def send_bounded(
    sock: zmq.Socket[Any],
    data: bytes,
    counters: Counters,
    *,
    counter: str = "send_dropped",
    weight: int = 1,
) -> bool:
    """Send ``data`` without blocking; on a full HWM add ``weight`` to ``counter``.

    Returns True if ZeroMQ queued the message. Pass ``weight=batch.packets`` to count
    dropped packets rather than dropped messages. Other ZeroMQ errors propagate: they are
    our bugs (wrong socket type or state), not back-pressure.
    """
    try:
        sock.send(data, zmq.NOBLOCK)
    except zmq.Again:
        counters.incr(counter, weight)
        return False
    return True
