"""Curve25519 keys: the machine, node and disco keys, their text forms and their file.

Text forms (tailscale types/key)::

    mkey:<64 hex>       machine public key (TS2021 Noise static key)
    nodekey:<64 hex>    node public key == the WireGuard static public key
    discokey:<64 hex>   disco public key (NaCl box between peers' disco endpoints)
    privkey:<64 hex>    any private key (machine/node/disco private keys alike)

The node key IS the WireGuard static key: peers compute mac1 over it, so WireGuard must sign
with exactly this private key (the original client used a separate key and every handshake
was silently dropped).

Persistence: ``<state_dir>/keys.json`` (dir 0700, file 0600)::

    {"machine": "privkey:…", "node": "privkey:…", "disco": "privkey:…"}

written atomically (temp file + link, which never overwrites) once, on first start; every later start reuses it,
so the node keeps its node ID and tailnet addresses, and the DiscoKey Headscale stored
stays right. A keys file or state dir that others may read is refused with the reason.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgspec

from .runtime.secret import Secret

KEY_LEN = 32
PREFIXES = ("mkey:", "nodekey:", "discokey:", "privkey:", "chalpub:")
KEYS_FILE = "keys.json"


class KeyFormatError(ValueError):
    """A key text or the keys file is invalid; the message says which and why."""


def public_from_private(private: bytes) -> bytes:
    """X25519 public key (RFC 7748: the scalar is clamped, as every X25519 does)."""
    # PyNaCl, imported here: the proxy parses key texts but never derives keys, and the
    # derp and udp services load PyNaCl anyway but not cryptography, whose bindings would
    # cost each ~6 MB just for this
    from nacl.bindings import crypto_scalarmult_base

    return crypto_scalarmult_base(private)


def to_text(prefix: str, raw: bytes) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown key prefix {prefix!r}")
    if len(raw) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, got {len(raw)}")
    return prefix + raw.hex()


def from_text(prefix: str, text: object) -> bytes:
    """Parse ``prefix + 64 hex``; raises KeyFormatError naming what is wrong."""
    if not isinstance(text, str) or not text.startswith(prefix):
        raise KeyFormatError(f"expected a key starting with {prefix!r}")
    body = text[len(prefix):]
    if len(body) != 2 * KEY_LEN:
        raise KeyFormatError(f"{prefix} key must have {2 * KEY_LEN} hex digits, got {len(body)}")
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise KeyFormatError(f"{prefix} key is not hex") from None


class KeyPair(msgspec.Struct, frozen=True):
    private: Secret
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        return cls(Secret(private), public_from_private(private))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(os.urandom(KEY_LEN))  # = secrets.token_bytes, without hmac/hashlib

    def private_bytes(self) -> bytes:
        value = self.private.reveal()
        assert isinstance(value, bytes)
        return value


class NodeKeys(msgspec.Struct, frozen=True):
    machine: KeyPair
    node: KeyPair
    disco: KeyPair

    @property
    def machine_public_text(self) -> str:
        return to_text("mkey:", self.machine.public)

    @property
    def node_public_text(self) -> str:
        return to_text("nodekey:", self.node.public)

    @property
    def disco_public_text(self) -> str:
        return to_text("discokey:", self.disco.public)


def _check_private_dir(path: Path) -> None:
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise KeyFormatError(f"{path}: owned by uid {st.st_uid}, not by us (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise KeyFormatError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others in; run: chmod 700 {path}")


def _read(path: Path) -> NodeKeys:
    st = path.stat()
    if st.st_mode & 0o077:
        raise KeyFormatError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read the private keys; "
                             f"run: chmod 600 {path}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise KeyFormatError(f"{path}: expected a JSON object")
    pairs = {}
    for name in ("machine", "node", "disco"):
        try:
            pairs[name] = KeyPair.from_private(from_text("privkey:", data.get(name)))
        except KeyFormatError as exc:
            raise KeyFormatError(f"{path}: {name}: {exc}") from None
    return NodeKeys(**pairs)


def load_or_create(state_dir: Path) -> tuple[NodeKeys, bool]:
    """The context's keys; generated and saved on first use. Returns (keys, created)."""
    state_dir = Path(state_dir)
    if not state_dir.exists():
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private_dir(state_dir)
    path = state_dir / KEYS_FILE
    if path.exists():
        return _read(path), False
    keys = NodeKeys(KeyPair.generate(), KeyPair.generate(), KeyPair.generate())
    body = json.dumps({name: to_text("privkey:", getattr(keys, name).private_bytes())
                       for name in ("machine", "node", "disco")}, indent=2) + "\n"
    tmp = path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    # link() refuses to overwrite: when two services start at once and both generate keys,
    # exactly one file wins and the loser reads the winner's keys (a replace() would let
    # each keep different keys in memory: the DiscoKey registered would not be the one used).
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read(path), False
    finally:
        tmp.unlink(missing_ok=True)
    return keys, True
