"""The CI-sized fuzz run: every decoder target, 10,000 deterministic inputs each, under
``tracemalloc``.

Per target (see `targets` and the ``targets_*`` modules for what each drives): no
exception escapes except the decoder's documented rejection (or a `Known` reported bug),
every rejection carries a well-formed reason, both outcomes are reached (the seeds are
accepted, mutations are refused), and no single input makes the traced heap rise by
``MEMORY_BOUND`` or more. The long run (``python -m tests.fuzz.long``) and its figures are
in RESULTS.md.
"""

from __future__ import annotations

import tracemalloc

import pytest

from .harness import Known, Mutator, Seed, Target, check_reason, check_token, fuzz, minimize, run_target
from .targets import TARGETS

ITERATIONS = 10_000
RNG_SEED = 9
MEMORY_BOUND = 64 << 20


@pytest.fixture(scope="module")
def traced():
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(TARGETS))
def test_decoder_survives_fuzzing(name: str, traced) -> None:
    t = TARGETS[name]
    result = run_target(t, iterations=ITERATIONS, rng_seed=RNG_SEED, track_memory=True)
    print(result.summary())
    crashes = "\n\n".join(f"{c.signature} x{c.count} (alone: {c.reproduces}), input {c.data[:200].hex()}\n"
                          f"{c.traceback}" for c in result.crashes.values())
    assert not result.crashes, crashes
    assert result.inputs == ITERATIONS
    assert result.accepted > 0, "nothing was accepted: the seeds do not reach the decoder's success path"
    assert sum(result.rejected.values()) > 0, "nothing was rejected: the mutations do not reach its checks"
    assert result.peak_bytes < MEMORY_BOUND, (
        f"one input ({result.peak_input_len} bytes) raised the heap by {result.peak_bytes >> 20} MiB")
    if t.reasons is not None:
        assert set(result.rejected) <= t.reasons | {"(other)"}


def test_every_decoder_of_the_issue_is_covered() -> None:
    covers = " ".join(t.covers for t in TARGETS.values())
    for entry in ("controlbase Transport.receive_data", "parse_early_payload", "ControlConnection", "MapFrameDecoder",
                  "decode_map_response", "derp FrameDecoder", "DerpClientCore", "DiscoBoxes.open", "disco.parse",
                  "stun.parse_response", "Device.decapsulate", "IpResponder.handle", "parse_packet", "TcpStack",
                  "Socks5Server", "HttpProxyServer", "load_config", "Codec.decode"):
        assert entry in covers, entry
    codecs = [t for t in TARGETS if t.startswith("codec_")]
    assert len(codecs) == 11, codecs  # every Codec instance: shared/messages and the proxy's ping socket


# --- the harness itself ----------------------------------------------------------------

def test_mutator_is_deterministic_and_bounded() -> None:
    import random

    seeds = [Seed(b"\x00\x00\x00\x05hello", ((0, 4, "big"),)), b"GET / HTTP/1.1\r\n\r\n"]
    a = Mutator(seeds, random.Random(3), max_len=64, tokens=(b"\r\n",))
    b = Mutator(seeds, random.Random(3), max_len=64, tokens=(b"\r\n",))
    xs = [a.next() for _ in range(2000)]
    assert xs == [b.next() for _ in range(2000)]
    assert all(len(x) <= 64 for x in xs)
    assert len(set(xs)) > 1500  # mostly new inputs
    assert any(x[:4] == b"\xff\xff\xff\xff" or x[:4] == b"\x00\x00\x00\x06" for x in xs)  # length-field edits


def test_fuzz_records_crashes_known_findings_and_memory() -> None:
    def make():
        def run(data: bytes):
            if data[:1] == b"\x01":
                raise KeyError("boom")
            if data[:1] == b"\x02":
                raise ZeroDivisionError
            if data[:1] == b"\x03":
                _ = bytearray(8 << 20)
            return None if data else check_token("empty")
        return run

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        result = fuzz(make(), [b"\x00abc", b"\x01xyz", b"\x02", b"\x03"], iterations=300, rng_seed=1, remake=make,
                      track_memory=True, known=[Known("ZeroDivisionError", "test_fuzz.py", "run", "div")])
    finally:
        if started:
            tracemalloc.stop()
    [crash] = result.crashes.values()
    assert crash.signature.startswith("KeyError at test_fuzz.py:") and crash.reproduces
    assert result.known["div"] >= 1
    assert result.peak_bytes >= 8 << 20
    assert minimize(make, b"\x01" + bytes(range(50)), crash.signature).startswith(b"\x01")
    assert len(minimize(make, b"\x01" + bytes(range(50)), crash.signature)) == 1


def test_reason_checks() -> None:
    assert check_token("bad_box", {"bad_box"}) == "bad_box"
    for bad in ("", "Bad Box", "x" * 60, None):
        with pytest.raises(AssertionError):
            check_token(bad)
    assert check_reason("record 12 of 4099 bytes exceeds 'x'") == "record # of # bytes exceeds #"
    with pytest.raises(AssertionError):
        check_reason("two\nlines", one_line=True)
    with pytest.raises(AssertionError):
        check_reason("  ")
    assert isinstance(TARGETS["stun"], Target)


@pytest.mark.parametrize(("plaintext", "what"), [
    ("000006040000000000000300000000", "SETTINGS_MAX_CONCURRENT_STREAMS 0"),
    ("000006040000000000000400000000", "SETTINGS_INITIAL_WINDOW_SIZE 0"),
    ("000000040000000000" "000008070000000000" "0000000000000000", "SETTINGS then GOAWAY"),
])
def test_ts2021_post_refused_by_the_servers_first_frames(plaintext: str, what: str) -> None:
    """Long-run fuzz findings: server frames arriving in the same read as the handshake
    answer made our first POST raise h2's TooManyStreamsError or a RuntimeError, which killed
    the control service. Now ControlProtocolError, which the control client turns into a
    reconnect."""
    from sunbeam.shared.proto.ts2021 import Connected, ControlConnection, ControlProtocolError

    from .targets_ts2021 import HEADSCALE_EARLY, RESPONSE, UPGRADE_101, fresh_initiator, seal

    conn = ControlConnection(host="h", initiator=fresh_initiator())
    conn.data_to_send()
    events = conn.receive_data(UPGRADE_101 + RESPONSE + seal(HEADSCALE_EARLY + bytes.fromhex(plaintext)))
    assert any(isinstance(ev, Connected) for ev in events), (what, events)
    with pytest.raises(ControlProtocolError):
        conn.post("/machine/register", b"{}")


def test_ts2021_header_that_is_not_utf8_is_refused() -> None:
    """Long-run fuzz finding: h2 decoding a non-UTF-8 response header (``x-bad: \\xff``)
    raised UnicodeDecodeError out of receive_data, killing the control service."""
    from sunbeam.shared.proto.ts2021 import ControlConnection, ControlProtocolError

    from .targets_ts2021 import HEADSCALE_EARLY, RESPONSE, UPGRADE_101, fresh_initiator, seal

    conn = ControlConnection(host="h", initiator=fresh_initiator())
    conn.data_to_send()
    conn.receive_data(UPGRADE_101 + RESPONSE + seal(HEADSCALE_EARLY + bytes.fromhex("000000040000000000")))
    assert conn.post("/machine/register", b"{}") == 1
    with pytest.raises(ControlProtocolError):
        conn.receive_data(seal(bytes.fromhex("00000c010400000001884084f2b4639384fffffbbf"), 1))
