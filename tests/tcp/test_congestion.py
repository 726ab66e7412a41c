"""CUBIC's window arithmetic (RFC 9438) against the RFC's own formulas, driven as the sender
drives it: a congestion event, then one cwnd of ACKs per round trip."""

from __future__ import annotations

import itertools

import pytest
from sunbeam.shared.proto.tcp.congestion import ALGORITHMS, Cubic, NewReno
from sunbeam.shared.proto.tcp.tcb import Config

MSS = 1000


def _loss(cc: Cubic | NewReno, segments: int) -> None:
    """A loss with ``segments`` in flight and cwnd, then recovery ends at ssthresh (as `sender`)."""
    cc.cwnd = segments * MSS
    cc.on_loss(segments * MSS)
    cc.cwnd = cc.ssthresh


def _rounds(cc: Cubic | NewReno, start: float, rtt: float, rounds: int) -> list[float]:
    """``rounds`` round trips, each acking the whole window one MSS at a time; cwnd (in
    segments) after each."""
    out = []
    now = start
    for _ in range(rounds):
        n = max(cc.cwnd // MSS, 1)
        for i in range(n):
            cc.on_ack(MSS, now + rtt * i / n, rtt)
        now += rtt
        out.append(cc.cwnd / MSS)
    return out


def test_cubic_loss_keeps_beta_and_remembers_w_max():
    cc = Cubic(MSS)
    _loss(cc, 100)
    assert cc.ssthresh == 70 * MSS and cc.w_max == 100 * MSS  # 4.6, beta = 0.7
    _loss(cc, 80)  # below the last W_max: fast convergence (4.7)
    assert cc.ssthresh == 56 * MSS and cc.w_max == pytest.approx(80 * MSS * 1.7 / 2)
    cc.on_timeout(2 * MSS, first=True)  # fewer in flight than cwnd: the flight counts
    assert cc.cwnd == MSS and cc.ssthresh == 2 * MSS


def test_cubic_concave_to_w_max_at_k_then_convex():
    """100 ms RTT (CUBIC's region, not Reno's): the window climbs back to W_max about K
    seconds after the loss, flattening on the way (concave), then accelerates (convex)."""
    cc = Cubic(MSS)
    _loss(cc, 100)
    k = (30 / 0.4) ** (1 / 3)  # eq. 2: cbrt((W_max - cwnd) / C) = 4.22 s
    w = _rounds(cc, 10.0, 0.1, 80)
    assert cc.k == pytest.approx(k)
    at_k = w[round(k / 0.1) - 1]
    assert 96 <= at_k <= 102
    growth = [b - a for a, b in itertools.pairwise(w)]
    assert min(growth) >= 0
    early, near, late = sum(growth[0:10]), sum(growth[37:47]), sum(growth[70:79])
    assert early > 2 * near and late > 2 * near  # concave, plateau, convex
    # each round trip's target is W_cubic(t + RTT), never more than 1.5 cwnd (4.2)
    assert all(b <= 1.5 * a + 1 for a, b in itertools.pairwise(w))


def test_cubic_reno_friendly_region_at_short_rtt():
    """At 5 ms RTT Reno's AIMD would grow faster than the cubic curve: W_est leads (4.3),
    alpha = 3 (1 - beta) / (1 + beta) segments per round trip until W_max, then 1."""
    cc = Cubic(MSS)
    _loss(cc, 100)
    w = _rounds(cc, 0.0, 0.005, 50)  # 0.25 s
    alpha = 3 * 0.3 / 1.7
    assert w[-1] == pytest.approx(70 + alpha * 50, abs=1.5)
    cubic = 100 - 0.4 * (cc.k - 0.25) ** 3
    assert w[-1] > cubic + 10  # well above what the curve alone gives
    w = _rounds(cc, 0.25, 0.005, 50)  # past W_max, Reno's one segment per round trip
    assert w[-1] - w[-11] == pytest.approx(10, abs=1)


def test_cubic_pause_is_not_growth_time():
    cc = Cubic(MSS)
    _loss(cc, 100)
    before = _rounds(cc, 0.0, 0.1, 10)[-1]
    after = _rounds(cc, 60.0, 0.1, 1)[-1]  # a minute application-limited, then one round
    assert after - before < 3
    fresh = Cubic(MSS)
    _loss(fresh, 100)
    _rounds(fresh, 0.0, 0.1, 10)
    fresh.last = 60.0  # the same minute counted as growth time: far past W_max at once
    assert _rounds(fresh, 60.0, 0.1, 1)[-1] > before * 1.4


def test_cubic_undo_restores_window_and_w_max():
    cc = Cubic(MSS)
    _loss(cc, 100)
    _rounds(cc, 0.0, 0.1, 30)  # 3 s, short of K: the next loss converges fast
    prior = (cc.cwnd, cc.ssthresh, cc.w_max)
    _loss(cc, cc.cwnd // MSS)
    assert cc.w_max < prior[2] and cc.cwnd < prior[0]
    cc.undo(prior[0], prior[1])
    assert (cc.cwnd, cc.ssthresh, cc.w_max) == prior and cc.epoch < 0


def test_two_flows_cut_less_and_grow_faster():
    """flows=2 (Chromium QUIC's emulation): beta_2 = 0.85, alpha_2 = 3 * 4 * 0.15 / 1.85."""
    cc = Cubic(MSS, flows=2)
    _loss(cc, 100)
    assert cc.ssthresh == 85 * MSS and cc.w_max == 100 * MSS
    w = _rounds(cc, 0.0, 0.005, 10)  # the Reno-friendly region: alpha_2 per round trip
    assert w[-1] == pytest.approx(85 + 10 * 12 * 0.15 / 1.85, abs=1)
    _loss(cc, 90)  # fast convergence with beta_2
    assert cc.w_max == pytest.approx(90 * MSS * 1.85 / 2)


def test_slow_start_is_the_same_for_both():
    for algo in ALGORITHMS.values():
        cc = algo(MSS)
        cc.on_ack(5 * MSS, 0.0, 0.1)
        assert cc.cwnd == 15 * MSS


def test_newreno_halves_and_grows_one_mss_per_rtt():
    cc = NewReno(MSS)
    _loss(cc, 100)
    assert cc.ssthresh == 50 * MSS
    w = _rounds(cc, 0.0, 0.1, 10)
    assert w == [51.0 + i for i in range(10)]


def test_config_names_the_algorithm():
    assert Config().congestion == "cubic"
    assert Config(congestion="newreno").congestion == "newreno"
    with pytest.raises(ValueError, match="one of cubic, newreno"):
        Config(congestion="bbr")
    assert Config().flows == 1 and Config(flows=2).flows == 2
    with pytest.raises(ValueError, match="flows 0"):
        Config(flows=0)
