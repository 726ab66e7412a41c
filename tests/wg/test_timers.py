"""Protocol timers on two Devices with a simulated clock: passive keepalive, handshake
retries and giving up, re-handshake after silence, rekey after time / messages, session
expiry, zeroing keys."""

from __future__ import annotations

from sunbeam.shared.proto.wireguard import (
    MESSAGE_INITIATION,
    MESSAGE_TRANSPORT,
    message_type,
    receiver_index,
)
from sunbeam.shared.proto.wireguard.messages import KEEPALIVE_LEN
from sunbeam.shared.proto.wireguard.replay import REJECT_AFTER_MESSAGES
from sunbeam.shared.proto.wireguard.timers import REKEY_AFTER_MESSAGES

from .helpers import converse, deliver, simulate
from .twodevices import A4, B4, T0, established, make_pair, udp4


def test_idle_device_has_no_timers():
    a, _b = make_pair()
    assert a.next_timer() is None and a.update_timers(T0 + 1000) == []


def test_passive_keepalive():
    a, b = established()  # B received data at T0 and has sent nothing since
    assert b.next_timer() == T0 + 10
    assert b.update_timers(T0 + 9.99) == []
    [(peer, [ka])] = b.update_timers(T0 + 10)
    assert peer == a.public_key and len(ka) == KEEPALIVE_LEN and message_type(ka) == MESSAGE_TRANSPORT
    r = a.decapsulate(ka, T0 + 10)
    assert r.to_tunnel == [] and r.error is None and r.peer_key == b.public_key
    assert a.counters["keepalive_rx"] == 1 and b.counters["keepalive_tx"] == 1
    # the keepalive cancelled A's "new handshake" timer: only key zeroing is left
    assert a.next_timer() == T0 + 540


def test_no_keepalive_when_we_answered_and_another_when_needed():
    a, b = established()
    b.encapsulate(a.public_key, [udp4(B4, A4, b"answer")], T0 + 3)
    assert b.update_timers(T0 + 10) == []
    # data received twice while the keepalive timer runs: a second keepalive follows
    for t in (T0 + 20, T0 + 25):
        deliver(b, a.encapsulate(b.public_key, [udp4(A4, B4, b"d")], t), t)
    [(_, [ka1])] = b.update_timers(T0 + 30)
    assert b.next_timer() == T0 + 40
    [(_, [ka2])] = b.update_timers(T0 + 40)
    assert len(ka1) == len(ka2) == KEEPALIVE_LEN


def test_new_handshake_after_silence():
    a, b = established()
    b.update_timers(T0 + 10)  # B's keepalive is lost
    due = a.next_timer()
    assert T0 + 15 <= due < T0 + 15.334
    [(peer, [init])] = a.update_timers(due)
    assert peer == b.public_key and message_type(init) == MESSAGE_INITIATION
    assert a.counters["handshake_new_after_silence"] == 1
    converse(a, b, [init], due)
    assert a.counters["handshake_completed"] == 2


def test_retransmit_then_give_up():
    a, b = make_pair()
    assert len(a.encapsulate(b.public_key, [udp4(A4, B4, b"lost")], T0)) == 1
    times = [T0]
    while True:
        due = a.next_timer()
        out = a.update_timers(due)
        if not out:
            break
        [(_, [init])] = out
        assert message_type(init) == MESSAGE_INITIATION
        assert 5.0 <= due - times[-1] < 5.334
        times.append(due)
    assert len(times) == 20  # the first try and 19 retries: ~REKEY_ATTEMPT_TIME
    assert 95 <= times[-1] - T0 <= 107
    assert a.counters["handshake_gave_up_drop"] == 1 and a.peer_stats(b.public_key)["staged"] == 0
    assert a.counters["handshake_initiation_sent"] == 20
    zero_at = a.next_timer()
    assert zero_at == due + 540
    a.update_timers(zero_at)
    assert a.next_timer() is None and a._entries == {}


def test_rekey_after_time_initiator_only():
    a, b = established()
    [m] = a.encapsulate(b.public_key, [udp4(A4, B4, b"t")], T0 + 120)
    assert message_type(m) == MESSAGE_TRANSPORT
    old_b = b.encapsulate(a.public_key, [udp4(B4, A4, b"old")], T0 + 121)
    assert len(old_b) == 1  # the responder does not rekey on time
    data, init = a.encapsulate(b.public_key, [udp4(A4, B4, b"t2")], T0 + 121)
    assert message_type(data) == MESSAGE_TRANSPORT and message_type(init) == MESSAGE_INITIATION
    _, at_b = converse(a, b, [data, init], T0 + 121)
    assert at_b == [udp4(A4, B4, b"t2")]
    # B's message on the old keypair, delayed past the rekey, is still accepted (previous)
    assert a.decapsulate(old_b[0], T0 + 122).to_tunnel == [udp4(B4, A4, b"old")]
    [new_b] = b.encapsulate(a.public_key, [udp4(B4, A4, b"new")], T0 + 122)
    assert receiver_index(new_b) != receiver_index(old_b[0])
    assert a.decapsulate(new_b, T0 + 122).to_tunnel == [udp4(B4, A4, b"new")]
    assert a.counters["handshake_completed"] == 2 and b.counters["handshake_completed"] == 2


def test_rekey_after_messages():
    a, b = established()
    a._peers[b.public_key].keypairs.current.send_counter = REKEY_AFTER_MESSAGES + 1
    out = a.encapsulate(b.public_key, [udp4(A4, B4, b"x")], T0 + 1)
    assert [message_type(m) for m in out] == [MESSAGE_TRANSPORT]  # < REKEY_TIMEOUT since the last
    out = a.encapsulate(b.public_key, [udp4(A4, B4, b"x")], T0 + 6)
    assert [message_type(m) for m in out] == [MESSAGE_TRANSPORT, MESSAGE_INITIATION]
    # at the hard limit the old session is not used at all
    a2, b2 = established()
    a2._peers[b2.public_key].keypairs.current.send_counter = REJECT_AFTER_MESSAGES
    out = a2.encapsulate(b2.public_key, [udp4(A4, B4, b"x")], T0 + 6)
    assert [message_type(m) for m in out] == [MESSAGE_INITIATION]


def test_last_minute_handshake_on_receive():
    a, b = established()
    [m] = b.encapsulate(a.public_key, [udp4(B4, A4, b"late")], T0 + 166)
    r = a.decapsulate(m, T0 + 166)
    assert r.to_tunnel == [udp4(B4, A4, b"late")]
    assert [message_type(x) for x in r.to_peer] == [MESSAGE_INITIATION]
    [m2] = b.encapsulate(a.public_key, [udp4(B4, A4, b"later")], T0 + 167)
    assert a.decapsulate(m2, T0 + 167).to_peer == []  # only once


def test_session_expiry():
    a, b = established()
    [late] = b.encapsulate(a.public_key, [udp4(B4, A4, b"late")], T0 + 179)
    assert a.decapsulate(late, T0 + 180.5).error == "expired"
    out = a.encapsulate(b.public_key, [udp4(A4, B4, b"after")], T0 + 180)
    assert [message_type(m) for m in out] == [MESSAGE_INITIATION]  # not sent on the old keys
    _, at_b = converse(a, b, out, T0 + 180)
    assert at_b == [udp4(A4, B4, b"after")]


def test_keys_zeroed_after_three_reject_times():
    a, b = established()
    at_a, at_b, _ = simulate(a, b, T0, T0 + 600)
    assert at_a == [] and at_b == []
    for dev, peer in ((a, b), (b, a)):
        assert dev.counters["keys_zeroed"] == 1
        assert not dev.peer_stats(peer.public_key)["session"]
        assert dev._entries == {} and dev.next_timer() is None
    # traffic after that starts a fresh handshake
    _, at_b, _ = simulate(a, b, T0 + 700, T0 + 701,
                          to_b=a.encapsulate(b.public_key, [udp4(A4, B4, b"again")], T0 + 700))
    assert at_b == [udp4(A4, B4, b"again")]


def test_long_lived_session_keeps_rekeying():
    """Ten minutes of traffic every 7 s: sessions rotate, nothing is lost."""
    a, b = established()
    sent = got = 0
    now = T0
    for i in range(90):
        now = T0 + 7 * i
        pa, pb = udp4(A4, B4, b"%d" % i), udp4(B4, A4, b"%d" % i)
        at_a, at_b, _ = simulate(a, b, now, now + 6.9, to_b=a.encapsulate(b.public_key, [pa], now),
                                 to_a=b.encapsulate(a.public_key, [pb], now))
        sent += 2
        got += (pa in at_b) + (pb in at_a)
    assert got == sent
    assert a.counters["handshake_completed"] >= 5
    assert "expired" not in a.counters and "expired" not in b.counters
