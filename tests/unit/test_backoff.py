import random

from sunbeam.shared.runtime.backoff import Backoff, ReconnectBackoff


def test_grows_exponentially_within_jitter_and_caps():
    b = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    for n, d in enumerate(delays):
        nominal = min(30.0, 2.0 ** n)
        assert nominal * 0.5 <= d <= nominal
    assert max(delays) <= 30.0 and delays[-1] >= 15.0


def test_reset_starts_over_and_jitter_spreads_clients():
    b = Backoff(base=2.0, cap=60.0, rng=random.Random(1))
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert 1.0 <= b.next_delay() <= 2.0
    firsts = {round(Backoff(base=10, rng=random.Random(seed)).next_delay(), 3) for seed in range(20)}
    assert len(firsts) > 15  # clients restarting together do not retry in lockstep


# -- ReconnectBackoff: a fake clock and a server that is down from DOWN_AT to BACK_AT -------

def _first_attempt_after_outage(delay_after_failure, down_for: float) -> tuple[float, int]:
    """The server drops us at t=0 (it answered until then) and refuses connections until
    ``down_for``. Returns (seconds from its return to our first attempt, attempts meanwhile)."""
    now, attempts = delay_after_failure(True), 0
    while now < down_for:
        attempts += 1
        now += delay_after_failure(False)
    return now - down_for, attempts


def test_after_an_outage_the_first_attempt_comes_within_the_unreachable_cap():
    for down_for in (30.0, 300.0, 3600.0):
        for seed in range(50):
            rb = ReconnectBackoff(base=1.0, cap=60.0, unreachable_cap=2.0, rng=random.Random(seed))
            wait, attempts = _first_attempt_after_outage(lambda answered: rb.next_delay(answered=answered), down_for)
            assert wait <= 2.0, (down_for, seed, wait)
            # 1-2 s apart while refused: a SYN every ~1.5 s, not a storm
            assert down_for / 2.0 - 1 <= attempts <= down_for / 1.0 + 1, (down_for, attempts)


def test_plain_backoff_made_the_user_wait_long_after_a_30s_outage():
    # what the control client did before: one schedule for every failure (issue 15)
    waits = []
    for seed in range(50):
        b = Backoff(base=1.0, cap=60.0, rng=random.Random(seed))
        waits.append(_first_attempt_after_outage(lambda answered: b.next_delay(), 30.0)[0])
    assert sorted(waits)[len(waits) // 2] > 10.0


def test_failures_after_the_server_answered_still_back_off_to_the_cap():
    rb = ReconnectBackoff(base=1.0, cap=60.0, unreachable_cap=2.0, rng=random.Random(3))
    delays = []
    for _ in range(8):
        delays.append(rb.next_delay(answered=True))
        rb.answered()  # it answers each time (with an error): no reset of its own schedule
        assert rb.next_delay(answered=False) <= 2.0  # in between it vanishes once: still short
    for n, d in enumerate(delays):
        assert min(60.0, 2.0 ** n) * 0.5 <= d <= min(60.0, 2.0 ** n)
    assert delays[-1] >= 30.0


def test_reset_when_working_again_and_answered_restarts_only_the_unreachable_schedule():
    rb = ReconnectBackoff(base=1.0, cap=60.0, unreachable_cap=2.0, rng=random.Random(5))
    for _ in range(6):
        rb.next_delay(answered=True)
        rb.next_delay(answered=False)
    rb.answered()
    assert 0.5 <= rb.next_delay(answered=False) <= 1.0  # the first unreachable delay again
    assert rb.next_delay(answered=True) >= 30.0  # the server's own failures still count
    rb.reset()
    assert 0.5 <= rb.next_delay(answered=True) <= 1.0
    assert 0.5 <= rb.next_delay(answered=False) <= 1.0
