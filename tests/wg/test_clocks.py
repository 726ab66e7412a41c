"""WireGuard's timers run on the monotonic ``now``; only the initiation's TAI64N timestamp
reads the wall clock. A wall-clock step (NTP, a resumed laptop) must neither fire nor
stall rekeys and keepalives."""

from __future__ import annotations

from sunbeam.shared.proto.wireguard import Device
from sunbeam.shared.proto.wireguard.noise import tai64n

from .helpers import DetRandom, converse, key
from .twodevices import A4, A_WORKER, B4, B_WORKER, T0, udp4

MONO = 50.0  # monotonic seconds since boot: nowhere near the wall clock


def _pair(wall: list[float]) -> tuple[Device, Device]:
    a = Device(private_key=key("a static"), worker=A_WORKER, random_bytes=DetRandom(b"a"),
               wall_clock=lambda: wall[0])
    b = Device(private_key=key("b static"), worker=B_WORKER, random_bytes=DetRandom(b"b"))
    a.set_peer(b.public_key, [f"{B4}/32"])
    b.set_peer(a.public_key, [f"{A4}/32"])
    return a, b


def test_the_timestamp_is_wall_time_and_the_timers_monotonic():
    wall = [T0]
    a, b = _pair(wall)
    first = udp4(A4, B4, b"hello")
    _, at_b = converse(a, b, a.encapsulate(b.public_key, [first], MONO), MONO)
    assert at_b == [first]
    # the responder saw the wall clock's TAI64N, not the monotonic now
    assert b._peers[a.public_key].handshake.last_timestamp == tai64n(T0)
    assert a.peer_stats(b.public_key)["last_handshake"] == MONO
    deadline = a.next_timer()
    assert deadline is not None and MONO < deadline < MONO + 200

    for step in (-86400.0, 365 * 86400.0):  # the wall clock set back a day, then on a year
        wall[0] = T0 + step
        assert a.next_timer() == deadline
        assert a.update_timers(MONO + 1) == []  # a year on, the session would have expired
        data = a.encapsulate(b.public_key, [udp4(A4, B4, b"still")], MONO + 1)
        assert len(data) == 1 and data[0][:1] == b"\x04"  # transport data: no new handshake


def test_a_wall_clock_stepped_back_makes_the_peer_refuse_the_replayed_looking_initiation():
    """What WireGuard's replay guard does with wall time (as in wireguard-go): a new
    initiation stamped earlier than the last is refused, so the stamp must be wall time
    that only moves forward in practice, and never the monotonic clock, which restarts at
    boot."""
    wall = [T0]
    a, b = _pair(wall)
    converse(a, b, a.encapsulate(b.public_key, [udp4(A4, B4, b"x")], MONO), MONO)
    refused = b.counters.get("handshake_replay", 0)
    wall[0] = T0 - 60
    later = MONO + 200  # past REKEY_AFTER_TIME: the next send starts a handshake
    init = a.encapsulate(b.public_key, [udp4(A4, B4, b"y")], later)
    converse(a, b, init, later)
    assert b.counters.get("handshake_replay", 0) == refused + 1, b.counters
