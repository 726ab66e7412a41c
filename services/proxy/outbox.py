"""`WgOutbox`: IP packets from the proxy to the WireGuard worker owning each peer.

Socket: one PUSH per worker k, connected lazily (on the first packet for one of its
peers) to ``ipc://<rundir>/wg-<k>-in.sock``; messages ``ToPeer(peer_key, packets)``
(`WG_IN_CODEC`). Packets are batched per peer and flushed at the end of every loop
iteration (a full batch goes out at once); a send that finds the worker's queue full
(``DATA_HWM`` messages, shared/channels.py) is dropped and counted in ``wg_in.dropped``
(packets).

Ownership: the proxy's loop thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq
from sunbeam.shared.channels import WG_IN
from sunbeam.shared.messages.dataplane import MAX_PACKET_BYTES, WG_IN_CODEC, ToPeer
from sunbeam.shared.proto.tcp.bulk import Burst
from sunbeam.shared.runtime import (
    Batcher,
    Counters,
    ServiceLoop,
)
from sunbeam.shared.sharding import owner

__all__ = ["WgOutbox"]


def _to_peer(key: bytes, packets: list[bytes], segments: list[int]) -> ToPeer:
    return ToPeer(peer_key=key, packets=packets, segments=segments if any(segments) else [])


class WgOutbox:
    def __init__(self, loop: ServiceLoop, rundir: Path, workers: int, counters: Counters) -> None:
        self.loop = loop
        self.rundir = rundir
        self.workers = workers
        self.counters = counters
        self._socks: dict[int, zmq.Socket[Any]] = {}
        self._batcher: Batcher[bytes] = Batcher(WG_IN_CODEC, _to_peer, segmented=True)
        loop.on_iteration_end(self.flush)

    def add(self, peer_key: bytes, packet: bytes) -> None:
        full = self._batcher.add(peer_key, packet)
        if full is not None:
            self._send(full.dest, full.data, full.packets)

    def add_many(self, peer_key: bytes, packets: list[bytes]) -> None:
        for full in self._batcher.add_many(peer_key, packets):
            self._send(full.dest, full.data, full.packets)

    def add_burst(self, peer_key: bytes, burst: Burst) -> None:
        data, size = burst.data, burst.size
        step = MAX_PACKET_BYTES // size * size
        for i in range(0, len(data), step):
            entry = data[i:i + step]
            full = self._batcher.add(peer_key, entry, size, len(entry) // size)
            if full is not None:
                self._send(full.dest, full.data, full.packets)

    def flush(self) -> None:
        for batch in self._batcher.flush():
            self._send(batch.dest, batch.data, batch.packets)

    def _send(self, peer_key: bytes, data: bytes, packets: int) -> None:
        sock = self._socket(owner(peer_key, self.workers))
        if WG_IN.send_encoded(sock, data, self.counters, weight=packets):
            self.counters.incr("wg_sent_packets", packets)

    def _socket(self, worker: int) -> zmq.Socket[Any]:
        sock = self._socks.get(worker)
        if sock is None:
            sock = self._socks[worker] = WG_IN.connect(self.loop, self.rundir, k=worker)
        return sock
