"""Fuzz targets of the peer-facing relay and discovery path: DERP (frame decoder and the
whole client core), disco (sealed packets and payloads), STUN, WireGuard (every message
type into an established device, and arbitrary inner packets through a real session).

Contracts (module docstrings): ``FrameDecoder.feed`` never raises, an oversize length sets
``error``; ``DerpClientCore.receive_data`` never raises, ``Closed`` / ``Dropped`` carry the
reason; disco raises ``DiscoError`` with a ``reason`` from a closed set; STUN raises
``StunError`` with a ``reason`` from a closed set; ``Device.decapsulate`` never raises, a
drop is ``Decapsulated.error`` and is counted under that name.
"""

from __future__ import annotations

from sunbeam.shared.proto import disco, stun
from sunbeam.shared.proto.derp import (
    HEADER_LEN,
    MAX_FRAME_LEN,
    Closed,
    DerpClientCore,
    Dropped,
    FrameDecoder,
    FrameTooLarge,
    FrameType,
    encode_frame,
)
from sunbeam.shared.proto.derp.events import (
    Connected,
    Health,
    KeepAlive,
    PeerGone,
    PeerPresent,
    Ping,
    Pong,
    Received,
    Restarting,
)
from sunbeam.shared.proto.wireguard import Decapsulated, message_type, receiver_index
from tests.derp.test_derp_client import UPGRADE_101 as DERP_101
from tests.derp.test_derp_frames import (
    CLIENT_INFO_NONCE,
    DST,
    GOLDEN_SERVER_INFO,
    GOLDEN_SERVER_KEY,
    NODE_PRIVATE,
)
from tests.proto.test_stun import CRAFTED, RESPONSES
from tests.proto.test_disco import GO_SEALED, HEAD, NONCE, RECV_PRIV, SENDER_PRIV, UPSTREAM
from tests.wg.test_golden import GOLDEN_INITIATION, GOLDEN_RESPONSE, GOLDEN_TRANSPORT
from tests.wg.twodevices import A4, A6, B4, T0, established, make_pair, udp4, udp6

from .harness import Seed, Target, check_reason, check_token

# --- DERP ------------------------------------------------------------------------------

_DERP_FRAMES = [
    (FrameType.RECV_PACKET, DST + b"packet"), (FrameType.PING, b"12345678"), (FrameType.KEEP_ALIVE, b""),
    (FrameType.PEER_GONE, DST + b"\x01"), (FrameType.PEER_PRESENT, DST + bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4])
                                            + b"\x01\xbb\x03"),
    (FrameType.PEER_PRESENT, DST + bytes.fromhex("fd7a115ca1e000000000000000000002") + b"\x00\x50"),
    (FrameType.HEALTH, b"duplicate connection"), (FrameType.RESTARTING, bytes.fromhex("000003e800002710")),
    (FrameType.PONG, b"abcdefgh"), (FrameType.RECV_PACKET, DST + bytes(1400)), (0x7F, b"future"),
]


def _derp_seeds() -> list[Seed]:
    def stream(prefix: bytes, frames: list) -> Seed:
        data, fields = prefix, []
        for t, p in frames:
            fields.append((len(data) + 1, 4, "big"))
            data += encode_frame(t, p)
        return Seed(data, tuple(fields))

    login = GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO
    return [stream(DERP_101 + login, _DERP_FRAMES), stream(login, _DERP_FRAMES[:4]), stream(login, _DERP_FRAMES[4:]),
            stream(DERP_101, []), Seed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno way")]


def _derp_frames():
    def feed(pieces: list[bytes]) -> tuple[list, FrameTooLarge | None]:
        dec = FrameDecoder()
        frames = []
        for p in pieces:
            frames += dec.feed(p)
            assert dec.buffered <= HEADER_LEN + MAX_FRAME_LEN
        if dec.error is not None:
            assert dec.feed(encode_frame(FrameType.KEEP_ALIVE)) == [], "decoder not stuck after an error"
        return frames, dec.error

    def run(data: bytes):
        frames, err = feed([data])
        cut = len(data) // 2
        assert feed([data[:cut], data[cut:]])[0] == frames or err is not None, "chunking changed the frames"
        for t, payload in frames:
            assert 0 <= t <= 255 and len(payload) <= MAX_FRAME_LEN
        return check_reason(str(err)) if err is not None else None
    return run


_DERP_EVENTS = (Connected, Received, PeerGone, PeerPresent, Ping, Pong, KeepAlive, Health, Restarting, Dropped, Closed)


def _derp_client():
    def run(data: bytes):
        core = DerpClientCore(NODE_PRIVATE, nonce=CLIENT_INFO_NONCE)
        if data.startswith(b"HTTP"):
            core.upgrade_request("derp.example")
        cut = len(data) // 2
        events: list = []
        for part in (data[:cut], data[cut:]):
            got = core.receive_data(part)
            assert not (events and isinstance(events[-1], Closed) and got), "events after Closed"
            events += got
            core.data_to_send()
            assert core.bytes_queued == 0 or not core.connected
        reason = None
        for ev in events:
            assert isinstance(ev, _DERP_EVENTS), f"unexpected event {ev!r}"
            if isinstance(ev, (Dropped, Closed)):
                reason = reason or type(ev).__name__ + ": " + check_reason(ev.reason)
            if isinstance(ev, (Received, PeerGone, PeerPresent)):
                assert len(ev.src_key if isinstance(ev, Received) else ev.key) == 32
        assert sum(isinstance(ev, Closed) for ev in events) <= 1
        last = core.receive_data(b"")  # the server hangs up: at most one Closed, ever
        assert all(isinstance(ev, Closed) for ev in last) and not (last and core.close_reason is None)
        return reason
    return run


# --- disco -----------------------------------------------------------------------------

DISCO_REASONS = frozenset({"short", "bad_magic", "bad_key", "bad_box", "unknown_type"})
_SENDER_BOXES = disco.DiscoBoxes(SENDER_PRIV)
_RECV_PUB = disco.DiscoBoxes(RECV_PRIV).public


def _check_message(msg: disco.Message) -> None:
    assert isinstance(msg, (disco.Ping, disco.Pong, disco.CallMeMaybe))
    again = disco.parse(msg.encode())
    if isinstance(msg, disco.Ping) and msg.node_key is None:
        # Upstream's layout too: without a key, 32+ bytes of padding read back as a zero
        # key (= no key) and less padding. Only txid and key are meaningful.
        assert (again.txid, again.node_key) == (msg.txid, None)
    else:
        assert again == msg, "message does not survive re-encoding"


def _disco_packet():
    boxes = disco.DiscoBoxes(RECV_PRIV, max_peers=256)

    def run(data: bytes):
        try:
            sender, msg = boxes.open(data)
        except disco.DiscoError as exc:
            return check_token(exc.reason, DISCO_REASONS)
        assert disco.looks_like_disco(data) and sender == data[6:38]
        _check_message(msg)
        return None
    return run


def _disco_packet_seeds() -> list[bytes]:
    golden = [bytes.fromhex(HEAD + box) for _, box in GO_SEALED]
    ours = [_SENDER_BOXES.seal(_RECV_PUB, m, NONCE) for m, _ in UPSTREAM]
    return golden + ours


def _disco_payload():
    """The payload parser, both bare and behind a real box (seal with our key, open)."""
    boxes = disco.DiscoBoxes(RECV_PRIV, max_peers=4)

    def run(data: bytes):
        box = _SENDER_BOXES.box(_RECV_PUB).encrypt(data, NONCE).ciphertext
        sealed = disco.MAGIC + _SENDER_BOXES.public + NONCE + box
        try:
            msg = disco.parse(data)
        except disco.DiscoError as exc:
            reason = check_token(exc.reason, DISCO_REASONS)
            try:
                boxes.open(sealed)
            except disco.DiscoError as exc2:
                assert exc2.reason == reason or (reason == "short" and len(data) < 2)
                return reason
            raise AssertionError("a payload parse() refuses opens fine when sealed") from None
        _check_message(msg)
        assert boxes.open(sealed) == (_SENDER_BOXES.public, msg)
        return None
    return run


def _disco_payload_seeds() -> list[bytes]:
    return [bytes.fromhex(wire.replace(" ", "")) for _, wire in UPSTREAM]


# --- STUN ------------------------------------------------------------------------------

STUN_REASONS = frozenset({"not_stun", "bad_length", "truncated", "not_success", "no_address", "bad_family"})


def _stun():
    def run(data: bytes):
        try:
            txid, addr = stun.parse_response(data)
        except stun.StunError as exc:
            return check_token(exc.reason, STUN_REASONS)
        assert stun.is_stun(data) and len(txid) == 12
        disco.parse_addr_port(addr)  # the address text is one our sockets accept
        return None
    return run


def _stun_seeds() -> list[Seed]:
    datagrams = [bytes.fromhex(p) for _, _, p in RESPONSES] + [bytes.fromhex(p) for p, _ in CRAFTED]
    datagrams.append(stun.binding_request(bytes(range(12))))
    return [Seed(d, ((2, 2, "big"), (22, 2, "big"), (26, 2, "big"))) for d in datagrams]


# --- WireGuard -------------------------------------------------------------------------

def _check_decapsulated(res: Decapsulated, counters: dict[str, int], sent: set[bytes] | None) -> str | None:
    assert isinstance(res, Decapsulated)
    if sent is not None:
        assert all(p in sent for p in res.to_tunnel), "delivered a packet nobody sent"
    if res.error is not None:
        check_token(res.error)
        assert counters.get(res.error, 0) >= 1, "drop not counted"
        return res.error
    return None


def _wireguard():
    """Any message into one side of an established pair (state persists across inputs, like
    a real device's: handshakes, replay windows, cookies)."""
    a, _b = established()
    sent = {udp4(B4, A4, b"real"), udp4(A4, B4, b"hello")}  # what the seeds' sessions carry

    def run(data: bytes):
        t = message_type(data)
        idx = receiver_index(data)
        assert (idx is None) == (t not in (2, 3, 4))
        under_load = len(data) % 5 == 0
        res = a.decapsulate(data, T0 + 1, under_load=under_load, src=b"203.0.113.1:41641")
        reason = _check_decapsulated(res, a.counters, sent)
        if t == 1:
            a.initiator_static(data, T0 + 1)
        return reason
    return run


def _wireguard_seeds() -> list[Seed]:
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [udp4(A4, B4, b"hs")], T0)
    [resp] = b.decapsulate(init, T0).to_peer
    cookie = b.decapsulate(init, T0, under_load=True, src=b"s").to_peer[0]
    ea, eb = established()
    [data] = eb.encapsulate(ea.public_key, [udp4(B4, A4, b"real")], T0)
    seeds = [init, resp, cookie, data] + [bytes.fromhex(h) for h in (GOLDEN_INITIATION, GOLDEN_RESPONSE,
                                                                    GOLDEN_TRANSPORT)]
    return [Seed(s, ((4, 4, "little"), (8, 4, "little"))) for s in seeds]


def _wg_inner():
    """Arbitrary inner packets through a real session: B encrypts the input as an IP
    packet to A; A's decapsulate must validate it (IP length fields, AllowedIPs)."""
    a, b = established()

    def run(data: bytes):
        if not data:
            return "empty"
        msgs = b.encapsulate(a.public_key, [data], T0 + 1)
        reason = None
        for msg in msgs:
            res = a.decapsulate(msg, T0 + 1)
            reason = reason or _check_decapsulated(res, a.counters, None)
            padded = data + bytes(-len(data) % 16)  # the sender pads the plaintext with zeros
            for pkt in res.to_tunnel:
                assert padded.startswith(pkt) and len(pkt) >= 20, "delivered bytes that were not sent"
        return reason
    return run


def _wg_inner_seeds() -> list[Seed]:
    v4 = ((2, 2, "big"),)
    v6 = ((4, 2, "big"),)
    return [Seed(udp4(B4, A4, b"real"), v4), Seed(udp4("10.1.2.3", A4, b"x" * 100), v4), Seed(udp4(B4, A4, b""), v4),
            Seed(udp6("fd00::2", A6, b"six"), v6), Seed(udp4(A4, B4, b"wrong source"), v4)]


TARGETS = [
    Target("derp_frames", _derp_frames, _derp_seeds, "derp FrameDecoder.feed (any split)", max_len=8192),
    Target("derp_client", _derp_client, _derp_seeds,
           "derp DerpClientCore.receive_data (h11 101, ServerKey, ServerInfo box, every frame kind)",
           max_len=8192, tokens=(b"\r\n", b"HTTP/1.1 101 ", GOLDEN_SERVER_KEY[5:13])),
    Target("disco_packet", _disco_packet, _disco_packet_seeds, "disco DiscoBoxes.open (header, box, parse)",
           max_len=1500, reasons=DISCO_REASONS),
    Target("disco_payload", _disco_payload, _disco_payload_seeds,
           "disco.parse, bare and sealed + DiscoBoxes.open", max_len=1500, reasons=DISCO_REASONS),
    Target("stun", _stun, _stun_seeds, "stun.parse_response, stun.is_stun", max_len=1024, reasons=STUN_REASONS),
    Target("wireguard", _wireguard, _wireguard_seeds,
           "wireguard Device.decapsulate / initiator_static / message_type / receiver_index", max_len=1600),
    Target("wg_inner", _wg_inner, _wg_inner_seeds,
           "wireguard Device.decapsulate of real sessions carrying arbitrary inner packets", max_len=1600),
]
