"""Disco codec: upstream golden payloads, packets sealed by the real Go code, round trips,
and garbage (only DiscoError, never anything else)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbeam.shared.keys import public_from_private
from sunbeam.shared.proto import disco
from sunbeam.shared.proto.disco import CallMeMaybe, DiscoBoxes, DiscoError, Ping, Pong

TXID = bytes(range(1, 13))
KEY_1_2_30_31 = bytes(32)[:1] + b"\x01\x02" + bytes(27) + b"\x1e\x1f"

# ts:disco/disco_test.go TestMarshalAndParse (the payload inside the box)
UPSTREAM = [
    (Ping(TXID), "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c"),
    (Ping(TXID, KEY_1_2_30_31),
     "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
     " 00 00 00 00 00 00 00 00 1e 1f"),
    (Ping(TXID, None, 3), "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00"),
    (Ping(TXID, KEY_1_2_30_31, 3),
     "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
     " 00 00 00 00 00 00 00 00 1e 1f 00 00 00"),
    (Pong(TXID, "2.3.4.5:1234"),
     "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00 00 00 00 00 00 00 00 ff ff 02 03 04 05 04 d2"),
    (Pong(TXID, "[fed0::12]:6666"),
     "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c fe d0 00 00 00 00 00 00 00 00 00 00 00 00 00 12 1a 0a"),
    (CallMeMaybe(), "03 00"),
    (CallMeMaybe(("1.2.3.4:567", "[2001::3456]:789")),
     "03 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56"
     " 03 15"),
]


@pytest.mark.parametrize("msg,want", UPSTREAM)
def test_upstream_payload_vectors(msg, want):
    wire = bytes.fromhex(want.replace(" ", ""))
    assert msg.encode() == wire
    assert disco.parse(wire) == msg


# Sealed by tests/proto/gen_disco_vectors.go (real tailscale.com/disco + x/crypto/nacl/box).
SENDER_PRIV = bytes(range(0x01, 0x21))
RECV_PRIV = bytes(range(0x41, 0x61))
NONCE = bytes(range(0xA0, 0xB8))
NODE_KEY = bytes(range(0x81, 0xA1))
SENDER_PUB = bytes.fromhex("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
RECV_PUB = bytes.fromhex("64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466")
HEAD = "5453f09f92ac" + SENDER_PUB.hex() + NONCE.hex()
GO_SEALED = [
    (Ping(TXID, NODE_KEY), "cb93eb83b0a60e2de504feb4d38e039d07d9c8803e9b828bed094a94f85409b85e4292e3d9c6513e21059"
                           "26ea2da08d0bc770b9d1882e32ca4e98743bcc8"),
    (Ping(TXID, NODE_KEY, 5), "1c353fcaef3f4b9b5d735df9cd27f00507d9c8803e9b828bed094a94f85409b85e4292e3d9c6513e2"
                              "105926ea2da08d0bc770b9d1882e32ca4e98743bcc8b0977536e6"),
    (Pong(bytes(range(12, 0, -1)), "192.0.2.7:41641"),
     "557c38c8fa265612a5f3f0a1b18d6e6304d9c58937968f8aec04479df159883addc617655e4ed8b45576dfe02f4d3beb"),
    (Pong(bytes(range(12, 0, -1)), disco.derp_src(999)),
     "db96973a5e9e414db9bfa38010e5e45b04d9c58937968f8aec04479df159883addc617655e4ed8b4557660e32e629aa5"),
    (CallMeMaybe(("1.2.3.4:567", "[2001::3456]:789")),
     "2787f855fb9685e5bc5db3813c45ddc405d9c9823d9f878dea01439e0ca78938dec215527e4fd8b4aa891fe02d4a99422fe3aa5d"
     "8c0f"),
]


def test_keys_match_go():
    assert public_from_private(SENDER_PRIV) == SENDER_PUB
    assert public_from_private(RECV_PRIV) == RECV_PUB


@pytest.mark.parametrize("msg,box_hex", GO_SEALED)
def test_seal_matches_go_and_opens(msg, box_hex):
    want = bytes.fromhex(HEAD + box_hex)
    assert disco.seal(SENDER_PRIV, RECV_PUB, msg, NONCE) == want
    assert DiscoBoxes(SENDER_PRIV).seal(RECV_PUB, msg, NONCE) == want
    assert disco.looks_like_disco(want)
    assert disco.open_packet(RECV_PRIV, want) == (SENDER_PUB, msg)
    assert DiscoBoxes(RECV_PRIV).open(want) == (SENDER_PUB, msg)


def test_wrong_recipient_and_tampering():
    pkt = bytes.fromhex(HEAD + GO_SEALED[0][1])
    with pytest.raises(DiscoError) as e:
        disco.open_packet(SENDER_PRIV, pkt)  # sealed to RECV, not to the sender
    assert e.value.reason == "bad_box"
    for i in (0, 6, 40, 62, 70, len(pkt) - 1):  # magic, key, nonce, tag, body
        bad = bytearray(pkt)
        bad[i] ^= 0x01
        with pytest.raises(DiscoError) as e:
            disco.open_packet(RECV_PRIV, bytes(bad))
        assert e.value.reason in ("bad_magic", "bad_box")
    with pytest.raises(DiscoError) as e:
        disco.open_packet(RECV_PRIV, pkt[:79])
    assert e.value.reason == "short"


def test_low_order_sender_key_is_a_disco_error():
    pkt = disco.MAGIC + bytes(32) + NONCE + bytes(40)
    for opener in (lambda p: disco.open_packet(RECV_PRIV, p), DiscoBoxes(RECV_PRIV).open):
        with pytest.raises(DiscoError) as e:
            opener(pkt)
        assert e.value.reason == "bad_key"


def test_unknown_type_and_short_bodies():
    boxes = DiscoBoxes(SENDER_PRIV)
    for payload, reason in [(b"\x04\x00" + bytes(72), "unknown_type"), (b"\x01", "short"),
                            (b"\x01\x00" + bytes(11), "short"), (b"\x02\x00" + bytes(29), "short")]:
        pkt = disco.MAGIC + SENDER_PUB + NONCE + boxes.box(RECV_PUB).encrypt(payload, NONCE).ciphertext
        with pytest.raises(DiscoError) as e:
            disco.open_packet(RECV_PRIV, pkt)
        assert e.value.reason == reason


def test_lenient_like_upstream():
    # Trailing bytes after a pong, a call-me-maybe of odd length or a later version.
    assert disco.parse(Pong(TXID, "1.2.3.4:5").encode() + b"xyz") == Pong(TXID, "1.2.3.4:5")
    assert disco.parse(b"\x03\x00" + bytes(19)) == CallMeMaybe()
    assert disco.parse(b"\x03\x01" + bytes(18)) == CallMeMaybe()
    assert disco.parse(b"\x01\x07" + TXID) == Ping(TXID)
    # a zero node key means "none", as Go's key.NodePublic.IsZero
    assert disco.parse(b"\x01\x00" + TXID + bytes(34)) == Ping(TXID, None, 2)
    assert Ping(TXID, bytes(32)).encode() == Ping(TXID).encode()


def test_looks_like_disco():
    assert not disco.looks_like_disco(disco.MAGIC + bytes(55))
    assert disco.looks_like_disco(disco.MAGIC + bytes(56))
    assert not disco.looks_like_disco(b"\x04\x00\x00\x00" + bytes(60))


def test_encoding_our_bad_message_is_valueerror():
    for msg in (Ping(b"short"), Ping(TXID, b"k"), Pong(TXID, "nope"), Pong(TXID, "1.2.3.4:70000"),
                CallMeMaybe(("[::1]",))):
        with pytest.raises(ValueError):
            msg.encode()
    with pytest.raises(ValueError):
        disco.seal(SENDER_PRIV, RECV_PUB, Ping(TXID), b"short nonce")


def test_address_text():
    assert disco.parse_addr_port("[fe80::1%eth0]:7") == (ipaddress.IPv6Address("fe80::1%eth0"), 7)
    assert disco.pack_addr_port("[fe80::1%eth0]:7") == ipaddress.IPv6Address("fe80::1").packed + b"\x00\x07"
    assert disco.format_addr_port(ipaddress.IPv6Address("::ffff:1.2.3.4"), 9) == "1.2.3.4:9"
    for bad in ("1.2.3.4", "[::1]", "::1:5", "[1.2.3.4]:5", "1.2.3.4:-1", "1.2.3.4:", "host:80"):
        with pytest.raises(ValueError):
            disco.parse_addr_port(bad)


# -- properties -----------------------------------------------------------------------

v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(lambda a: f"[{a}]")
addrs = st.tuples(st.one_of(v4, v6), st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}")
txids = st.binary(min_size=12, max_size=12)
node_keys = st.binary(min_size=32, max_size=32).filter(any)
messages = st.one_of(
    st.builds(Ping, txids, node_keys, st.integers(0, 1200)),
    st.builds(Ping, txids, st.none(), st.integers(0, 31)),  # 32+ zero bytes read as a zero key
    st.builds(Pong, txids, addrs),
    st.builds(CallMeMaybe, st.lists(addrs, min_size=1, max_size=20).map(tuple)),
)


@given(messages, st.binary(min_size=24, max_size=24))
@settings(max_examples=300, deadline=None)
def test_round_trip(msg, nonce):
    pkt = disco.seal(SENDER_PRIV, RECV_PUB, msg, nonce)
    assert disco.open_packet(RECV_PRIV, pkt) == (SENDER_PUB, msg)
    assert disco.parse(msg.encode()) == msg


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_garbage_packets_only_disco_error(data):
    for pkt in (data, disco.MAGIC + data, disco.MAGIC + SENDER_PUB + data):
        try:
            disco.open_packet(RECV_PRIV, pkt)
        except DiscoError:
            pass


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_garbage_payloads_only_disco_error(payload):
    # A well-sealed box holding garbage: what a buggy or hostile peer could send.
    boxes = DiscoBoxes(SENDER_PRIV)
    pkt = disco.MAGIC + SENDER_PUB + NONCE + boxes.box(RECV_PUB).encrypt(payload, NONCE).ciphertext
    try:
        sender, msg = DiscoBoxes(RECV_PRIV).open(pkt)
    except DiscoError:
        return
    assert sender == SENDER_PUB and isinstance(msg, (Ping, Pong, CallMeMaybe))


def test_box_cache_is_bounded():
    boxes = DiscoBoxes(RECV_PRIV, max_peers=2)
    keys = [public_from_private(bytes([i]) * 32) for i in range(1, 5)]
    for k in keys:
        boxes.box(k)
    assert len(boxes._boxes) == 2 and set(boxes._boxes) == set(keys[2:])
