"""Throughput of our sans-IO TCP: two `TcpStack`s back to back in one process, no loss.

    python bench/bench_tcp.py [--mb 50] [--batch 64]

Prints:
- one-way MB/s of a bulk transfer A -> B (both stacks on this one CPU: sender, receiver,
  ACKs, checksums, the reader copying data out);
- the established fast path in µs per segment, receive side (``receive`` of in-order
  1240-byte data segments in batches, IPv4 and TCP checksum included, plus the one stretch
  ACK per batch and ``read``) and send side (``receive`` of the ACKs plus ``poll``
  building the data segments). Both replay a recorded transfer into fresh stacks made with
  the same seeds, so only the measured side runs;
- the checksum alone (``segment.data_sum`` of 1240 bytes), for scale.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from sunbeam.shared.proto.ip.wordsums import load_numpy
from sunbeam.shared.proto.tcp import ConnectionRequest, TcpStack
from sunbeam.shared.proto.tcp.segment import data_sum

A, B = "10.0.0.1", "10.0.0.2"


def _stack(addr: str, seed: int) -> TcpStack:
    s = TcpStack(random_bytes=random.Random(seed).randbytes)
    s.set_local_addresses([addr])
    return s


def _transfer(size: int, batch: int, record: bool):
    """A sends ``size`` bytes to B; returns (seconds, steps) where each step is
    (now, packets A -> B, packets B -> A) when recording."""
    a, b = _stack(A, 1), _stack(B, 2)
    b.listen(80)
    now = 0.0
    cid = a.connect(A, (B, 80), now)
    data = os.urandom(size)
    sent = got = 0
    server = None
    steps = []
    to_b: list[bytes] = []
    t0 = time.perf_counter()
    while got < size:
        if sent < size:
            sent += a.send(cid, memoryview(data)[sent:sent + (1 << 18)], now)
        out = a.poll(now)
        to_b += out
        deliver, to_b = to_b[:batch], to_b[batch:]
        b.receive(deliver, now)
        for ev in b.events():
            if isinstance(ev, ConnectionRequest):
                server = ev.conn_id
                b.accept(server)
        if server is not None:
            while chunk := b.read(server, 1 << 20):
                got += len(chunk)
        acks = b.poll(now)
        a.receive(acks, now)
        a.events()
        if record:
            steps.append((now, deliver, acks))
        now += 0.0001
    return time.perf_counter() - t0, steps


def _replay_receiver(steps) -> tuple[float, int]:
    b = _stack(B, 2)
    b.listen(80)
    busy, segments, server = 0.0, 0, None
    for now, deliver, _acks in steps:
        t = time.perf_counter()
        b.receive(deliver, now)
        for ev in b.events():
            if isinstance(ev, ConnectionRequest):
                server = ev.conn_id
                b.accept(server)
        if server is not None:
            while b.read(server, 1 << 20):
                pass
        b.poll(now)
        busy += time.perf_counter() - t
        segments += sum(1 for p in deliver if len(p) > 100)
    assert b.counters["out_of_order"] == 0, "the replay must stay in order"
    return busy, segments


def _replay_sender(steps, size: int) -> tuple[float, int]:
    a = _stack(A, 1)
    now0 = steps[0][0]
    cid = a.connect(A, (B, 80), now0)
    data = os.urandom(size)
    sent, busy, segments = 0, 0.0, 0
    for now, _deliver, acks in steps:
        if sent < size:
            sent += a.send(cid, memoryview(data)[sent:sent + (1 << 18)], now)
        t = time.perf_counter()
        out = a.poll(now)
        a.receive(acks, now)
        busy += time.perf_counter() - t
        a.events()
        segments += sum(1 for p in out if len(p) > 100)
    assert a.counters["retransmit"] == 0, "the replay must be the recorded transfer"
    return busy, segments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    load_numpy()  # as the proxy has once its first bulk batch asked for it
    size = args.mb * 1_000_000
    seconds, _ = _transfer(size, args.batch, record=False)
    print(f"bulk A -> B, {args.mb} MB, batch {args.batch}: {size / seconds / 1e6:.1f} MB/s one way "
          f"(both stacks on one CPU)")
    _, steps = _transfer(min(size, 20_000_000), args.batch, record=True)
    busy, n = _replay_receiver(steps)
    print(f"receive fast path: {busy / n * 1e6:.2f} µs/segment ({n} segments; checksums, stretch ACK, read)")
    busy, n = _replay_sender(steps, min(size, 20_000_000))
    print(f"send path:         {busy / n * 1e6:.2f} µs/segment ({n} segments; ACK processing, build, checksums)")
    payload = os.urandom(1240)
    k = 200_000
    t = time.perf_counter()
    for _ in range(k):
        data_sum(payload)
    print(f"checksum alone:    {(time.perf_counter() - t) / k * 1e6:.2f} µs per 1240 bytes")


if __name__ == "__main__":
    main()
