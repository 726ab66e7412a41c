"""Property tests: peer garbage never raises (it is a counted drop), and a lossy, duplicating,
reordering network delivers each packet at most once and never anything not sent."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sunbeam.shared.proto.wireguard import Decapsulated

from .twodevices import A4, B4, T0, established, make_pair, udp4

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# One established pair shared by the garbage tests (garbage must not change what works).
PAIR = established()
A, B = PAIR
[REAL_TRANSPORT] = B.encapsulate(A.public_key, [udp4(B4, A4, b"real")], T0)


def _fresh_handshake_messages():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [udp4(A4, B4, b"hs")], T0)
    [resp] = b.decapsulate(init, T0).to_peer
    cookie = b.decapsulate(init, T0, under_load=True, src=b"s").to_peer[0]
    return init, resp, cookie


INIT, RESP, COOKIE = _fresh_handshake_messages()
REAL = [INIT, RESP, COOKIE, REAL_TRANSPORT]
SENT = {udp4(B4, A4, b"real"), udp4(A4, B4, b"hs")}


def _check(res: Decapsulated) -> None:
    assert isinstance(res, Decapsulated)
    assert all(p in SENT for p in res.to_tunnel)
    if res.error is not None:
        assert A.counters.get(res.error, 0) >= 1


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(data, under_load):
    res = A.decapsulate(data, T0 + 1, under_load=under_load, src=b"x")
    _check(res)
    assert res.error is not None and res.to_tunnel == []
    assert A.initiator_static(data, T0) is None


@SETTINGS
@given(st.sampled_from([(1, 148), (2, 92), (3, 64), (4, 32), (4, 100), (4, 1500)]), st.data(), st.booleans())
def test_well_framed_garbage_never_raises(kind, data, known_index):
    t, n = kind
    body = bytearray(data.draw(st.binary(min_size=n - 4, max_size=n - 4)))
    if known_index and A._entries:  # aim at a live index so decryption is attempted
        index = data.draw(st.sampled_from(sorted(A._entries)))
        struct.pack_into("<I", body, 4 if t == 2 else 0, index)
    res = A.decapsulate(bytes([t, 0, 0, 0]) + bytes(body), T0 + 1, under_load=data.draw(st.booleans()), src=b"y")
    _check(res)
    assert res.error is not None and res.to_tunnel == []


@SETTINGS
@given(st.sampled_from(range(len(REAL))), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                   min_size=1, max_size=4),
       st.sampled_from(["flip", "truncate", "extend"]))
def test_mutated_real_messages_never_raise(which, edits, how):
    msg = bytearray(REAL[which])
    if how == "flip":
        for pos, val in edits:
            msg[pos % len(msg)] ^= val or 1
    elif how == "truncate":
        del msg[edits[0][0] % len(msg):]
    else:
        msg += bytes(v for _, v in edits)
    for dev in (A, B):
        res = dev.decapsulate(bytes(msg), T0 + 2, under_load=False)
        assert isinstance(res, Decapsulated)
        assert all(p in SENT for p in res.to_tunnel)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.sampled_from(["deliver", "drop", "dup"])), min_size=1,
                max_size=120))
def test_lossy_duplicating_reordering_network(schedule):
    a, b = established()
    packets = [udp4(B4, A4, struct.pack("!I", i)) for i in range(60)]
    msgs = b.encapsulate(a.public_key, packets, T0 + 1)
    got: list[bytes] = []
    delivered: set[int] = set()
    dropped: set[int] = set()
    for i, action in schedule:
        if action == "drop":
            dropped.add(i)
            continue
        for _ in range(2 if action == "dup" else 1):
            res = a.decapsulate(msgs[i], T0 + 1)
            got.extend(res.to_tunnel)
            if res.to_tunnel:
                assert i not in delivered
                delivered.add(i)
            else:
                assert res.error == "replay" and i in delivered
    assert len(got) == len(set(got)) == len(delivered)
    assert got == [packets[i] for i in dict.fromkeys(i for i, act in schedule if act != "drop")]
