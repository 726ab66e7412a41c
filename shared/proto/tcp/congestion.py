"""Congestion window arithmetic, sans-IO, in bytes: CUBIC (RFC 9438, the default, as in
Linux and in tailscaled's netstack) and NewReno (RFC 5681, RFC 6582).

Both:
    initial window   10 * MSS (RFC 6928; Linux's default)
    slow start       cwnd < ssthresh: cwnd += bytes newly acked (byte counting, RFC 3465,
                     without its L = 2*SMSS cap, as Linux: our own receiver sends one
                     stretch ACK per batch, so a cap would starve slow start)
    timeout          ssthresh as on loss on the first expiry; cwnd = 1 MSS (loss window)

NewReno:
    avoidance        cwnd += MSS once per cwnd bytes acked (RFC 3465 section 2.1)
    loss (3 dupacks / SACK)   ssthresh = max(FlightSize / 2, 2 * MSS)      (RFC 5681 eq. 4)

CUBIC (RFC 9438; W in segments, t in seconds since the congestion avoidance epoch began):
    loss             W = min(cwnd, FlightSize) (4.6 allows cwnd only where it cannot
                     outgrow the flight; ours grows only when cwnd-limited, but slow
                     start's test is flight >= cwnd / 2); W_max = W, or W * (1 + beta) / 2
                     when W < the last W_max (fast convergence, 4.7);
                     ssthresh = max(W * beta, 2 * MSS), beta = 0.7 (4.6)
    epoch start      the first ACK in avoidance after a loss: K = cbrt((W_max - cwnd) / C),
                     C = 0.4 (eq. 2); with cwnd >= W_max, K = 0 and the origin is cwnd
    avoidance        W_cubic(t) = C (t - K)^3 + W_max (eq. 1);
                     target = W_cubic(t + RTT) clamped to [cwnd, 1.5 cwnd] (4.2);
                     Reno-friendly estimate W_est += alpha * acked / cwnd, alpha =
                     3 (1 - beta) / (1 + beta) until W_est reaches W_max, then 1 (4.3);
                     cwnd = W_est while W_cubic(t) < W_est, else cwnd += (target - cwnd) / cwnd
                     per segment acked (4.4, 4.5)
    idle             time without cwnd-limited ACKs (more than an RTT) moves the epoch
                     forward, so an application-limited pause does not count as growth
                     time (Linux's CA_EVENT_TX_START)
    undo             a recovery proven needless (D-SACK) restores W_max with cwnd/ssthresh
    N flows          ``flows`` = N > 1 makes one connection respond as N standard flows
                     sharing the path would in aggregate (Chromium QUIC's CUBIC, which
                     emulates N = 2 by default): beta_N = (N - 1 + beta) / N (one of the N
                     flows cuts), alpha_N = 3 N^2 (1 - beta_N) / (1 + beta_N), N per round
                     trip past W_max. On a path with random (non-congestive) loss the
                     window's equilibrium doubles for N = 2 (AIMD: W ~ sqrt(alpha (1 + beta)
                     / (2 (1 - beta) p))); against other flows on a congested bottleneck it
                     takes what two of them would.

What happens to cwnd *during* fast recovery (inflation per duplicate ACK, deflation per
partial ACK, RFC 6582; or the pipe of RFC 6675 with SACK) belongs to the sender
(`sender`), which calls these methods; cwnd grows only when the sender was limited by it
(RFC 7661's idea), so an idle or application-limited connection does not inflate it.
"""

from __future__ import annotations

__all__ = ["ALGORITHMS", "Cubic", "NewReno"]

INITIAL_WINDOW = 10
INFINITE = 1 << 62
BETA = 0.7
C = 0.4


class _Window:
    """What both algorithms keep: cwnd / ssthresh of one connection, in bytes; owned by its
    `Connection`."""

    __slots__ = ("cwnd", "mss", "ssthresh")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW * mss
        self.ssthresh = INFINITE

    def set_mss(self, mss: int) -> None:
        """The MSS became known (handshake): the initial window follows it."""
        self.mss = mss
        self.cwnd = INITIAL_WINDOW * mss


class NewReno(_Window):
    """NewReno's window arithmetic."""

    __slots__ = ("acked",)

    def __init__(self, mss: int, flows: int = 1) -> None:
        """``flows``: CUBIC's; NewReno is always one flow."""
        super().__init__(mss)
        self.acked = 0
        """Bytes acked in congestion avoidance since cwnd last grew."""

    def on_ack(self, acked: int, now: float, srtt: float) -> None:
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

    def undo(self, prior_cwnd: int, prior_ssthresh: int) -> None:
        """The last reduction was needless: back to what it was before."""
        self.cwnd = max(self.cwnd, prior_cwnd)
        self.ssthresh = max(self.ssthresh, prior_ssthresh)


class Cubic(_Window):
    """CUBIC's window arithmetic. Internal windows (``w_max``, ``origin``, ``w_est``) are in
    bytes; C is scaled by the MSS."""

    __slots__ = ("alpha", "alpha_past_max", "beta", "epoch", "grow", "k", "last", "origin", "prior_w_max",
                 "w_est", "w_max")

    def __init__(self, mss: int, flows: int = 1) -> None:
        super().__init__(mss)
        self.beta = (flows - 1 + BETA) / flows
        self.alpha = 3 * flows * flows * (1 - self.beta) / (1 + self.beta)
        """Reno-friendly growth per round trip below W_max (RFC 9438 4.3 for N = 1)."""
        self.alpha_past_max = float(flows)
        self.w_max = 0.0
        """The window before the last reduction (bytes)."""
        self.prior_w_max = 0.0
        self.epoch = -1.0
        """When the current avoidance epoch began; < 0: none (the next ACK starts one)."""
        self.k = 0.0
        self.origin = 0.0
        self.w_est = 0.0
        self.grow = 0.0
        """Growth owed to cwnd below one byte (carried between ACKs)."""
        self.last = 0.0
        """The last cwnd-limited ACK in avoidance (for idle detection)."""

    def on_ack(self, acked: int, now: float, srtt: float) -> None:
        """``acked`` new bytes were acknowledged outside recovery while cwnd-limited."""
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            self.cwnd = cwnd + acked
            return
        mss = self.mss
        if self.epoch < 0:
            self.epoch = self.last = now
            self.grow = 0.0
            self.w_est = cwnd
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / (C * mss)) ** (1 / 3)
                self.origin = self.w_max
            else:
                self.k = 0.0
                self.origin = cwnd
        elif now - self.last > srtt > 0:
            self.epoch += now - self.last  # an application-limited pause is not growth time
        self.last = now
        t = now - self.epoch
        target = self.origin + C * mss * (t + srtt - self.k) ** 3
        if target < cwnd:
            target = cwnd
        elif target > 1.5 * cwnd:
            target = 1.5 * cwnd
        self.w_est += (self.alpha if self.w_est < self.w_max else self.alpha_past_max) * mss * acked / cwnd
        cubic_now = self.origin + C * mss * (t - self.k) ** 3
        if cubic_now < self.w_est:
            grow = self.w_est - cwnd + self.grow  # the Reno-friendly region
        else:
            grow = (target - cwnd) * acked / cwnd + self.grow
        if grow >= 1:
            n = int(grow)
            self.cwnd = cwnd + n
            grow -= n
        self.grow = max(grow, 0.0)

    def _reduce(self, flight: int) -> None:
        cwnd = min(self.cwnd, flight) if flight > 0 else self.cwnd
        self.prior_w_max = self.w_max
        beta = self.beta
        self.w_max = cwnd * (1 + beta) / 2 if cwnd < self.w_max else float(cwnd)
        self.ssthresh = max(int(cwnd * beta), 2 * self.mss)
        self.epoch = -1.0

    def on_loss(self, flight: int) -> None:
        """Loss detected by duplicate ACKs or SACK: cut to beta * cwnd (RFC 9438 4.6)."""
        self._reduce(flight)

    def on_timeout(self, flight: int, first: bool) -> None:
        """The retransmission timer expired (``first``: not a repeated expiry)."""
        if first:
            self._reduce(flight)
        self.cwnd = self.mss
        self.epoch = -1.0

    def undo(self, prior_cwnd: int, prior_ssthresh: int) -> None:
        """The last reduction was needless: back to what it was before (4.9)."""
        self.cwnd = max(self.cwnd, prior_cwnd)
        self.ssthresh = max(self.ssthresh, prior_ssthresh)
        self.w_max = max(self.w_max, self.prior_w_max)
        self.epoch = -1.0


ALGORITHMS: dict[str, type[NewReno | Cubic]] = {"cubic": Cubic, "newreno": NewReno}
"""Config.congestion names."""
