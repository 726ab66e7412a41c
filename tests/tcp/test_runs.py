"""In-order runs (`TcpStack.receive` hands contiguous data segments of one connection to
`_Input.input_run` together): a stack fed whole batches behaves exactly like a twin fed
the same packets one at a time (each then a run of one: `input`), on a clean link and on
a lossy, reordering, duplicating one; every packet either sends must be the same."""

from __future__ import annotations

import random

import pytest
from sunbeam.shared.proto.tcp import TcpStack
from sunbeam.shared.proto.tcp.input import _Input

from .link import Impairer, Pair, Transfer, make_stack

MB = 1_000_000


FIELDS = ("state", "rcv_nxt", "rcv_adv", "rcv_buf", "snd_una", "snd_wnd", "snd_wl1", "snd_wl2", "ack_pending",
          "quick_acks", "unacked_segs", "readable", "last_rx")


def _state(stack: TcpStack) -> dict:
    return {cid: tuple(getattr(c, f) for f in FIELDS) for cid, c in stack._by_id.items()}


class Twins:
    """Stack ``b`` and its twin, driven together: ``receive`` gives ``b`` the batch and the
    twin its packets one by one; every other call goes to both and must return the same."""

    def __init__(self, b: TcpStack, twin: TcpStack) -> None:
        self.b, self.twin = b, twin
        self.calls = 0

    def receive(self, packets: list[bytes], now: float) -> None:
        self.b.receive(packets, now)
        for p in packets:
            self.twin.receive([p], now)
        assert _state(self.b) == _state(self.twin)

    def events(self) -> list:
        self.twin.events()  # a Readable per receive call there, per batch here
        return self.b.events()

    def __getattr__(self, name: str):
        mine, theirs = getattr(self.b, name), getattr(self.twin, name)

        def both(*args, **kw):
            got = mine(*args, **kw)
            assert theirs(*args, **kw) == got, name
            self.calls += 1
            return got

        return both


@pytest.mark.parametrize("impaired", [False, True])
def test_batches_with_runs_act_as_packets_one_by_one(impaired, monkeypatch):
    runs: list[int] = []
    original = _Input.input_run

    def counting(self, seqw, ackw, wnd, run, now):
        runs.append(len(run))
        original(self, seqw, ackw, wnd, run, now)

    monkeypatch.setattr(_Input, "input_run", counting)
    rng = random.Random(7)
    a = make_stack("10.0.0.1", 1)
    twins = Twins(make_stack("10.0.0.2", 2), make_stack("10.0.0.2", 2))
    ab = Impairer(3, loss=0.03, dup=0.01, reorder=0.05) if impaired else None
    ba = Impairer(4, loss=0.03) if impaired else None
    pair = Pair(a, twins, ab, ba, delay=3)  # type: ignore[arg-type]
    t = Transfer(pair, "10.0.0.2", 80, rng.randbytes(3 * MB), rng.randbytes(MB // 2), src_a="10.0.0.1")
    t.run(max_seconds=120)
    t.check()
    assert twins.calls > 100  # polls, reads and timers compared
    assert len(runs) >= 10 and max(runs) >= 8  # runs were taken, long ones among them
    assert twins.b.counters == twins.twin.counters
    if impaired:
        assert twins.b.counters["out_of_order"] > 0 and ab is not None and ab.stats["lost"] > 0
