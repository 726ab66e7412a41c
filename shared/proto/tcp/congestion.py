"""Congestion window arithmetic: NewReno (RFC 5681, RFC 6582), sans-IO, in bytes.

    initial window   10 * MSS (RFC 6928; Linux's default)
    slow start       cwnd < ssthresh: cwnd += bytes newly acked (byte counting, RFC 3465,
                     without its L = 2*SMSS cap, as Linux: our own receiver sends one
                     stretch ACK per batch, so a cap would starve slow start)
    avoidance        cwnd += MSS once per cwnd bytes acked (RFC 3465 section 2.1)
    loss (3 dupacks / SACK)   ssthresh = max(FlightSize / 2, 2 * MSS)      (RFC 5681 eq. 4)
    timeout          ssthresh as above on the first expiry; cwnd = 1 MSS (loss window)

What happens to cwnd *during* fast recovery (inflation per duplicate ACK, deflation per
partial ACK, RFC 6582; or the pipe of RFC 6675 with SACK) belongs to the sender
(`sender`), which calls these methods; cwnd grows only when the sender was limited by it
(RFC 7661's idea), so an idle or application-limited connection does not inflate it.
"""

from __future__ import annotations

__all__ = ["NewReno"]

INITIAL_WINDOW = 10
INFINITE = 1 << 62


class NewReno:
    """cwnd / ssthresh of one connection; owned by its `Connection`."""

    __slots__ = ("acked", "cwnd", "mss", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW * mss
        self.ssthresh = INFINITE
        self.acked = 0
        """Bytes acked in congestion avoidance since cwnd last grew."""

    def set_mss(self, mss: int) -> None:
        """The MSS became known (handshake): the initial window follows it."""
        self.mss = mss
        self.cwnd = INITIAL_WINDOW * mss

    def on_ack(self, acked: int) -> None:
        """``acked`` new bytes were acknowledged outside recovery while cwnd-limited."""
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            self.cwnd = cwnd + acked
            return
        self.acked += acked
        if self.acked >= cwnd:
            self.acked -= cwnd
            self.cwnd = cwnd + self.mss

    def on_loss(self, flight: int) -> None:
        """Loss detected by duplicate ACKs or SACK: halve (RFC 5681 eq. 4)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.acked = 0

    def on_timeout(self, flight: int, first: bool) -> None:
        """The retransmission timer expired (``first``: not a repeated expiry)."""
        if first:
            self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.acked = 0
