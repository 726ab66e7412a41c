"""`PingRun`: one `PingPeer` request as a sans-IO state machine.

Echo ``seq`` (0, 1, ... count-1) is sent when the previous one was answered or timed out;
it is answered by an echo reply from the destination carrying our identifier and that
sequence number. Time comes in as ``now`` (seconds, any monotonic clock); the caller
arms a timer for ``deadline`` and calls `on_timer` when it fires.

    run = PingRun(request, src, dst, ident)
    packet = run.next_packet(now)          # send it; arm a timer at run.deadline
    run.on_echo_reply(src, ident, seq, now) -> True when it answers the pending echo
    run.on_timer(now)                      -> True when the pending echo timed out
    ... next_packet again until run.done; then run.result()

Ownership: the proxy's loop thread.
"""

from __future__ import annotations

from sunbeam.shared.messages.ping import PingPeer, PingResult
from sunbeam.shared.proto.ip.headers import addr_bytes, addr_text
from sunbeam.shared.proto.ip.icmp import build_echo

__all__ = ["PING_PAYLOAD", "PingRun"]

PING_PAYLOAD = b"sunbeam-ping\x00\x00\x00\x00"


class PingRun:
    def __init__(self, request: PingPeer, src: str | bytes, dst: str | bytes, ident: int,
                 payload: bytes = PING_PAYLOAD) -> None:
        self.request = request
        self.src = addr_bytes(src)
        self.dst = addr_bytes(dst)
        if len(self.src) != len(self.dst):
            raise ValueError("source and destination families differ")
        self.dst_text = addr_text(self.dst)
        self.ident = ident & 0xFFFF
        self.payload = payload
        self.rtts: list[float | None] = []
        self._sent_at: float | None = None
        self.deadline: float | None = None
        """When the pending echo times out; None when none is pending."""

    @property
    def done(self) -> bool:
        return len(self.rtts) >= self.request.count

    @property
    def pending(self) -> tuple[int, int] | None:
        """``(ident, seq)`` of the echo awaiting its reply."""
        return (self.ident, len(self.rtts)) if self._sent_at is not None else None

    def next_packet(self, now: float) -> bytes | None:
        """The next echo request to send, or None when done (or one is still pending)."""
        if self.done or self._sent_at is not None:
            return None
        self._sent_at = now
        self.deadline = now + self.request.timeout
        return build_echo(self.src, self.dst, self.ident, len(self.rtts), self.payload)

    def on_echo_reply(self, src: str, ident: int, seq: int, now: float) -> bool:
        if self._sent_at is None or (ident, seq) != self.pending or src != self.dst_text:
            return False
        self.rtts.append(max(0.0, now - self._sent_at))
        self._sent_at = self.deadline = None
        return True

    def on_timer(self, now: float) -> bool:
        if self.deadline is None or now < self.deadline:
            return False
        self.rtts.append(None)
        self._sent_at = self.deadline = None
        return True

    def abandon(self, error: str) -> PingResult:
        """The result when the rest cannot be sent (e.g. the route vanished)."""
        rtts = self.rtts + [None] * (self.request.count - len(self.rtts))
        return PingResult(dst_ip=self.request.dst_ip, rtts=rtts, error=error)

    def result(self) -> PingResult:
        return PingResult(dst_ip=self.request.dst_ip, rtts=list(self.rtts))
