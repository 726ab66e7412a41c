"""Throughput of the sans-IO WireGuard core on one CPU: encapsulate and decapsulate of
1400-byte IP packets between two back-to-back Devices in one process.

    python bench/bench_wg_crypto.py [--size 1400] [--batch 64] [--seconds 2]

Prints packets/s and Gbit/s (of IP payload) for: the bare ChaCha20-Poly1305 baseline (one
AEAD object, ``encrypt`` only), ``encapsulate``, ``decapsulate_batch``, ``decapsulate``
one message at a time, and a full round (encapsulate + decapsulate per packet).
``measure(...)`` returns the figures as a dict, so a multi-process driver can call it once
per worker process.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from sunbeam.shared.proto.wireguard import Device

T0 = 1_800_000_000.0


def _ipv4_udp(size: int, seq: int) -> bytes:
    payload = struct.pack("!I", seq) + bytes(size - 28 - 4)
    udp = struct.pack("!HHHH", 4000, 5000, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    return header + udp


def _pair() -> tuple[Device, Device]:
    a = Device(private_key=os.urandom(32), worker=0, random_bytes=os.urandom)
    b = Device(private_key=os.urandom(32), worker=1, random_bytes=os.urandom)
    a.set_peer(b.public_key, ["10.0.0.2/32"])
    b.set_peer(a.public_key, ["10.0.0.1/32"])
    pending, to_a = a.encapsulate(b.public_key, [_ipv4_udp(100, 0)], T0), True
    while pending:  # handshake
        nxt = []
        for m in pending:
            nxt.extend((b if to_a else a).decapsulate(m, T0).to_peer)
        pending, to_a = nxt, not to_a
    return a, b


def _rate(fn, packets_per_call: int, seconds: float, prepare=None) -> float:
    """Packets/s of ``fn``, timing only ``fn`` (``prepare()``'s result is its argument)."""
    n, busy = 0, 0.0
    while busy < seconds:
        arg = prepare() if prepare is not None else None
        t = time.perf_counter()
        fn(arg)
        busy += time.perf_counter() - t
        n += packets_per_call
    return n / busy


def measure(size: int = 1400, batch: int = 64, seconds: float = 2.0) -> dict[str, float]:
    a, b = _pair()
    packets = [_ipv4_udp(size, i) for i in range(batch)]  # B -> A, source 10.0.0.2
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    clock = [T0]

    def tick() -> float:
        clock[0] += 1e-6
        return clock[0]

    def baseline(_):
        enc = aead.encrypt
        for p in packets:
            enc(nonce, p, None)

    def encap(_):
        b.encapsulate(a.public_key, packets, tick())

    def sealed():  # fresh counters for every decapsulation round (untimed)
        return b.encapsulate(a.public_key, packets, tick())

    def decap_batch(msgs):
        results = a.decapsulate_batch(msgs, tick())
        assert len(results[0].to_tunnel) == batch, results[0].error

    def decap_single(msgs):
        now = tick()
        for m in msgs:
            a.decapsulate(m, now)

    def round_trip(_):
        now = tick()
        results = a.decapsulate_batch(b.encapsulate(a.public_key, packets, now), now)
        assert len(results[0].to_tunnel) == batch

    return {
        "aead_baseline": _rate(baseline, batch, seconds),
        "encapsulate": _rate(encap, batch, seconds),
        "decapsulate_batch": _rate(decap_batch, batch, seconds, sealed),
        "decapsulate_single": _rate(decap_single, batch, seconds, sealed),
        "round_trip": _rate(round_trip, batch, seconds),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    print(f"sunbeam WireGuard core, one process, {args.size}-byte packets, batches of {args.batch} "
          f"(Python {sys.version.split()[0]})")
    for name, pps in measure(args.size, args.batch, args.seconds).items():
        gbps = pps * args.size * 8 / 1e9
        print(f"  {name:20s} {pps:12,.0f} packets/s  {gbps:6.2f} Gbit/s  {1e6 / pps:6.2f} us/packet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
