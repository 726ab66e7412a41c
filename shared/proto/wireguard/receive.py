"""The receiving half of a WireGuard device (wireguard-go ``device/receive.go`` and the
handshake consumers of ``noise-protocol.go``).

Per message type (the layouts are in ``messages.py``):

    1 initiation   mac1; under load mac2 (else: cookie reply, not processed); decrypt the
                   static key -> peer; timestamp must exceed the last one seen (replay) and
                   the previous initiation be > 20 ms old (flood); answer with a response and
                   derive the responder's keypair ("next")
    2 response     mac1; under load mac2 (else cookie reply); receiver index -> our pending
                   initiation; derive the initiator's keypair (current); send the staged
                   packets, or a keepalive, to confirm it
    3 cookie       receiver index -> peer; store the cookie for our next mac2
    4 transport    receiver index -> keypair; not older than REJECT_AFTER_TIME; authenticate
                   and decrypt; then the replay window; a first packet on "next" confirms it;
                   an empty payload is a keepalive; else the IP packet is trimmed to its IP
                   length and kept only if AllowedIPs maps its source address to this peer

Each handler appends to the caller's ``to_peer`` / ``to_tunnel`` lists and returns
``(peer or None, error or None)``; every error is a counted drop, never an exception.
``ReceiveMixin`` is part of ``Device``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag

from .allowedips import AllowedIPs
from .cookie import CookieChecker
from .messages import transport_run_index
from .noise import (
    StaticIdentity,
    commit_initiation,
    consume_response,
    finish_initiation,
    open_initiation,
)
from .send import SendMixin
from .session import Keypair
from .timers import (
    HANDSHAKE_INITIATION_RATE,
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)

if TYPE_CHECKING:
    from .peer import Peer

_IQ = struct.Struct("<IQ")
_U32 = struct.Struct("<I")
_ZERO4 = bytes(4)
_LAST_MINUTE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
SRC_CACHE_MAX = 4096  # source address -> AllowedIPs owner; emptied on every AllowedIPs change


class ReceiveMixin(SendMixin):
    _identity: StaticIdentity
    _checker: CookieChecker
    _peers: dict[bytes, Peer]
    _allowed: AllowedIPs
    _entries: dict[int, Any]
    _src_cache: dict[bytes, Peer]

    # -- transport (the hot path) ----------------------------------------------------------

    def _transport(self, data: bytes, now: float, to_peer: list[bytes],
                   to_tunnel: list[bytes]) -> tuple[Peer | None, str | None]:
        receiver, counter = _IQ.unpack_from(data, 4)
        kp = self._entries.get(receiver)
        if kp.__class__ is not Keypair:
            return None, self._count("unknown_index")
        peer = kp.peer
        if now - kp.created >= REJECT_AFTER_TIME:
            return peer, self._count("expired")
        try:
            pt = kp.recv.decrypt(_ZERO4 + data[8:16], data[16:], None)
        except InvalidTag:
            return peer, self._count("decrypt")
        if not kp.replay.check(counter):
            return peer, self._count("replay")
        if kp is peer.keypairs.next:
            old = peer.keypairs.confirm(kp)
            if old is not None:
                self._index.delete(old.local_index)
            peer.timers.handshake_complete()
            peer.last_handshake = now
            self._count("handshake_completed")
            to_peer.extend(self._send_staged(peer, now))
        err = self._inner(peer, pt, to_tunnel) if pt else None
        self._received(peer, 1, len(data), 1 if pt else 0, now, to_peer)
        return peer, err

    def _received(self, peer: Peer, messages: int, nbytes: int, data: int, now: float,
                  to_peer: list[bytes]) -> None:
        """After ``messages`` authenticated transport messages (``nbytes`` in all, ``data``
        of them not keepalives) from ``peer``: statistics, timers, and the initiator's
        last-minute rehandshake (wireguard-go keepKeyFreshReceiving)."""
        peer.rx_bytes += nbytes
        peer.rx_packets += messages
        c = self.counters
        c["rx_packets"] = c.get("rx_packets", 0) + messages
        c["rx_bytes"] = c.get("rx_bytes", 0) + nbytes
        t = peer.timers
        if data:
            t.data_received(now)
        if messages > data:
            self._count("keepalive_rx", messages - data)
        if not t.sent_last_minute_handshake:
            cur = peer.keypairs.current
            if cur is not None and cur.is_initiator and now - cur.created > _LAST_MINUTE:
                t.sent_last_minute_handshake = True
                to_peer.extend(self._send_initiation(peer, now, retry=False))
        t.any_authenticated_received()

    def _transport_run(self, blob: bytes, size: int, now: float, to_peer: list[bytes],
                       to_tunnel: list[bytes]) -> tuple[Peer, str | None] | None:
        """Transport messages of ``size`` bytes back to back in ``blob`` (the last may be
        shorter), all for one receiver index -- as UDP GRO hands over a burst from one peer.
        The same checks, per message, as `_transport`; the keypair lookup, statistics and
        timers are done once for the run. None (nothing done): not such a run, or one
        `_transport` must take message by message (unknown index, expired or unconfirmed
        keypair)."""
        receiver = transport_run_index(blob, size)
        if receiver is None:
            return None
        kp = self._entries.get(receiver)
        if kp.__class__ is not Keypair or kp is kp.peer.keypairs.next or now - kp.created >= REJECT_AFTER_TIME:
            return None
        n = len(blob)
        peer = kp.peer
        decrypt, check, inner, from_bytes = kp.recv.decrypt, kp.replay.check, self._inner, int.from_bytes
        append = to_tunnel.append
        view = memoryview(blob)  # the ciphertexts without a copy each
        owned4 = None  # an IPv4 source `_inner` accepted from this peer in this run
        err = None
        good = data = dropped_bytes = 0
        for off in range(0, n, size):
            end = off + size
            counter = blob[off + 8:off + 16]
            try:
                pt = decrypt(_ZERO4 + counter, view[off + 16:end], None)
            except InvalidTag:
                err = self._count("decrypt")
                dropped_bytes += min(end, n) - off
                continue
            if not check(from_bytes(counter, "little")):
                err = self._count("replay")
                dropped_bytes += min(end, n) - off
                continue
            good += 1
            if pt:
                data += 1
                # `_inner`'s checks, inline for the common case: IPv4 from a source it
                # already accepted in this run (AllowedIPs cannot change within it)
                if pt[0] >> 4 == 4 and pt[12:16] == owned4:
                    length = (pt[2] << 8) | pt[3]
                    ln = len(pt)
                    if 20 <= length <= ln:
                        append(pt if length == ln else pt[:length])
                        continue
                failed = inner(peer, pt, to_tunnel)
                if failed is None:
                    if pt[0] >> 4 == 4:
                        owned4 = pt[12:16]
                else:
                    err = failed
        if good:
            self._received(peer, good, n - dropped_bytes, data, now, to_peer)
        return peer, err

    def _inner(self, peer: Peer, pt: bytes, to_tunnel: list[bytes]) -> str | None:
        n = len(pt)
        version = pt[0] >> 4
        if version == 4:
            if n < 20:
                return self._count("bad_ip_packet")
            length = (pt[2] << 8) | pt[3]
            if length > n or length < 20:
                return self._count("bad_ip_packet")
            src = pt[12:16]
        elif version == 6:
            if n < 40:
                return self._count("bad_ip_packet")
            length = ((pt[4] << 8) | pt[5]) + 40
            if length > n:
                return self._count("bad_ip_packet")
            src = pt[8:24]
        else:
            return self._count("bad_ip_packet")
        owner = self._src_cache.get(src)
        if owner is None:
            owner = self._allowed.lookup(src)
            if owner is not None:
                if len(self._src_cache) >= SRC_CACHE_MAX:
                    self._src_cache.clear()
                self._src_cache[src] = owner
        if owner is not peer:
            return self._count("allowed_ips_drop")
        to_tunnel.append(pt if length == n else pt[:length])
        return None

    # -- handshake messages --------------------------------------------------------------

    def _cookie_gate(self, data: bytes, sender_at: int, now: float, under_load: bool, src: bytes,
                     to_peer: list[bytes]) -> str | None:
        """mac1 always; mac2 under load (answering a cookie reply when it is missing)."""
        if not self._checker.check_mac1(data):
            return self._count("mac1")
        if under_load and not self._checker.check_mac2(data, src, now):
            sender = _U32.unpack_from(data, sender_at)[0]
            to_peer.append(self._checker.create_reply(data, sender, src, now, self._random))
            self._count("cookie_reply_sent")
            return self._count("under_load")
        return None

    def _initiation(self, data: bytes, now: float, under_load: bool, src: bytes,
                    to_peer: list[bytes]) -> tuple[Peer | None, str | None]:
        err = self._cookie_gate(data, 4, now, under_load, src, to_peer)
        if err:
            return None, err
        opened = open_initiation(self._identity, data)
        if opened is None:
            return None, self._count("handshake_decrypt")
        ck, h, static = opened
        peer = self._peers.get(static)
        if peer is None:
            return None, self._count("unknown_peer")
        hs = peer.handshake
        finished = finish_initiation(hs, ck, h, data)
        if finished is None:
            return peer, self._count("handshake_decrypt")
        ck, h, ts = finished
        if ts <= hs.last_timestamp:
            return peer, self._count("handshake_replay")
        if now - hs.last_initiation_consumed <= HANDSHAKE_INITIATION_RATE:
            return peer, self._count("handshake_flood")
        commit_initiation(hs, ck, h, data, ts, now)
        self._count("handshake_initiation_received")
        peer.timers.any_authenticated_received()
        peer.rx_bytes += len(data)
        to_peer.extend(self._send_response(peer, now))
        return peer, None

    def _response(self, data: bytes, now: float, under_load: bool, src: bytes,
                  to_peer: list[bytes]) -> tuple[Peer | None, str | None]:
        err = self._cookie_gate(data, 4, now, under_load, src, to_peer)
        if err:
            return None, err
        receiver = _U32.unpack_from(data, 8)[0]
        peer = self._entries.get(receiver)
        if peer is None or peer.__class__ is Keypair or peer.handshake.local_index != receiver:
            return None, self._count("unknown_index")
        if not consume_response(self._identity, peer.handshake, data):
            return peer, self._count("handshake_decrypt")
        peer.timers.any_authenticated_received()
        peer.rx_bytes += len(data)
        self._begin_session(peer, now)
        peer.timers.session_derived(now)
        peer.timers.handshake_complete()
        peer.last_handshake = now
        self._count("handshake_completed")
        to_peer.extend(self._send_keepalive(peer, now))
        return peer, None

    def _cookie_reply(self, data: bytes, now: float) -> tuple[Peer | None, str | None]:
        entry = self._entries.get(_U32.unpack_from(data, 4)[0])
        if entry is None:
            return None, self._count("unknown_index")
        peer = entry.peer if entry.__class__ is Keypair else entry
        if not peer.cookie.consume_reply(data, now):
            return peer, self._count("cookie_decrypt")
        self._count("cookie_reply_received")
        return peer, None
