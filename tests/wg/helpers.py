"""Shared helpers for the WireGuard tests: deterministic randomness and a wire between two
Devices."""

from __future__ import annotations

import hashlib

from sunbeam.shared.proto.wireguard import Decapsulated, Device


class DetRandom:
    """A reproducible ``random_bytes``: BLAKE2s(seed || counter) blocks; records each draw."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2s(self.seed + self.counter.to_bytes(8, "little")).digest()
            self.counter += 1
        self.draws.append(out[:n])
        return out[:n]


def key(label: str) -> bytes:
    return hashlib.blake2s(label.encode()).digest()


def deliver(dst: Device, messages: list[bytes], now: float, **kw) -> list[Decapsulated]:
    return [dst.decapsulate(m, now, **kw) for m in messages]


def converse(a: Device, b: Device, from_a: list[bytes], now: float) -> tuple[list[bytes], list[bytes]]:
    """Deliver messages back and forth until both sides are quiet; returns the IP packets
    each side got from its tunnel: (at a, at b)."""
    at_a: list[bytes] = []
    at_b: list[bytes] = []
    pending_b, pending_a = list(from_a), []
    for _ in range(20):
        if not pending_a and not pending_b:
            return at_a, at_b
        next_a, next_b = [], []
        for res in deliver(b, pending_b, now):
            at_b.extend(res.to_tunnel)
            next_a.extend(res.to_peer)
        for res in deliver(a, pending_a, now):
            at_a.extend(res.to_tunnel)
            next_b.extend(res.to_peer)
        pending_a, pending_b = next_a, next_b
    raise AssertionError("the two devices never went quiet")


def simulate(a: Device, b: Device, now: float, until: float, to_b: list[bytes] = (),
             to_a: list[bytes] = (), drop=None) -> tuple[list[bytes], list[bytes], float]:
    """Run both devices on a lossless instant wire from ``now`` to ``until``: deliver what is
    in flight, then jump to the next timer deadline. ``drop(msg) -> bool`` may lose messages.
    Returns (IP packets at a, IP packets at b, the time reached)."""
    at_a: list[bytes] = []
    at_b: list[bytes] = []
    pending_b, pending_a = list(to_b), list(to_a)
    while True:
        for _ in range(50):
            if not pending_a and not pending_b:
                break
            next_a, next_b = [], []
            for res in deliver(b, [m for m in pending_b if not (drop and drop(m))], now):
                at_b.extend(res.to_tunnel)
                next_a.extend(res.to_peer)
            for res in deliver(a, [m for m in pending_a if not (drop and drop(m))], now):
                at_a.extend(res.to_tunnel)
                next_b.extend(res.to_peer)
            pending_a, pending_b = next_a, next_b
        else:
            raise AssertionError("the two devices never went quiet")
        due = [t for t in (a.next_timer(), b.next_timer()) if t is not None]
        if not due or min(due) > until:
            return at_a, at_b, now
        now = max(now, min(due))
        for _key, msgs in a.update_timers(now):
            pending_b.extend(msgs)
        for _key, msgs in b.update_timers(now):
            pending_a.extend(msgs)
