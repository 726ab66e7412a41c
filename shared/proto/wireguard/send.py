"""The sending half of a WireGuard device (wireguard-go ``device/send.go``): handshake
initiations and responses, staged packets, transport encryption, keepalives, key rotation.

Transport encryption (the hot path) per packet: pad the IP packet with zeros to a multiple
of 16, take the next send counter ``c``, and emit::

    04 00 00 00 | receiver index (u32 LE) | c (u64 LE) | ChaCha20Poly1305(send key,
        nonce = 00 00 00 00 || c (u64 LE), plaintext = padded packet, ad = empty)

One AEAD object per key (the Keypair's), reused; no other per-packet objects than the
output bytes. Staged packets (no usable session yet) are bounded per peer: the oldest are
dropped first and counted as ``queue_drop``.

``SendMixin`` is part of ``Device``; its state is the Device's, owned by one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .cookie import CookieChecker
from .noise import StaticIdentity, create_initiation, create_response, derive_keys
from .replay import REJECT_AFTER_MESSAGES
from .session import IndexTable, Keypair
from .timers import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX_MS,
)

if TYPE_CHECKING:
    from .peer import Peer

_ZERO4 = bytes(4)
_PADS = [bytes(i) for i in range(16)]


class SendMixin:
    _identity: StaticIdentity
    _index: IndexTable
    _checker: CookieChecker
    _random: Callable[[int], bytes]
    _wall_clock: Callable[[], float] | None
    counters: dict[str, int]

    def _count(self, key: str, n: int = 1) -> str:
        c = self.counters
        c[key] = c.get(key, 0) + n
        return key

    def _jitter(self) -> float:
        return (int.from_bytes(self._random(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS) / 1000.0

    # -- handshakes ----------------------------------------------------------------------

    def _send_initiation(self, peer: Peer, now: float, retry: bool) -> list[bytes]:
        """A handshake initiation, unless one went out less than REKEY_TIMEOUT ago."""
        if not retry:
            peer.timers.handshake_attempts = 0
        hs = peer.handshake
        if now - hs.last_sent < REKEY_TIMEOUT:
            return []
        hs.last_sent = now
        self._index.delete(hs.local_index)
        hs.local_index = None
        index = self._index.new(peer)
        stamp = self._wall_clock() if self._wall_clock is not None else now  # TAI64N: wall time
        msg = create_initiation(self._identity, hs, self._random(32), stamp, index)
        if msg is None:
            self._index.delete(index)
            self._count("invalid_peer_key")
            return []
        hs.local_index = index
        peer.cookie.add_macs(msg, now)
        peer.timers.any_authenticated_sent()
        peer.timers.handshake_initiated(now, self._jitter())
        self._count("handshake_initiation_sent")
        return [bytes(msg)]

    def _send_response(self, peer: Peer, now: float) -> list[bytes]:
        hs = peer.handshake
        hs.last_sent = now
        self._index.delete(hs.local_index)
        hs.local_index = None
        index = self._index.new(peer)
        msg = create_response(hs, self._random(32), index)
        if msg is None:
            self._index.delete(index)
            hs.clear()
            self._count("handshake_dh")
            return []
        hs.local_index = index
        peer.cookie.add_macs(msg, now)
        self._begin_session(peer, now)
        peer.timers.session_derived(now)
        peer.timers.any_authenticated_sent()
        self._count("handshake_response_sent")
        return [bytes(msg)]

    def _begin_session(self, peer: Peer, now: float) -> None:
        hs = peer.handshake
        send, recv, initiator = derive_keys(hs)
        index = hs.local_index
        assert index is not None
        kp = Keypair(peer, send, recv, initiator, now, index, hs.remote_index)
        self._index.entries[index] = kp  # the handshake's index now names the keypair
        hs.local_index = None
        for old in peer.keypairs.install(kp):
            if old is not None:
                self._index.delete(old.local_index)

    def _zero_and_flush(self, peer: Peer) -> None:
        for kp in peer.keypairs.clear():
            self._index.delete(kp.local_index)
        self._index.delete(peer.handshake.local_index)
        peer.handshake.clear()
        peer.staged.clear()

    # -- transport -----------------------------------------------------------------------

    def _stage(self, peer: Peer, packets: Sequence[bytes | memoryview]) -> None:
        staged = peer.staged
        over = len(staged) + len(packets) - staged.maxlen  # type: ignore[operator]
        if over > 0:
            self._count("queue_drop", over)
        staged.extend(p if type(p) is bytes else bytes(p) for p in packets)  # a view would pin its whole run

    def _send_staged(self, peer: Peer, now: float) -> list[bytes]:
        if not peer.staged:
            return []
        kp = peer.keypairs.current
        if kp is None or kp.send_counter >= REJECT_AFTER_MESSAGES or now - kp.created >= REJECT_AFTER_TIME:
            return self._send_initiation(peer, now, retry=False)
        packets = list(peer.staged)
        peer.staged.clear()
        return self._encrypt(peer, kp, packets, now)

    def _send_keepalive(self, peer: Peer, now: float) -> list[bytes]:
        if not peer.staged:
            peer.staged.append(b"")
        return self._send_staged(peer, now)

    def _encrypt(self, peer: Peer, kp: Keypair, packets: Sequence[bytes | memoryview], now: float) -> list[bytes]:
        room = REJECT_AFTER_MESSAGES - kp.send_counter
        if len(packets) > room:  # counter exhausted: keep the rest for the next session
            self._stage(peer, packets[room:])
            packets = packets[:room]
        out: list[bytes] = []
        append = out.append
        seal = kp.send.encrypt
        header = kp.header
        pads = _PADS
        zero4 = _ZERO4
        counter = kp.send_counter
        nbytes = 0
        for p in packets:
            pad = -len(p) & 15
            if pad:
                p = b"".join((p, pads[pad]))  # (``p`` may be a view: `split_runs`)
            c8 = counter.to_bytes(8, "little")
            msg = header + c8 + seal(zero4 + c8, p, None)
            nbytes += len(msg)
            append(msg)
            counter += 1
        n = counter - kp.send_counter
        kp.send_counter = counter
        peer.tx_bytes += nbytes
        peer.tx_packets += n
        keepalives = packets.count(b"")
        c = self.counters
        c["tx_packets"] = c.get("tx_packets", 0) + n
        c["tx_bytes"] = c.get("tx_bytes", 0) + nbytes
        t = peer.timers
        t.any_authenticated_sent()
        if keepalives:
            self._count("keepalive_tx", keepalives)
        if n > keepalives and t.new_handshake is None:  # (jitter only when it is armed)
            t.data_sent(now, self._jitter())
        return out

    def _keep_key_fresh_sending(self, peer: Peer, now: float, out: list[bytes]) -> None:
        kp = peer.keypairs.current
        if kp is None:
            return
        if kp.send_counter > REKEY_AFTER_MESSAGES or (kp.is_initiator and now - kp.created > REKEY_AFTER_TIME):
            out.extend(self._send_initiation(peer, now, retry=False))

    # -- timer expiry ----------------------------------------------------------------------

    def _expired_retransmit(self, peer: Peer, now: float, out: list[bytes]) -> None:
        t = peer.timers
        if t.handshake_attempts > MAX_TIMER_HANDSHAKES:
            t.send_keepalive = None
            if peer.staged:
                self._count("handshake_gave_up_drop", len(peer.staged))
                peer.staged.clear()
            if t.zero_key_material is None:
                t.zero_key_material = now + 3 * REJECT_AFTER_TIME
        else:
            t.handshake_attempts += 1
            out.extend(self._send_initiation(peer, now, retry=True))

    def _expired_send_keepalive(self, peer: Peer, now: float, out: list[bytes]) -> None:
        out.extend(self._send_keepalive(peer, now))
        t = peer.timers
        if t.need_another_keepalive:
            t.need_another_keepalive = False
            t.send_keepalive = now + KEEPALIVE_TIMEOUT
