"""Per-peer protocol timers, as deadlines (whitepaper section 6; wireguard-go
``device/timers.go``, itself after the kernel's ``timers.c``).

Each timer is a deadline (``now`` seconds) or None when not pending; the Device's
``update_timers(now)`` runs the expired ones and ``next_timer()`` is the earliest deadline.

    retransmit_handshake  REKEY_TIMEOUT + jitter after sending an initiation; resend it,
                          give up after MAX_TIMER_HANDSHAKES tries (~REKEY_ATTEMPT_TIME)
    send_keepalive        KEEPALIVE_TIMEOUT after receiving data, unless we sent anything
                          authenticated since (passive keepalive)
    new_handshake         KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter after sending data,
                          unless we received anything authenticated since: re-handshake
    zero_key_material     3 * REJECT_AFTER_TIME after a session was derived: forget keys

Owned by its Peer; the events below are called by the Device at the points wireguard-go
calls its ``timers*`` functions.
"""

from __future__ import annotations

REKEY_AFTER_MESSAGES = 1 << 60
REKEY_AFTER_TIME = 120.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX_MS = 334
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
REJECT_AFTER_TIME = 180.0
KEEPALIVE_TIMEOUT = 10.0
HANDSHAKE_INITIATION_RATE = 1.0 / 50


class PeerTimers:
    __slots__ = (
        "handshake_attempts",
        "need_another_keepalive",
        "new_handshake",
        "retransmit_handshake",
        "send_keepalive",
        "sent_last_minute_handshake",
        "zero_key_material",
    )

    def __init__(self) -> None:
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False

    def earliest(self) -> float | None:
        best = None
        for t in (self.retransmit_handshake, self.send_keepalive, self.new_handshake,
                  self.zero_key_material):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def stop(self) -> None:
        self.retransmit_handshake = self.send_keepalive = None
        self.new_handshake = self.zero_key_material = None

    # -- events ------------------------------------------------------------------------

    def data_sent(self, now: float, jitter: float) -> None:
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter

    def data_received(self, now: float) -> None:
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def any_authenticated_sent(self) -> None:
        self.send_keepalive = None

    def any_authenticated_received(self) -> None:
        self.new_handshake = None

    def handshake_initiated(self, now: float, jitter: float) -> None:
        self.retransmit_handshake = now + REKEY_TIMEOUT + jitter

    def handshake_complete(self) -> None:
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        self.zero_key_material = now + 3 * REJECT_AFTER_TIME
