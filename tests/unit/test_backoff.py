import random

from sunbeam.shared.runtime.backoff import Backoff


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
