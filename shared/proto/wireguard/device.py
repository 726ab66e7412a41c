"""A sans-IO WireGuard device for the peers one worker owns (after boringtun's
``Tunn::encapsulate / decapsulate / update_timers`` and wireguard-go ``device/``).

Bytes and ``now`` in, bytes out: no sockets, no clock, no randomness of its own
(``random_bytes`` is passed in). ``now`` is monotonic seconds (the service loop's clock): it
drives every timer and ``last_handshake``, so a wall-clock step (NTP, a suspended laptop's
RTC) neither fires nor stalls rekeys and keepalives. The one wall-clock reading WireGuard
needs, the TAI64N timestamp in an initiation (the responder's replay guard), comes from
``wall_clock`` (default: ``now`` itself, for tests that drive one clock).

    encapsulate(peer, ip packets, now)   -> WireGuard messages for that peer (transport; or
                                            the packets are staged and a handshake
                                            initiation is returned when one is due)
    decapsulate(message, now)            -> Decapsulated(peer_key, to_peer, to_tunnel, error)
    decapsulate_batch(messages, now)     -> one Decapsulated per peer seen, in first-seen order
    decapsulate_run(blob, size, now)     -> the same for one session's transport messages of
                                            ``size`` bytes back to back (a UDP GRO burst)
    update_timers(now) / next_timer()    -> keepalives, handshake retries, key expiry
    initiator_static(initiation, now)    -> the initiator's static key (no state change)
    route(dst)                           -> the peer whose AllowedIPs hold dst

Who owns what: the Device and every Peer, Keypair, window and timer in it belong to the one
worker process that created it; nothing here is shared or thread-safe.

Drops (peer garbage, replays, expired sessions, ...) are counted in ``counters`` under the
reason returned as ``Decapsulated.error``; they never raise. A ``Decapsulated`` with
``peer_key=None`` and a non-empty ``to_peer`` holds a cookie reply: send it back to the
address the message came from (the ``src`` given). ``src`` is any bytes naming that address
(e.g. packed IP and port); it only feeds the cookie of the under-load mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from sunbeam.shared.sharding import make_index

from .allowedips import AllowedIPs
from .cookie import CookieChecker
from .messages import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    message_type,
)
from .noise import KEY_LEN, StaticIdentity, open_initiation
from .peer import Peer
from .receive import ReceiveMixin
from .replay import REJECT_AFTER_MESSAGES
from .session import IndexTable
from .timers import REJECT_AFTER_TIME

MAX_STAGED = 1024  # packets queued per peer while there is no session; oldest dropped first


class Decapsulated(NamedTuple):
    peer_key: bytes | None
    """Who the message came from (None: unknown sender, or invalid before we knew)."""
    to_peer: list[bytes]
    """Messages to send back to that peer now: handshake response, cookie reply (to the
    source address when ``peer_key`` is None), staged data flushed, keepalive."""
    to_tunnel: list[bytes]
    """Decrypted IP packets whose source address is in the peer's AllowedIPs."""
    error: str | None
    """Why the message (or, in a batch, the peer's last message) was dropped; or None."""


class Device(ReceiveMixin):
    def __init__(self, *, private_key: bytes, worker: int = 0, random_bytes: Callable[[int], bytes],
                 max_staged: int = MAX_STAGED, wall_clock: Callable[[], float] | None = None) -> None:
        make_index(worker, 0)  # raises for a worker number that does not fit the index
        self._identity = StaticIdentity(private_key)
        self.public_key = self._identity.public
        self.worker = worker
        self._random = random_bytes
        self._wall_clock = wall_clock
        self._index = IndexTable(worker, random_bytes)
        self._entries = self._index.entries
        self._checker = CookieChecker(self.public_key)
        self._peers: dict[bytes, Peer] = {}
        self._allowed = AllowedIPs()
        self._src_cache: dict[bytes, Peer] = {}  # see receive._inner
        self._max_staged = max_staged
        self.counters: dict[str, int] = {}

    # -- configuration -------------------------------------------------------------------

    def set_peer(self, public_key: bytes, allowed_ips: Iterable[str]) -> None:
        """Add a peer, or replace its AllowedIPs (its sessions are kept)."""
        key = bytes(public_key)
        if len(key) != KEY_LEN:
            raise ValueError("a WireGuard public key is 32 bytes")
        if key == self.public_key:
            raise ValueError("a device cannot be its own peer")
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = Peer(self._identity, key, self._max_staged)
        self._allowed.set(peer, allowed_ips)
        self._src_cache.clear()

    def remove_peer(self, public_key: bytes) -> None:
        peer = self._peers.pop(bytes(public_key), None)
        if peer is not None:
            self._zero_and_flush(peer)
            peer.timers.stop()
            self._allowed.remove(peer)
            self._src_cache.clear()

    def peers(self) -> list[bytes]:
        return list(self._peers)

    def allowed_ips(self, public_key: bytes) -> list[str]:
        peer = self._peers.get(bytes(public_key))
        return self._allowed.entries(peer) if peer is not None else []

    def route(self, dst_ip: str | bytes) -> bytes | None:
        """Cryptokey routing: the peer whose AllowedIPs hold ``dst_ip`` (longest prefix);
        ``dst_ip`` is text or packed (4 or 16 bytes)."""
        peer = self._allowed.lookup(dst_ip)
        return peer.key if peer is not None else None

    def peer_stats(self, peer_key: bytes) -> dict:
        peer = self._peers[bytes(peer_key)]
        return {
            "last_handshake": peer.last_handshake,
            "rx_bytes": peer.rx_bytes,
            "tx_bytes": peer.tx_bytes,
            "rx_packets": peer.rx_packets,
            "tx_packets": peer.tx_packets,
            "staged": len(peer.staged),
            "session": peer.keypairs.current is not None,
        }

    # -- data path -----------------------------------------------------------------------

    def initiator_static(self, data: bytes, now: float) -> bytes | None:
        """For a type-1 message addressed to us (valid mac1, decryptable static): the
        initiator's static public key. Changes no state; ``now`` is unused."""
        if message_type(data) != MESSAGE_INITIATION or not self._checker.check_mac1(data):
            return None
        opened = open_initiation(self._identity, data)
        return opened[2] if opened is not None else None

    def encapsulate(self, peer_key: bytes, packets: Sequence[bytes | memoryview], now: float) -> list[bytes]:
        """WireGuard messages carrying ``packets`` (IP packets, bytes or views) to the peer;
        with no usable session the packets are staged (as bytes) and a handshake initiation
        returned if one is due."""
        peer = self._peers.get(peer_key)
        if peer is None:
            self._count("unknown_peer_tx", len(packets))
            return []
        if not packets:
            return []
        kp = peer.keypairs.current
        if (kp is not None and not peer.staged and now - kp.created < REJECT_AFTER_TIME
                and kp.send_counter + len(packets) <= REJECT_AFTER_MESSAGES):
            out = self._encrypt(peer, kp, packets, now)
        else:
            self._stage(peer, packets)
            out = self._send_staged(peer, now)
        self._keep_key_fresh_sending(peer, now, out)
        return out

    def decapsulate(self, data: bytes, now: float, *, under_load: bool = False,
                    src: bytes = b"") -> Decapsulated:
        """Handle one received WireGuard message (from UDP or DERP)."""
        to_peer: list[bytes] = []
        to_tunnel: list[bytes] = []
        peer, err = self._handle(data, now, under_load, src, to_peer, to_tunnel)
        return Decapsulated(peer.key if peer is not None else None, to_peer, to_tunnel, err)

    def decapsulate_batch(self, messages: Iterable[bytes], now: float, *, under_load: bool = False,
                          src: bytes = b"") -> list[Decapsulated]:
        """Many messages from one source: one result per peer (None-keyed results carry
        cookie replies for ``src``), in the order peers were first seen."""
        groups: dict[bytes | None, tuple[list[bytes], list[bytes], list[str | None]]] = {}
        to_peer: list[bytes] = []
        to_tunnel: list[bytes] = []
        handle = self._handle
        for data in messages:
            peer, err = handle(data, now, under_load, src, to_peer, to_tunnel)
            key = peer.key if peer is not None else None
            g = groups.get(key)
            if g is None:
                g = groups[key] = ([], [], [None])
            if to_peer:
                g[0].extend(to_peer)
                to_peer.clear()
            if to_tunnel:
                g[1].extend(to_tunnel)
                to_tunnel.clear()
            if err is not None:
                g[2][0] = err
        return [Decapsulated(k, g[0], g[1], g[2][0]) for k, g in groups.items()]

    def decapsulate_run(self, blob: bytes, size: int, now: float) -> Decapsulated | None:
        """Messages of ``size`` bytes back to back in ``blob`` (the last may be shorter), as
        UDP GRO returns a burst: if every one is a transport message for one live, confirmed
        session, the same result `decapsulate_batch` gives for them, with the per-session
        work done once. None (nothing done): not such a run -- split it
        (`split_segments`) and use `decapsulate_batch`."""
        to_peer: list[bytes] = []
        to_tunnel: list[bytes] = []
        done = self._transport_run(blob, size, now, to_peer, to_tunnel)
        if done is None:
            return None
        return Decapsulated(done[0].key, to_peer, to_tunnel, done[1])

    def _handle(self, data: bytes, now: float, under_load: bool, src: bytes,
                to_peer: list[bytes], to_tunnel: list[bytes]) -> tuple[Peer | None, str | None]:
        t = message_type(data)
        if t == MESSAGE_TRANSPORT:
            return self._transport(data, now, to_peer, to_tunnel)
        if t == MESSAGE_INITIATION:
            return self._initiation(data, now, under_load, src, to_peer)
        if t == MESSAGE_RESPONSE:
            return self._response(data, now, under_load, src, to_peer)
        if t == MESSAGE_COOKIE_REPLY:
            return self._cookie_reply(data, now)
        return None, self._count("malformed")

    # -- timers --------------------------------------------------------------------------

    def update_timers(self, now: float) -> list[tuple[bytes, list[bytes]]]:
        """Run every expired timer: (peer_key, messages to send) for each peer with any."""
        result = []
        for peer in list(self._peers.values()):
            t = peer.timers
            first = t.earliest()
            if first is None or first > now:
                continue
            out: list[bytes] = []
            if t.retransmit_handshake is not None and t.retransmit_handshake <= now:
                t.retransmit_handshake = None
                self._expired_retransmit(peer, now, out)
            if t.send_keepalive is not None and t.send_keepalive <= now:
                t.send_keepalive = None
                self._expired_send_keepalive(peer, now, out)
            if t.new_handshake is not None and t.new_handshake <= now:
                t.new_handshake = None
                self._count("handshake_new_after_silence")
                out.extend(self._send_initiation(peer, now, retry=False))
            if t.zero_key_material is not None and t.zero_key_material <= now:
                t.zero_key_material = None
                self._count("keys_zeroed")
                self._zero_and_flush(peer)
            if out:
                result.append((peer.key, out))
        return result

    def next_timer(self) -> float | None:
        """The earliest deadline at which ``update_timers`` has work, or None."""
        best = None
        for peer in self._peers.values():
            t = peer.timers.earliest()
            if t is not None and (best is None or t < best):
                best = t
        return best
