"""CoreTimer: one loop timer following a core's next deadline, on a fake clock."""

import pytest
from sunbeam.shared.runtime import ServiceLoop, Shutdown, get_logger
from sunbeam.shared.runtime.coretimer import CoreTimer

from .test_runtime_loop import FakeClock

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def loop():
    with Shutdown() as shutdown:
        lp = ServiceLoop("coretimer", shutdown, clock=FakeClock(), log=get_logger("coretimer"))
        yield lp
        lp.close()


def test_follows_the_deadline_and_rearms_only_when_it_moves(loop):
    # the core's clock runs 500 s ahead of the loop's (a wall clock vs a monotonic one)
    core_clock = FakeClock(1500.0)
    deadline: list[float | None] = [1502.0]
    fired = []
    timer = CoreTimer(loop, lambda: deadline[0], core_clock, lambda: fired.append(loop.clock()))

    timer.rearm()
    for _ in range(50):  # input that left the deadline where it was: still one timer
        timer.rearm()
    assert len(loop._timers) == 1 and timer.when == 1502.0

    loop.clock.now += 1.9
    core_clock.now += 1.9
    loop.run_once(max_wait=0)
    assert fired == []
    deadline[0] = 1501.95  # moved earlier: replaced, not added
    timer.rearm()
    assert len(loop._timers) == 1
    loop.clock.now += 0.06
    loop.run_once(max_wait=0)
    assert fired == [pytest.approx(1001.96)] and timer.when is None

    deadline[0] = None  # nothing pending in the core: nothing armed
    timer.rearm()
    assert len(loop._timers) == 0
    deadline[0] = 1600.0
    timer.rearm()
    timer.cancel()
    loop.clock.now += 1000
    loop.run_once(max_wait=0)
    assert len(fired) == 1 and len(loop._timers) == 0


def test_a_deadline_already_past_fires_on_the_next_iteration(loop):
    fired = []
    timer = CoreTimer(loop, lambda: 10.0, lambda: 20.0, lambda: fired.append(1))
    timer.rearm()
    loop.run_once(max_wait=0)
    assert fired == [1]
