"""Crypto-stage throughput: WireGuard encrypt+decrypt packets/s with 1 and with 2 workers.

Each worker is a separate process owning its own peer pair (as sunbeam's wg workers own
their peers): two `Device`s back to back, handshake done, then timed rounds of
encapsulate (sender) + decapsulate (receiver) of 1400-byte packets in batches of 64.
The figure is the sum over workers of packets/s; the ratio 2-workers / 1-worker shows how
the crypto stage scales across cores (this machine has 2).

    python bench/bench_wg_workers.py [--seconds 3] [--size 1400] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

from sunbeam.shared.keys import public_from_private
from sunbeam.shared.proto.wireguard import Device

BATCH = 64


def _pair(worker: int):
    a_priv, b_priv = os.urandom(32), os.urandom(32)
    a = Device(private_key=a_priv, worker=worker, random_bytes=os.urandom)
    b = Device(private_key=b_priv, worker=worker, random_bytes=os.urandom)
    a_pub, b_pub = public_from_private(a_priv), public_from_private(b_priv)
    a.set_peer(b_pub, ["10.0.0.2/32"])
    b.set_peer(a_pub, ["10.0.0.1/32"])
    now = time.time()
    # handshake: a's first packet is staged behind an initiation; exchange until it arrives
    pending = a.encapsulate(b_pub, [_packet(100)], now)
    delivered = []
    for _ in range(6):
        back = []
        for m in pending:
            res = b.decapsulate(m, now)
            back += res.to_peer
            delivered += res.to_tunnel
        pending = []
        for m in back:
            pending += a.decapsulate(m, now).to_peer
        if delivered and not pending:
            break
    if not delivered:
        raise SystemExit("handshake between the benchmark's devices did not complete")
    return a, b, b_pub


def _packet(size: int) -> bytes:
    # a minimal IPv4 header from 10.0.0.1 to 10.0.0.2 so the AllowedIPs source check passes
    total = size
    hdr = bytes([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    return hdr + bytes(size - len(hdr))


def _run(worker: int, seconds: float, size: int, out) -> None:
    a, b, b_pub = _pair(worker)
    batch = [_packet(size)] * BATCH
    n = 0
    delivered = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        now = time.time()
        for res in b.decapsulate_batch(a.encapsulate(b_pub, batch, now), now):
            delivered += len(res.to_tunnel)
        n += BATCH
    elapsed = time.perf_counter() - start
    out.put((n / elapsed, delivered == n))


def measure(workers: int, seconds: float, size: int) -> float:
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_run, args=(k, seconds, size, q)) for k in range(workers)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    if not all(ok for _, ok in results):
        raise SystemExit("packets were lost in the crypto stage")
    return sum(pps for pps, _ in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    one = measure(1, args.seconds, args.size)
    two = measure(2, args.seconds, args.size)
    result = {"packet_bytes": args.size, "cores": os.cpu_count(), "one_worker_pps": round(one),
              "two_workers_pps": round(two), "ratio": round(two / one, 2),
              "one_worker_MBps": round(one * args.size / 1e6, 1), "two_workers_MBps": round(two * args.size / 1e6, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"crypto stage (encrypt+decrypt, {args.size} B packets, {os.cpu_count()} cores)")
        print(f"  1 worker : {one:10.0f} packets/s  ({result['one_worker_MBps']} MB/s)")
        print(f"  2 workers: {two:10.0f} packets/s  ({result['two_workers_MBps']} MB/s)")
        print(f"  ratio 2/1: {result['ratio']}")


if __name__ == "__main__":
    main()
