"""`bulk`: a batch's stretch of equal-length data segments checked and taken at once.

Each case hands the same hand-made batch to a stack in one `receive` and to its twin (same
seed, same opening) one packet at a time, which never takes the bulk path: both must end
in the same state, with the same data to read, the same packets to send, the same
counters. Clean batches must go through `_Input.input_bulk`; a batch with anything the
per-packet path would treat differently (a bad checksum, a gap, another ACK or window, a
flag, a fragment, trailing bytes) must not be taken in bulk, and the per-packet path
then finds and counts it as it always did."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sunbeam.shared.proto.ip.wordsums import load_numpy
from sunbeam.shared.messages.dataplane import join_runs
from sunbeam.shared.proto.tcp.bulk import BULK_MIN, Burst, check
from sunbeam.shared.proto.wireguard.messages import split_segments
from sunbeam.shared.proto.tcp.input import _Input
from sunbeam.shared.proto.tcp.segment import ACK, FIN, PSH, URG, build_packet

from .scripted import Scripted

load_numpy()  # the proxy loads it on a thread at its first bulk batch (tcpengine); here, now

MSS = 1240
SEGMENTS = 24


class Twins:
    def __init__(self, isn: int, rcv_buffer: int = 1 << 20) -> None:
        self.one, self.each = Scripted(recv_buffer=rcv_buffer), Scripted(recv_buffer=rcv_buffer)
        self.cid, synack = self.one.passive_open(isn=isn)
        cid2, synack2 = self.each.passive_open(isn=isn)
        assert (self.cid, synack) == (cid2, synack2)
        self.seq, self.ack = isn + 1, synack.seq + 1

    def segments(self, count: int = SEGMENTS, size: int = MSS, *, start: int = 0) -> list[bytes]:
        rng = random.Random(count * 7 + start)
        s = self.one
        return [s.packet(ACK, self.seq + start + i * size, self.ack, rng.randbytes(size), window=4000)
                for i in range(count)]

    def feed(self, batch: list[bytes]) -> None:
        self.one.stack.receive(batch, 0.0)
        for p in batch:
            self.each.stack.receive([p], 0.0)

    def compare(self) -> bytes:
        """Both stacks alike: what they send, counters, events, then the data to read."""
        a, b = self.one.stack, self.each.stack
        assert a.poll(0.0) == b.poll(0.0)
        assert a.counters - Counter(bulk_runs=a.counters["bulk_runs"]) == b.counters
        assert _collapsed(a.events()) == _collapsed(b.events())  # a Readable per receive call there
        conn_a, conn_b = a._by_id[self.cid], b._by_id[self.cid]
        for f in ("state", "rcv_nxt", "rcv_adv", "snd_una", "snd_wnd", "snd_wl1", "snd_wl2", "quick_acks"):
            assert getattr(conn_a, f) == getattr(conn_b, f), f
        assert (conn_a.ooo and conn_a.ooo.nbytes) == (conn_b.ooo and conn_b.ooo.nbytes)
        data = a.read(self.cid, 1 << 24)
        assert data == b.read(self.cid, 1 << 24)
        return data


@pytest.fixture
def bulks(monkeypatch) -> list[int]:
    taken: list[int] = []
    original = _Input.input_bulk

    def counting(self, *args):
        ok = original(self, *args)
        if ok:
            taken.append(len(args[3]))
        return ok

    monkeypatch.setattr(_Input, "input_bulk", counting)
    return taken


def _collapsed(events: list) -> list:
    return [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]


def _payloads(batch: list[bytes]) -> bytes:
    return b"".join(p[40:] for p in batch)


@pytest.mark.parametrize("isn", [1000, (1 << 32) - 5 * MSS - 7], ids=["plain", "wraps"])
def test_clean_batch_is_taken_in_bulk(isn, bulks):
    t = Twins(isn)
    batch = t.segments()
    t.feed(batch)
    assert t.compare() == _payloads(batch)
    assert bulks == [SEGMENTS * MSS] and t.one.stack.counters["bulk_runs"] == 1


def test_short_segments_around_a_stretch(bulks):
    """A short segment before and after the full ones: the stretch between is taken."""
    t = Twins(1000)
    s = t.one
    head = s.packet(ACK, t.seq, t.ack, b"h" * 100, window=4000)
    middle = t.segments(start=100)
    tail = s.packet(ACK | PSH, t.seq + 100 + SEGMENTS * MSS, t.ack, b"t" * 33, window=4000)
    t.feed([head, *middle, tail])
    assert t.compare() == b"h" * 100 + _payloads(middle) + b"t" * 33
    assert bulks == [SEGMENTS * MSS]


def _flip(offset: int) -> Callable[[bytes], bytes]:
    return lambda p: p[:offset] + bytes([p[offset] ^ 0x40]) + p[offset + 1:]


def _set(offset: int, value: bytes) -> Callable[[bytes], bytes]:
    return lambda p: p[:offset] + value + p[offset + len(value):]


def _refix_ip(p: bytes) -> bytes:
    """The IPv4 header checksum made valid again after an edit."""
    h = bytearray(p[:20])
    h[10:12] = b"\0\0"
    s = sum(int.from_bytes(h[i:i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    h[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(h) + p[20:]


def _tcp_edit(**change: int) -> Callable[[bytes], bytes]:
    """The segment rebuilt (checksums valid) with TCP header fields changed: sport, dport,
    seq, ack, flags, window."""
    def edit(p: bytes) -> bytes:
        kw = {"sport": int.from_bytes(p[20:22], "big"), "dport": int.from_bytes(p[22:24], "big"),
              "seq": int.from_bytes(p[24:28], "big"), "ack": int.from_bytes(p[28:32], "big"), "flags": p[33],
              "window": int.from_bytes(p[34:36], "big")}
        kw.update(change)
        return build_packet(p[12:16], p[16:20], kw["sport"], kw["dport"], kw["seq"], kw["ack"], kw["flags"],
                            kw["window"], b"", p[40:])
    return edit


def _sums_traded(p: bytes) -> bytes:
    """The IP ident one up without mending the IP checksum, the TCP checksum one down: the
    whole packet sums as before, only the IP header is wrong."""
    ident = (int.from_bytes(p[4:6], "big") + 1) & 0xFFFF
    csum = (int.from_bytes(p[36:38], "big") - 1) % 0xFFFF
    return p[:4] + ident.to_bytes(2, "big") + p[6:36] + csum.to_bytes(2, "big") + p[38:]


# (what is done to packet 10 of the batch, the drop counter the per-packet path counts, if any)
SPOILED = {
    "tcp checksum": (_flip(700), "drop_bad_tcp_checksum"),
    "ip checksum": (_flip(10), "drop_bad_ip_checksum"),
    "ip checksum, tcp's making up for it": (_sums_traded, "drop_bad_ip_checksum"),
    "other ack": (_tcp_edit(ack=0), None),
    "other window": (_tcp_edit(window=999), None),
    "fin": (_tcp_edit(flags=ACK | FIN), None),
    "urg": (_tcp_edit(flags=ACK | URG), None),
    "no ack flag": (_tcp_edit(flags=PSH), None),
    "seq out of order": (_tcp_edit(seq=5000), None),
    "another local port": (_tcp_edit(dport=81), None),
    "another remote port": (_tcp_edit(sport=40001), None),
    "fragment": (lambda p: _refix_ip(_set(6, b"\x20\x00")(p)), None),
    "ip total length": (lambda p: _refix_ip(_set(2, (len(p) - 4).to_bytes(2, "big"))(p)), None),
    "ip options": (lambda p: _refix_ip(_set(0, b"\x46")(p)), None),
}


@pytest.mark.parametrize("name", list(SPOILED))
def test_a_spoiled_segment_sends_the_batch_one_by_one(name, bulks):
    spoil, counter = SPOILED[name]
    t = Twins(1000)
    batch = t.segments()
    batch[10] = spoil(batch[10])
    assert len(batch[10]) == len(batch[0])
    t.feed(batch)
    t.compare()
    assert bulks == []
    if counter:
        assert t.one.stack.counters[counter] == 1


def test_a_gap_and_a_duplicate(bulks):
    t = Twins(1000)
    batch = t.segments(SEGMENTS + 1)
    del batch[5]  # lost
    t.feed(batch)
    t.compare()
    assert bulks == [] and t.one.stack.counters["out_of_order"] > 0
    t2 = Twins(1000)
    batch = t2.segments()
    batch.insert(7, batch[6])
    t2.feed(batch)
    assert t2.compare() == _payloads(t2.segments())
    assert bulks == []


def test_over_the_window_goes_one_by_one(bulks):
    """The connection refuses a run its window cannot hold: the part that fits is taken
    per packet, the rest dropped as the twin drops it."""
    t = Twins(1000, rcv_buffer=16 * MSS)
    batch = t.segments()
    t.feed(batch)
    got = t.compare()
    assert bulks == [] and 0 < len(got) < len(_payloads(batch))


def test_a_stretch_shorter_than_bulk_min_is_not_checked(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr("sunbeam.shared.proto.tcp.stack.bulk_check",
                        lambda packets, length, addr_sum: calls.append(len(packets)) or check(packets, length, addr_sum))
    t = Twins(1000)
    t.feed(t.segments(BULK_MIN - 1))
    t.compare()
    assert calls == []
    t.feed(t.segments(BULK_MIN, start=(BULK_MIN - 1) * MSS))
    t.compare()
    assert calls == [BULK_MIN]


def test_check_pads_lengths_not_a_multiple_of_four():
    t = Twins(1000)
    batch = t.segments(BULK_MIN, size=1001)
    batch[-1] = _tcp_edit(flags=ACK | PSH)(batch[-1])
    run = check(batch, len(batch[0]), t.one.stack._by_id[t.cid].addr_sum)
    assert run is not None and run.data == _payloads(batch) and run.seqw == t.seq and run.ackw == t.ack
    assert run.wnd == 4000 and run.last_flags == ACK | PSH


# the same done to every packet of the batch, so each still matches the first
THROUGHOUT = {
    "not tcp": lambda p: _refix_ip(_set(9, b"\x11")(p)),
    "ip options": lambda p: _refix_ip(_set(0, b"\x46")(p)),
    "fragments": lambda p: _refix_ip(_set(6, b"\x20\x00")(p)),
    "trailing bytes": lambda p: p + b"\0\0\0\0",
    # summing to -4, they make up for the 4 bytes the pseudo-header's length would then add
    "trailing bytes, checksum-neutral": lambda p: p + b"\xff\xfb\0\0",
    "tcp options": lambda p: build_packet(p[12:16], p[16:20], int.from_bytes(p[20:22], "big"),
                                          int.from_bytes(p[22:24], "big"), int.from_bytes(p[24:28], "big"),
                                          int.from_bytes(p[28:32], "big"), ACK, 4000, b"\x01" * 4, p[44:]),
    "fin": _tcp_edit(flags=ACK | FIN),
    "no ack": _tcp_edit(flags=PSH),
}


@pytest.mark.parametrize("name", list(THROUGHOUT))
def test_a_batch_spoiled_throughout_is_refused(name, bulks):
    t = Twins(1000)
    batch = [THROUGHOUT[name](p) for p in t.segments()]
    assert len({len(p) for p in batch}) == 1
    assert check(batch, len(batch[0]), t.one.stack._by_id[t.cid].addr_sum) is None
    t.feed(batch)
    t.compare()
    assert bulks == []


def test_trailing_bytes_are_not_data_even_where_the_sequence_numbers_would_fit(bulks):
    """Segments 4 bytes short of their spacing, each padded after its IP length with 4
    bytes that keep the checksum right: only the total length field tells the pad from
    data (the per-packet path sees gaps)."""
    t = Twins(1000)
    rng = random.Random(5)
    batch = [t.one.packet(ACK, t.seq + i * MSS, t.ack, rng.randbytes(MSS - 4), window=4000) + b"\xff\xfb\0\0"
             for i in range(SEGMENTS)]
    assert check(batch, len(batch[0]), t.one.stack._by_id[t.cid].addr_sum) is None
    t.feed(batch)
    assert t.compare() == batch[0][40:-4]
    assert bulks == []


@pytest.mark.parametrize("tail", [0, 517], ids=["full-segments", "short-tail"])
@pytest.mark.parametrize("isn", [1000, (1 << 32) - 7 * MSS], ids=["plain", "wraps"])
def test_sending_in_bulk_builds_what_one_by_one_builds(isn, tail, monkeypatch):
    """A stack sending new data in bulk and its twin made to send it one by one (`_tx4_run`):
    the same packets byte for byte (the ident wraps too), the same RACK and RTT state, over
    several rounds of ACKs."""
    one, each = Scripted(), Scripted()
    (cid, synack), (_, synack2) = one.passive_open(isn=isn, window=65535), each.passive_open(isn=isn, window=65535)
    assert synack == synack2
    rng = random.Random(9)
    data = rng.randbytes(300 * MSS + tail)
    conns = [s.stack._by_id[cid] for s in (one, each)]
    for s, conn in zip((one, each), conns, strict=True):
        conn.ident = 0xFFF0
        conn.cc.cwnd = 40 * MSS
        s.stack.send(cid, data, s.now)
    import sunbeam.shared.proto.tcp.output as output
    built: list[int] = []
    real_build = output.bulk_build
    monkeypatch.setattr(output, "bulk_build", lambda *a: built.append(len(a[1])) or real_build(*a))
    got = b""
    bursts = 0
    for _ in range(12):
        out = one.stack.poll_bursts(one.now)  # as the proxy takes them: runs whole
        bursts += sum(isinstance(p, Burst) for p in out)
        sent_one = [q for p in out for q in (p.packets() if isinstance(p, Burst) else [p])]
        with monkeypatch.context() as m:
            m.setattr(output, "BULK_MIN", 1 << 30)
            sent_each = each.stack.poll(each.now)
        assert sent_one == sent_each
        a, b = conns
        assert (a.ident, a.rtt_seq, a.rtt_time, a.snd_nxt, a.snd_max) == (b.ident, b.rtt_seq, b.rtt_time, b.snd_nxt,
                                                                         b.snd_max)
        assert (a.rack.ends, a.rack.times, a.rack.tx_high) == (b.rack.ends, b.rack.times, b.rack.tx_high)
        got += b"".join(p[40:] for p in sent_one)
        if not sent_one:
            break
        top = int.from_bytes(sent_one[-1][24:28], "big") + len(sent_one[-1]) - 40
        for s in (one, each):
            s.now += 0.01
            s.stack.receive([s.packet(ACK, isn + 1, top, window=65535)], s.now)
    assert got == data
    assert len(built) >= 3 and sum(built) >= 200 * MSS and bursts == len(built)
    assert one.stack.counters["packets_out"] == each.stack.counters["packets_out"]


@pytest.mark.parametrize("size", [0, 1, 24, 40])
def test_a_batch_of_short_packets_is_dropped_one_by_one(size, bulks):
    """Twenty equal packets too short to carry data (empty ones too): no run is tried on
    them, and the per-packet path drops them as it always did."""
    t = Twins(1000)
    full = t.segments(1)[0]
    batch = [full[:size]] * 20
    before = t.one.stack.counters["packets_in"]
    t.feed(batch)
    t.compare()
    assert bulks == [] and t.one.stack.counters["packets_in"] - before == 20


def test_the_core_asks_for_numpy_and_never_imports_it():
    """A process that has not loaded numpy (the proxy before its first bulk batch): a batch
    that would use it goes one by one, intact, and marks numpy wanted -- the core never
    imports it itself (the proxy's shell does, on a thread of its own: tcpengine); once it
    is loaded, the same kind of batch takes the bulk path."""
    code = """
import json, sys
from sunbeam.shared.proto.ip import wordsums
from sunbeam.shared.proto.tcp.segment import ACK
from tests.tcp.scripted import Scripted

s = Scripted()
cid, synack = s.passive_open()
ack = synack.seq + 1

def batch(seq):
    s.stack.receive([s.packet(ACK, seq + i * 1000, ack, bytes([i]) * 1000) for i in range(32)], s.now)
    return [p.ack for p in s.out()]

out = {"wanted_at_start": wordsums.numpy_wanted(), "acks": batch(1001)}
out.update(imported="numpy" in sys.modules, wanted=wordsums.numpy_wanted(), bulk=s.stack.counters["bulk_runs"])
wordsums.load_numpy()
out.update(acks_after=batch(33001), wanted_after=wordsums.numpy_wanted(), bulk_after=s.stack.counters["bulk_runs"],
           data=s.stack.read(cid, 1 << 20) == b"".join(bytes([i]) * 1000 for i in range(32)) * 2)
print(json.dumps(out))
"""
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root,
                         check=False)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])
    assert got == {"wanted_at_start": False, "acks": [33001], "imported": False, "wanted": True, "bulk": 0,
                   "acks_after": [65001], "wanted_after": False, "bulk_after": 1, "data": True}


def _stretches_with_tails(t: Twins, stretches: list[tuple[int, int]], at: int = 0) -> list[bytes]:
    """Packets of stretches of (full segments, then a shorter one of so many bytes; 0: none),
    in stream order from ``at``, as a sender's 32 kB writes make them."""
    s, batch = t.one, []
    rng = random.Random(len(stretches))
    for count, tail in stretches:
        batch += [s.packet(ACK, t.seq + at + i * MSS, t.ack, rng.randbytes(MSS), window=4000) for i in range(count)]
        at += count * MSS
        if tail:
            batch.append(s.packet(ACK | PSH, t.seq + at, t.ack, rng.randbytes(tail), window=4000))
            at += tail
    return batch


def _feed_joined(t: Twins, batch: list[bytes]) -> bool:
    """``batch`` to one twin as the WireGuard worker sends it (`join_runs`, then
    `receive_joined`, per packet if refused, as the proxy does), one by one to the other."""
    entries, segments = join_runs(batch, min_run=1)
    assert segments and set(segments) == {MSS + 40}
    taken = t.one.stack.receive_joined(entries, MSS + 40, 0.0)
    if not taken:
        t.one.stack.receive([p for e in entries for p in split_segments(e, MSS + 40)], 0.0)
    for p in batch:
        t.each.stack.receive([p], 0.0)
    return taken


@pytest.mark.parametrize("stretches", [[(26, 536), (26, 536), (60, 0), (26, 12)], [(30, 536)], [(40, 0)]],
                         ids=["several", "one-with-tail", "one"])
@pytest.mark.parametrize("isn", [1000, (1 << 32) - 30 * MSS - 7], ids=["plain", "wraps"])
def test_stretches_with_shorter_packets_between_are_taken_in_one_check(isn, stretches, bulks):
    """A download's batch from the worker: stretches of full segments, each ended by a
    shorter one (a 32 kB write), and one run past the 64 kB entry size: all of it one run,
    its data in stream order; also one entry alone, with and without a shorter packet."""
    t = Twins(isn)
    opening = t.segments(2)
    t.feed(opening)  # our ACK opens the window past 64 kB
    assert t.compare() == _payloads(opening) and bulks == []
    batch = _stretches_with_tails(t, stretches, at=2 * MSS)
    assert _feed_joined(t, batch)
    assert t.compare() == _payloads(batch)
    assert bulks == [len(_payloads(batch))] and t.one.stack.counters["bulk_runs"] == 1


@pytest.mark.parametrize("spoil", [
    lambda p: p[:-1] + bytes([p[-1] ^ 1]),  # its TCP checksum
    _tcp_edit(flags=ACK | FIN),
    _tcp_edit(seq=5),
    _tcp_edit(window=4001),
    _tcp_edit(ack=1),
    _tcp_edit(dport=81),
], ids=["checksum", "fin", "seq", "window", "ack", "port"])
def test_a_shorter_packet_that_does_not_continue_the_run_sends_all_one_by_one(spoil, bulks):
    t = Twins(1000)
    batch = _stretches_with_tails(t, [(20, 536), (20, 100)])
    batch[20] = spoil(batch[20])
    assert not _feed_joined(t, batch)
    t.compare()


def test_fewer_full_segments_than_a_run_needs_go_one_by_one(bulks):
    t = Twins(1000)
    batch = _stretches_with_tails(t, [(BULK_MIN - 1, 536)])
    assert not _feed_joined(t, batch)
    assert t.compare() == _payloads(batch)
