"""Key files: text forms, persistence, permissions, two services creating them at once, and
the public key derivation."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from sunbeam.shared.keys import KeyFormatError, from_text, load_or_create, public_from_private, to_text


def test_text_forms_round_trip_and_errors():
    raw = bytes(range(32))
    assert to_text("nodekey:", raw) == "nodekey:" + raw.hex()
    assert from_text("nodekey:", to_text("nodekey:", raw)) == raw
    for bad in ("mkey:" + raw.hex(), "nodekey:" + raw.hex()[:-2], "nodekey:" + "zz" * 32, None):
        with pytest.raises(KeyFormatError):
            from_text("nodekey:", bad)


def test_created_once_then_reused_with_modes(tmp_path):
    state = tmp_path / "state"
    keys, created = load_or_create(state)
    again, created2 = load_or_create(state)
    assert created and not created2
    assert again.node.public == keys.node.public == public_from_private(keys.node.private_bytes())
    assert len({keys.machine.public, keys.node.public, keys.disco.public}) == 3
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    assert oct(os.stat(state / "keys.json").st_mode & 0o777) == "0o600"
    assert "privkey:" not in repr(keys)


def test_loose_modes_refused_with_the_fix(tmp_path):
    state = tmp_path / "state"
    load_or_create(state)
    os.chmod(state / "keys.json", 0o640)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        load_or_create(state)
    os.chmod(state / "keys.json", 0o600)
    os.chmod(state, 0o755)
    with pytest.raises(KeyFormatError, match="chmod 700"):
        load_or_create(state)


def _create(path, q):
    keys, _ = load_or_create(path)
    q.put(keys.disco.public)


def test_concurrent_first_start_agrees_on_one_set_of_keys(tmp_path):
    for round_ in range(5):
        state = tmp_path / f"s{round_}"
        q: mp.Queue = mp.Queue()
        procs = [mp.Process(target=_create, args=(state, q)) for _ in range(4)]
        for p in procs:
            p.start()
        seen = {q.get(timeout=30) for _ in procs}
        for p in procs:
            p.join()
        assert len(seen) == 1
        assert not [f for f in os.listdir(state) if f.endswith(".tmp")]


def test_public_key_is_x25519_of_the_private_key():
    # RFC 7748 section 6.1 (Alice): an unclamped private scalar, clamped by X25519 itself
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert public_from_private(private).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    # the same function as the handshake's (cryptography), on random keys
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    for _ in range(64):
        k = os.urandom(32)
        assert public_from_private(k) == X25519PrivateKey.from_private_bytes(k).public_key().public_bytes_raw()
