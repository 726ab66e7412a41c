"""Batched paths of the TCP core and what they must equal.

- In-order runs (`TcpStack.receive` hands contiguous data segments of one connection to
  `_Input.input_run` together): a stack fed whole batches behaves exactly like a twin fed
  the same packets one at a time (each then a run of one: `input`), over IPv4 and IPv6,
  on a clean link and on a lossy, reordering, duplicating one; every packet either sends
  must be the same.
- `_Output._tx4_run` builds a batch of IPv4 data segments byte for byte as `_tx` does one
  by one."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sunbeam.shared.proto.ip.wordsums import load_numpy, word_sums
from sunbeam.shared.proto.tcp import TcpStack
from sunbeam.shared.proto.tcp.bulk import BULK_MIN
from sunbeam.shared.proto.tcp.input import _Input
from sunbeam.shared.proto.tcp.segment import ACK, PSH, parse_packet

from .link import Impairer, Pair, Transfer, make_stack

load_numpy()  # the proxy loads it on a thread at its first bulk batch (tcpengine); here, now

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


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("impaired", [False, True])
def test_batches_with_runs_act_as_packets_one_by_one(impaired, v6, monkeypatch):
    runs: list[int] = []
    original = _Input.input_run

    def counting(self, seqw, ackw, wnd, run, total, now):
        assert total == sum(end - off for _pkt, off, end, _flags in run)
        runs.append(len(run))
        original(self, seqw, ackw, wnd, run, total, now)

    monkeypatch.setattr(_Input, "input_run", counting)
    bulks: list[int] = []  # segments in each run `bulk` checked and the connection took
    original_bulk = _Input.input_bulk

    def counting_bulk(self, seqw, ackw, wnd, data, last_len, last_flags, now):
        taken = original_bulk(self, seqw, ackw, wnd, data, last_len, last_flags, now)
        if taken:
            bulks.append(-(-len(data) // self.mss))
        return taken

    monkeypatch.setattr(_Input, "input_bulk", counting_bulk)
    rng = random.Random(7)
    a_addr, b_addr = ("fd00::a", "fd00::b") if v6 else ("10.0.0.1", "10.0.0.2")
    a = make_stack(a_addr, 1)
    twins = Twins(make_stack(b_addr, 2), make_stack(b_addr, 2))
    ab = Impairer(3, loss=0.03, dup=0.01, reorder=0.05) if impaired else None
    ba = Impairer(4, loss=0.03) if impaired else None
    pair = Pair(a, twins, ab, ba, delay=3)  # type: ignore[arg-type]
    t = Transfer(pair, b_addr, 80, rng.randbytes(3 * MB), rng.randbytes(MB // 2), src_a=a_addr)
    t.run(max_seconds=120)
    t.check()
    assert twins.calls > 100  # polls, reads and timers compared
    # runs were taken, long ones among them; on the clean IPv4 link most of them in bulk
    assert len(runs) + len(bulks) >= 10 and max(runs + bulks) >= 8
    assert all(n >= BULK_MIN for n in bulks)
    if not (v6 or impaired):
        assert len(bulks) >= 10 and max(bulks) >= 100
    assert twins.b.counters - Counter(bulk_runs=len(bulks)) == twins.twin.counters
    if impaired:
        assert twins.b.counters["out_of_order"] > 0 and ab is not None and ab.stats["lost"] > 0


@pytest.mark.parametrize("last_flags", [ACK, ACK | PSH])
def test_tx4_run_builds_what_tx_builds(last_flags):
    stack = make_stack("10.0.0.1", 1)
    cid = stack.connect("10.0.0.1", ("10.0.0.2", 80), 0.0)
    conn = stack._by_id[cid]
    rng = random.Random(3)
    conn.rcv_nxt = (1 << 32) + 77  # extended: the wire value wraps
    sizes = [1228] * 5 + [rng.randrange(1, 1228)]
    seqs = [(1 << 32) - 3000 + sum(sizes[:i]) for i in range(len(sizes))]  # crosses 2**32
    fresh = [(seq, ACK if i < len(sizes) - 1 else last_flags, bytearray(rng.randbytes(n)))
             for i, (seq, n) in enumerate(zip(seqs, sizes, strict=True))]
    sums = word_sums([f[2] for f in fresh])
    conn.ident = 0xFFFE  # the IP ident wraps too
    one_by_one: list[bytes] = []
    for (seq, flags, payload), psum in zip(fresh, sums, strict=True):
        conn._tx(one_by_one, seq, flags, payload, b"", 4321, psum)
    after_tx = conn.ident
    conn.ident = 0xFFFE
    batched: list[bytes] = []
    conn._tx4_run(batched, fresh, sums, 4321)
    assert batched == one_by_one and conn.ident == after_tx
    for pkt in batched:  # and each is a valid segment (checksums included)
        parse_packet(pkt)
