"""Test harness pieces: an impairing link (seeded loss / reordering / duplication) and two
`TcpStack`s wired back to back through a pair of them, with a simulated clock."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from sunbeam.shared.proto.tcp import (
    Closed,
    Connected,
    ConnectionRequest,
    PeerFinished,
    Readable,
    Reset,
    TcpStack,
)


class Impairer:
    """Drops, duplicates and holds back packets, seeded.

    A held packet is released after 1..``max_hold`` later packets have passed (reordering);
    `flush` releases everything (when traffic pauses)."""

    def __init__(self, seed: int, *, loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0,
                 max_hold: int = 5) -> None:
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder, self.max_hold = loss, dup, reorder, max_hold
        self.held: list[list] = []  # [countdown, packet]
        self.stats = {"in": 0, "lost": 0, "duplicated": 0, "reordered": 0}

    def __call__(self, packets: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        rng = self.rng
        for p in packets:
            self.stats["in"] += 1
            if rng.random() < self.loss:
                self.stats["lost"] += 1
                continue
            copies = 2 if rng.random() < self.dup else 1
            self.stats["duplicated"] += copies - 1
            for _ in range(copies):
                if rng.random() < self.reorder:
                    self.stats["reordered"] += 1
                    self.held.append([rng.randint(1, self.max_hold), p])
                    continue
                out.append(p)
                if self.held:
                    for h in self.held:
                        h[0] -= 1
                    out.extend(h[1] for h in self.held if h[0] <= 0)
                    self.held = [h for h in self.held if h[0] > 0]
        return out

    def flush(self) -> list[bytes]:
        out = [h[1] for h in self.held]
        self.held = []
        return out


def make_stack(addr: str, seed: int, **kw) -> TcpStack:
    rng = random.Random(seed)
    stack = TcpStack(random_bytes=rng.randbytes, **kw)
    stack.set_local_addresses([addr])
    return stack


class Pair:
    """Stacks ``a`` and ``b`` joined by two impairers, on a simulated clock.

    ``delay`` is the one-way latency in ticks of ``tick`` seconds."""

    def __init__(self, a: TcpStack, b: TcpStack, a_to_b: Impairer | None = None, b_to_a: Impairer | None = None,
                 *, tick: float = 0.001, delay: int = 1) -> None:
        self.a, self.b = a, b
        self.ab = a_to_b or Impairer(0)
        self.ba = b_to_a or Impairer(0)
        self.now = 0.0
        self.tick = tick
        self.delay = delay
        self.pipe_ab: list[list[bytes]] = [[] for _ in range(delay)]
        self.pipe_ba: list[list[bytes]] = [[] for _ in range(delay)]
        self.events: dict[str, list] = {"a": [], "b": []}
        self.on_event: Callable | None = None

    def step(self) -> int:
        """One tick: deliver what arrives now, run timers, transmit. Returns packets moved."""
        now = self.now
        moved = 0
        for stack, pipe, side in ((self.b, self.pipe_ab, "b"), (self.a, self.pipe_ba, "a")):
            arriving = pipe.pop(0)
            pipe.append([])
            if arriving:
                stack.receive(arriving, now)
                moved += len(arriving)
            t = stack.next_timer()
            if t is not None and t <= now:
                stack.handle_timer(now)
            for ev in stack.events():
                self.events[side].append(ev)
                if self.on_event is not None:
                    self.on_event(side, ev)
        for stack, pipe, imp in ((self.a, self.pipe_ab, self.ab), (self.b, self.pipe_ba, self.ba)):
            out = stack.poll(now)
            out = imp(out) if out else imp.flush()
            pipe[-1].extend(out)
            moved += len(out)
        self.now = now + self.tick
        return moved


class Transfer:
    """One connection a -> b (a connects to b's listening port), data both ways, then both
    shut down; checks every byte by sha256."""

    def __init__(self, pair: Pair, addr_b: str, port: int, a_data: bytes, b_data: bytes, *,
                 chunk: int = 1 << 16, src_a: str | None = None) -> None:
        self.pair = pair
        pair.b.listen(port)
        self.a_data, self.b_data = a_data, b_data
        self.sent = {"a": 0, "b": 0}
        self.got = {"a": bytearray(), "b": bytearray()}
        self.eof = {"a": False, "b": False}
        self.closed = {"a": False, "b": False}
        self.shut = {"a": False, "b": False}
        self.resets: list = []
        self.chunk = chunk
        self.ids = {"a": pair.a.connect(src_a, (addr_b, port), pair.now), "b": None}
        pair.on_event = self._event

    def _stack(self, side: str) -> TcpStack:
        return self.pair.a if side == "a" else self.pair.b

    def _event(self, side: str, ev) -> None:
        stack = self._stack(side)
        if isinstance(ev, ConnectionRequest):
            self.ids["b"] = ev.conn_id
            stack.accept(ev.conn_id)
        elif isinstance(ev, Readable):
            pass
        elif isinstance(ev, PeerFinished):
            self.eof[side] = True
        elif isinstance(ev, Reset):
            self.resets.append((side, ev))
        elif isinstance(ev, Closed):
            self.closed[side] = True
        elif isinstance(ev, Connected):
            pass

    def _pump(self, side: str) -> None:
        cid = self.ids[side]
        if cid is None:
            return
        stack = self._stack(side)
        while True:
            d = stack.read(cid, 1 << 20)
            if not d:
                break
            self.got[side] += d
        data = self.a_data if side == "a" else self.b_data
        s = self.sent[side]
        if s <= len(data) and not self.shut[side]:
            s += stack.send(cid, memoryview(data)[s:s + self.chunk], self.pair.now)
            self.sent[side] = s
            if s == len(data):
                stack.shutdown(cid, self.pair.now)
                self.shut[side] = True

    def run(self, max_seconds: float = 600.0) -> None:
        pair = self.pair
        while pair.now < max_seconds:
            self._pump("a")
            self._pump("b")
            pair.step()
            if self.closed["a"] and self.closed["b"] or self.resets:
                break
        assert not self.resets, self.resets
        assert self.closed["a"] and self.closed["b"], (pair.now, pair.a.info(self.ids["a"]), pair.b.info(self.ids["b"]))

    def check(self) -> None:
        assert self.eof["a"] and self.eof["b"]
        assert len(self.got["b"]) == len(self.a_data) and len(self.got["a"]) == len(self.b_data)
        assert hashlib.sha256(self.got["b"]).digest() == hashlib.sha256(self.a_data).digest()
        assert hashlib.sha256(self.got["a"]).digest() == hashlib.sha256(self.b_data).digest()
