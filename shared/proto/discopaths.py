"""Which way to reach each peer: disco pings, pongs, CallMeMaybe, trust (sans-IO).

After tailscaled's magicsock endpoint (ts:wgengine/magicsock/endpoint.go): data goes to a
peer over a direct UDP address only while a pong to one of OUR pings from that address
is fresh (TRUST = 6.5 s); otherwise over DERP. While the peer is in use (`want` within
ACTIVE = 45 s) the trusted address is re-pinged every HEARTBEAT (3 s), and a heartbeat
still unanswered after HEARTBEAT_RETRY (1 s) is sent again, so a lost or late pong or two
(a loaded box, a busy socket) do not cost a working path, and trust still lapses within
6.5 s of the path ceasing to answer (``path_lapsed``). When the peer is no longer in use,
heartbeats stop and trust runs out on its own (``path_idle``: no update; the worker's
``until`` has passed), and the next `want` probes afresh. Without a
trusted path every candidate address is pinged (at most once per PING_INTERVAL each) and
a CallMeMaybe listing our own endpoints goes over DERP so the peer pings us too (that is
how two NATed nodes punch through). Candidates: the peer's netmap endpoints, the
endpoints of its CallMeMaybe, and the source of a ping it sent us over UDP.

Among pongs, the lowest round trip wins; a lower one replaces the current address only by
a clear margin (BETTER_BY), as tailscaled's betterAddr does, so paths do not flap.

    core = DiscoPaths(our_node_key, random_bytes)
    core.set_peers(peers, now)                 -> Output (paths of removed peers end)
    core.set_our_endpoints(["ip:port", ...])
    core.want(node_key, now)                   -> Output   data wants a path to this peer
    core.on_ping(disco_key, src, now)          -> Output   a ping arrived over UDP from src
    core.on_pong(disco_key, pong, src, now)    -> Output   a pong arrived over UDP from src
    core.on_call_me_maybe(disco_key, cmm, now) -> Output
    core.tick(now) / core.next_timer()         -> Output   heartbeats, timeouts, lapses

`Output.send`: disco messages the shell seals to ``disco_key`` and sends to ``udp`` (an
``ip:port``) or, with ``udp=None``, over DERP to the peer's home region.
`Output.paths`: `PathUpdate(node_key, addr, until, was)` -- the trusted direct address and
its deadline, or ``addr=""`` for "DERP only", and the trusted address before it (``was ==
addr`` for a renewal); published to the worker that owns the peer.
Each pong that renews trust yields an update with the new deadline, so a worker that
misses the lapse (say, the udp service was killed) still falls back at ``until``.

No sockets, no clock, no randomness of its own (txids come from ``random_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import msgspec

from .disco import CallMeMaybe, Message, Ping, Pong

TRUST = 6.5  # trustUDPAddrDuration
HEARTBEAT = 3.0  # heartbeatInterval
HEARTBEAT_RETRY = 1.0  # an unanswered heartbeat goes again this soon (tailscaled has no such retry)
ACTIVE = 45.0  # sessionActiveTimeout
PING_INTERVAL = 5.0  # discoPingInterval: per candidate address, without a trusted path
PING_TIMEOUT = 5.0  # pingTimeoutDuration
BETTER_BY = 0.9  # a new address must be 10 % faster to replace the current one
MAX_CANDIDATES = 32  # per peer: the netmap's plus those learned (oldest learned dropped)
MAX_PINGS = 64  # outstanding per peer


class PeerInfo(NamedTuple):
    node_key: bytes
    disco_key: bytes
    endpoints: tuple[str, ...]


class Send(NamedTuple):
    node_key: bytes
    disco_key: bytes
    message: Message
    udp: str | None
    """``ip:port``; None: over DERP (the peer's home region)."""


class PathUpdate(NamedTuple):
    node_key: bytes
    addr: str
    """The trusted direct ``ip:port``; "" when only DERP is left."""
    until: float
    """Trust deadline (0 with ``addr=""``)."""
    was: str = ""
    """The address trusted until now ("" for none): equal to ``addr`` when trust was renewed."""


class Output(msgspec.Struct):
    send: list[Send] = msgspec.field(default_factory=list)
    paths: list[PathUpdate] = msgspec.field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.send += other.send
        self.paths += other.paths


class _Peer(msgspec.Struct):
    info: PeerInfo
    learned: dict[str, float] = msgspec.field(default_factory=dict)  # addr -> when learned
    pings: dict[bytes, tuple[str, float]] = msgspec.field(default_factory=dict)  # txid -> (addr, sent)
    last_ping: dict[str, float] = msgspec.field(default_factory=dict)  # addr -> last ping sent
    best: str = ""
    best_rtt: float = 0.0
    trust_until: float = 0.0
    active_until: float = 0.0
    last_heartbeat: float = 0.0
    last_pong: float = 0.0  # the last pong that renewed trust
    last_call_me_maybe: float = 0.0

    def candidates(self) -> list[str]:
        out = list(self.info.endpoints)
        out += [a for a in self.learned if a not in out]
        return out[:MAX_CANDIDATES]

    def trusted(self, now: float) -> bool:
        return bool(self.best) and now < self.trust_until

    def heartbeat_due(self) -> float:
        unanswered = self.last_heartbeat > self.last_pong
        return self.last_heartbeat + (HEARTBEAT_RETRY if unanswered else HEARTBEAT)

    def probe_due(self) -> float:
        """When `_probe` next has something to send (while the peer is in use)."""
        if self.best:
            return self.heartbeat_due()
        return min((self.last_ping.get(a, 0.0) for a in self.candidates()), default=0.0) + PING_INTERVAL


class DiscoPaths:
    def __init__(self, our_node_key: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self._our_key = our_node_key
        self._random = random_bytes
        self._peers: dict[bytes, _Peer] = {}
        self._by_disco: dict[bytes, bytes] = {}
        self._our_endpoints: tuple[str, ...] = ()
        self.counters: dict[str, int] = {}

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- configuration -------------------------------------------------------------------

    def set_peers(self, peers: list[PeerInfo], now: float) -> Output:
        out = Output()
        wanted = {p.node_key: p for p in peers}
        for key in [k for k in self._peers if k not in wanted]:
            gone = self._peers.pop(key)
            if gone.best:
                out.paths.append(PathUpdate(key, "", 0.0, gone.best))
        for key, info in wanted.items():
            peer = self._peers.get(key)
            if peer is None:
                self._peers[key] = _Peer(info)
            elif peer.info.disco_key != info.disco_key:  # a new disco key: a restarted peer
                self._peers[key] = _Peer(info, active_until=peer.active_until)
                if peer.best:
                    out.paths.append(PathUpdate(key, "", 0.0, peer.best))
            else:
                peer.info = info
        self._by_disco = {p.info.disco_key: k for k, p in self._peers.items()}
        return out

    def set_our_endpoints(self, endpoints: list[str]) -> None:
        self._our_endpoints = tuple(endpoints)

    def path(self, node_key: bytes, now: float) -> str:
        peer = self._peers.get(node_key)
        return peer.best if peer is not None and peer.trusted(now) else ""

    def describe(self, node_key: bytes, now: float) -> dict[str, object]:
        """One peer's path state, ages in seconds before ``now`` (for logs)."""
        peer = self._peers.get(node_key)
        if peer is None:
            return {}
        return {
            "best": peer.best, "rtt_ms": round(peer.best_rtt * 1000, 1), "trust_left": round(peer.trust_until - now, 3),
            "since_pong": round(now - peer.last_pong, 3), "since_heartbeat": round(now - peer.last_heartbeat, 3),
            "active_left": round(max(0.0, peer.active_until - now), 3),
            "pings": sorted((addr, round(now - at, 3)) for addr, at in peer.pings.values()),
        }

    # -- events ------------------------------------------------------------------------

    def want(self, node_key: bytes, now: float) -> Output:
        peer = self._peers.get(node_key)
        if peer is None:
            return Output()
        peer.active_until = now + ACTIVE
        return self._probe(peer, now)

    def on_ping(self, disco_key: bytes, src: str, now: float) -> Output:
        """A ping from ``src`` (UDP): the caller answers it; we learn ``src`` as a candidate."""
        peer = self._peer_by_disco(disco_key)
        if peer is None:
            return Output()
        self._learn(peer, src, now)
        if peer.trusted(now) or now - peer.last_ping.get(src, -PING_INTERVAL) < PING_INTERVAL:
            return Output()
        out = Output()
        self._ping(peer, src, now, out)  # ping back: our own pong is what makes it usable
        return out

    def on_pong(self, disco_key: bytes, pong: Pong, src: str, now: float) -> Output:
        peer = self._peer_by_disco(disco_key)
        if peer is None:
            return Output()
        sent = peer.pings.pop(pong.txid, None)
        if sent is None:
            self._count("pong_unknown_txid")
            return Output()
        addr, at = sent
        if addr != src:
            self._count("pong_wrong_source")
            return Output()
        rtt = now - at
        self._count("pong_matched")
        out = Output()
        if addr == peer.best or not peer.trusted(now) or rtt < peer.best_rtt * BETTER_BY:
            was = peer.best if peer.trusted(now) else ""
            changed = addr != was
            peer.best, peer.best_rtt, peer.trust_until, peer.last_pong = addr, rtt, now + TRUST, now
            if changed:
                peer.last_heartbeat = now  # the next heartbeat is due HEARTBEAT from here
                self._count("path_direct")
            out.paths.append(PathUpdate(peer.info.node_key, addr, peer.trust_until, was))
        return out

    def on_call_me_maybe(self, disco_key: bytes, cmm: CallMeMaybe, now: float) -> Output:
        peer = self._peer_by_disco(disco_key)
        if peer is None:
            return Output()
        for addr in cmm.endpoints:
            self._learn(peer, addr, now)
        out = Output()
        for addr in cmm.endpoints[:MAX_CANDIDATES]:  # the peer is pinging us now: ping back at once
            if now - peer.last_ping.get(addr, -PING_INTERVAL) >= 0.5:
                self._ping(peer, addr, now, out)
        return out

    def tick(self, now: float) -> Output:
        out = Output()
        for peer in self._peers.values():
            # deadlines compared as next_timer computes them (at + T), so that a tick at
            # exactly that time acts instead of finding the float difference a hair short
            for txid in [t for t, (_, at) in peer.pings.items() if now >= at + PING_TIMEOUT]:
                del peer.pings[txid]
                self._count("ping_timeout")
            if peer.best and now >= peer.trust_until:
                was, peer.best, peer.best_rtt = peer.best, "", 0.0
                if now < peer.active_until or peer.last_heartbeat > peer.last_pong:
                    self._count("path_lapsed")  # in use, or pinged: it stopped answering
                    out.paths.append(PathUpdate(peer.info.node_key, "", 0.0, was))
                else:
                    self._count("path_idle")  # nobody asked it to stay: no heartbeats
            if now < peer.active_until:
                out.extend(self._probe(peer, now))
            else:
                peer.active_until = 0.0  # the session is over: next_timer keeps none of its deadlines
        return out

    def next_timer(self) -> float | None:
        times: list[float] = []
        for peer in self._peers.values():
            if peer.best:
                times.append(peer.trust_until)
            if peer.pings:
                times.append(min(at for _, at in peer.pings.values()) + PING_TIMEOUT)
            if peer.best or peer.candidates():
                due = peer.probe_due()
                if due < peer.active_until:  # else the session is over by then: nothing to probe
                    times.append(due)
        return min(times) if times else None

    # -- internals ---------------------------------------------------------------------

    def _peer_by_disco(self, disco_key: bytes) -> _Peer | None:
        key = self._by_disco.get(disco_key)
        if key is None:
            self._count("unknown_disco_key")
            return None
        return self._peers[key]

    def _learn(self, peer: _Peer, addr: str, now: float) -> None:
        if addr in peer.info.endpoints:
            return
        peer.learned[addr] = now
        while len(peer.learned) > MAX_CANDIDATES:
            peer.learned.pop(next(iter(peer.learned)))

    def _probe(self, peer: _Peer, now: float) -> Output:
        out = Output()
        if peer.trusted(now):
            if now >= peer.heartbeat_due():
                peer.last_heartbeat = now
                self._ping(peer, peer.best, now, out)
            return out
        pinged = False
        for addr in peer.candidates():
            if now >= peer.last_ping.get(addr, -PING_INTERVAL) + PING_INTERVAL:
                self._ping(peer, addr, now, out)
                pinged = True
        if pinged and self._our_endpoints and now - peer.last_call_me_maybe >= PING_INTERVAL:
            peer.last_call_me_maybe = now
            out.send.append(Send(peer.info.node_key, peer.info.disco_key, CallMeMaybe(self._our_endpoints), None))
            self._count("call_me_maybe_sent")
        return out

    def _ping(self, peer: _Peer, addr: str, now: float, out: Output) -> None:
        if len(peer.pings) >= MAX_PINGS:
            oldest = min(peer.pings, key=lambda t: peer.pings[t][1])
            del peer.pings[oldest]
        txid = self._random(12)
        peer.pings[txid] = (addr, now)
        peer.last_ping[addr] = now
        if len(peer.last_ping) > 2 * MAX_CANDIDATES:
            keep = set(peer.candidates())
            peer.last_ping = {a: t for a, t in peer.last_ping.items() if a in keep}
        out.send.append(Send(peer.info.node_key, peer.info.disco_key, Ping(txid, self._our_key), addr))
        self._count("ping_sent")
