"""The retransmission timeout, RFC 6298, sans-IO (times in seconds).

    first sample R:   SRTT = R, RTTVAR = R/2
    later samples R': RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|,  SRTT = 7/8 SRTT + 1/8 R'
    RTO = SRTT + max(G, 4 RTTVAR, min_rto), at most max_rto

Before any sample RTO is 1 s (2.1). On expiry the RTO doubles (5.5) and stays backed off
until a new sample arrives (5.7 note, Karn's algorithm): the connection takes no sample
from a retransmitted segment. Deviation: the floor is on the variance term, 200 ms by
default, as Linux has it (TCP_RTO_MIN bounds its mdev), not RFC 6298's 1 s minimum on the
whole RTO (2.4 "SHOULD"); a proxy on a tailnet with millisecond RTTs would otherwise stall
a second on every tail loss, and on a 100+ ms path a floor on the whole RTO leaves it
barely above one RTT, where a delay spike or reordering fires it spuriously. When the SYN or SYN-ACK
had to be retransmitted, the RTO is 3 s until the first sample (RFC 6298 5.7).
"""

from __future__ import annotations

__all__ = ["RttEstimator"]

INITIAL_RTO = 1.0
SYN_RETRY_RTO = 3.0
GRANULARITY = 0.001


class RttEstimator:
    """SRTT / RTTVAR / RTO of one connection; owned by its `Connection`."""

    __slots__ = ("backoffs", "max_rto", "min_rto", "rto", "rttvar", "srtt")

    def __init__(self, min_rto: float = 0.2, max_rto: float = 60.0) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.rto = INITIAL_RTO
        self.backoffs = 0
        """Consecutive expiries since the last sample."""

    def sample(self, r: float) -> None:
        """A round-trip measurement from a segment that was sent once (Karn)."""
        r = max(r, 0.0)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.backoffs = 0
        self.rto = min(self.srtt + max(GRANULARITY, 4 * self.rttvar, self.min_rto), self.max_rto)

    def expired(self) -> None:
        """The retransmission timer fired: back off (RFC 6298 5.5)."""
        self.backoffs += 1
        self.rto = min(self.rto * 2, self.max_rto)

    def handshake_retried(self) -> None:
        """Data transmission begins after a retransmitted SYN: RTO = 3 s (5.7)."""
        if self.srtt is None:
            self.rto = min(SYN_RETRY_RTO, self.max_rto)
            self.backoffs = 0
