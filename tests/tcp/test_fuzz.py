"""Peer garbage never raises: random bytes, mutated segments (with their checksums fixed so
they reach the TCP logic), and arbitrary well-formed segments against every state."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from sunbeam.shared.proto.ip.headers import checksum
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_sack_option,
    build_syn_options,
    tcp_checksum,
)

from .scripted import STATES, Scripted, stack_in


def _fix_checksums(pkt: bytearray) -> bytes:
    if len(pkt) >= 40 and pkt[0] == 0x45:
        total = min(struct.unpack_from("!H", pkt, 2)[0], len(pkt))
        pkt[10:12] = b"\0\0"
        pkt[10:12] = checksum(pkt[:20]).to_bytes(2, "big")
        if total >= 40:
            pkt[36:38] = b"\0\0"
            pkt[36:38] = tcp_checksum(bytes(pkt[12:16]), bytes(pkt[16:20]), bytes(pkt[20:total])).to_bytes(2, "big")
    return bytes(pkt)


def _drive(s: Scripted, packets: list[bytes]) -> None:
    s.stack.receive(packets, s.now)
    s.stack.poll(s.now)
    s.stack.events()
    s.now += 0.3
    s.stack.handle_timer(s.now)
    s.stack.poll(s.now)
    s.stack.events()
    for conn in list(s.stack._by_id.values()):
        assert len(conn.rcv_buf) <= s.stack.cfg.recv_buffer
        assert len(conn.sbuf) <= s.stack.cfg.send_buffer
        assert conn.snd_una <= conn.snd_nxt <= conn.snd_max or conn.state >= 9


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(STATES), st.lists(st.binary(max_size=120), max_size=8))
def test_random_bytes(state, packets):
    s, _ = stack_in(state)
    _drive(s, packets)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STATES), st.data())
def test_mutated_segments(state, data):
    s, cid = stack_in(state)
    conn = s.stack._by_id.get(cid) if cid else None
    rcv = conn.rcv_nxt if conn else 1001
    snd = conn.snd_una if conn else 0
    base = [
        s.packet(SYN, 1000, options=build_syn_options(1240, 7, True)),
        s.packet(ACK | PSH, rcv, snd, b"payload" * 20),
        s.packet(ACK, rcv, snd, options=build_sack_option([(snd + 10, snd + 2000), (snd - 50, snd)])),
        s.packet(FIN | ACK, rcv, snd),
        s.packet(RST, rcv),
        s.packet(SYN | ACK, 1000, snd, options=build_syn_options(536, 14, True)),
    ]
    packets = []
    for _ in range(data.draw(st.integers(1, 6))):
        pkt = bytearray(data.draw(st.sampled_from(base)))
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(pkt) - 1))
            pkt[i] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            del pkt[data.draw(st.integers(0, len(pkt))):]
        packets.append(_fix_checksums(pkt) if data.draw(st.booleans()) else bytes(pkt))
    _drive(s, packets)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STATES), st.lists(st.tuples(
    st.integers(0, 255), st.integers(-70000, 70000), st.integers(-70000, 70000), st.integers(0, 65535),
    st.binary(max_size=1500), st.sampled_from([b"", build_syn_options(1, 0, True), build_sack_option([(1, 2)]),
                                               bytes([1, 1, 8, 10]) + bytes(8), bytes([5, 10]) + bytes(10)])),
    max_size=10))
def test_arbitrary_segments_in_every_state(state, segments):
    s, cid = stack_in(state)
    conn = s.stack._by_id.get(cid) if cid else None
    rcv = conn.rcv_nxt if conn else 1001
    snd = conn.snd_una if conn else 0
    for flags, dseq, dack, window, payload, opts in segments:
        _drive(s, [s.packet(flags, (rcv + dseq) & 0xFFFFFFFF, (snd + dack) & 0xFFFFFFFF, payload[:1240],
                            window=window, options=opts)])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.tuples(st.sampled_from(
    ["send_a", "send_b", "read_a", "read_b", "step", "step", "step", "shut_a", "shut_b"]),
    st.integers(1, 40_000)), max_size=40), st.floats(0, 0.1), st.floats(0, 0.2))
def test_two_stacks_random_user_actions(seed, actions, loss, reorder):
    """Random user calls on both ends over a random lossy link: each side only ever reads a
    prefix of what the other sent, and after both shut down everything arrives."""
    import random

    from .link import Impairer, Pair, make_stack

    rng = random.Random(seed)
    a = make_stack("10.0.0.1", seed, recv_buffer=rng.choice([3000, 65536, 1 << 20]))
    b = make_stack("10.0.0.2", seed + 1, send_buffer=rng.choice([2000, 65536, 1 << 20]))
    b.listen(80)
    pair = Pair(a, b, Impairer(seed, loss=loss, reorder=reorder, dup=0.01),
                Impairer(seed + 1, loss=loss, reorder=reorder, dup=0.01), delay=rng.randint(1, 4))
    ids = {"a": a.connect("10.0.0.1", ("10.0.0.2", 80), 0.0), "b": None}
    sent = {"a": bytearray(), "b": bytearray()}
    got = {"a": bytearray(), "b": bytearray()}
    shut = {"a": False, "b": False}

    def on_event(side, ev):
        if hasattr(ev, "src"):
            ids["b"] = ev.conn_id
            b.accept(ev.conn_id)

    pair.on_event = on_event
    stacks = {"a": a, "b": b}

    def act(op, n):
        if op == "step":
            for _ in range(n % 50):
                pair.step()
            return
        side = op[-1]
        stack, cid = stacks[side], ids[side]
        if cid is None:
            return
        elif op.startswith("send") and not shut[side]:
            data = rng.randbytes(n)
            k = stack.send(cid, data, pair.now)
            sent[side] += data[:k]
        elif op.startswith("read"):
            got[side] += stack.read(cid, n)
        elif op.startswith("shut") and not shut[side]:
            stack.shutdown(cid, pair.now)
            shut[side] = True
        other = "b" if side == "a" else "a"
        assert sent[other].startswith(got[side])

    for op, n in actions:
        act(op, n)
    for _ in range(200):  # let the handshake finish
        pair.step()
    for side in ("a", "b"):
        if ids[side] is not None and not shut[side]:
            stacks[side].shutdown(ids[side], pair.now)
    for _ in range(200_000):
        pair.step()
        for side in ("a", "b"):
            if ids[side] is not None:
                got[side] += stacks[side].read(ids[side], 1 << 20)
        if got["a"] == sent["b"] and got["b"] == sent["a"] and not a._by_key and not b._by_key:
            break
    assert got["a"] == sent["b"] and got["b"] == sent["a"]
