"""Transport keypairs, their rotation, and the local index table (wireguard-go
``device/keypair.go``, ``indextable.go``, ``BeginSymmetricSession``/``ReceivedWithKeypair``).

A Keypair is one session: a send and a receive ChaCha20-Poly1305 object (one AEAD object per
key, reused for every packet), the next send counter, the receive replay window, and the
two indices. Each peer keeps up to three (``Keypairs``):

    current    used to send
    previous   the one before, still accepted on receive
    next       the responder's fresh keypair, unused for sending until the initiator's
               first transport message on it confirms the handshake (then it becomes
               current and current becomes previous)

Local indices: ``make_index(worker, random)`` (the worker number in the top bits), unique
within the device; a handshake's index is reused for the keypair it produces. The index
table maps it to the Peer (during a handshake) or to the Keypair. Owned by the Device.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from sunbeam.shared.sharding import make_index

from .messages import MESSAGE_TRANSPORT
from .replay import ReplayWindow

if TYPE_CHECKING:
    from .peer import Peer

_II = struct.Struct("<II")


class Keypair:
    __slots__ = (
        "created",
        "header",
        "is_initiator",
        "local_index",
        "peer",
        "recv",
        "remote_index",
        "replay",
        "send",
        "send_counter",
    )

    def __init__(self, peer: Peer, send_key: bytes, recv_key: bytes, is_initiator: bool,
                 created: float, local_index: int, remote_index: int) -> None:
        self.peer = peer
        self.send = ChaCha20Poly1305(send_key)
        self.recv = ChaCha20Poly1305(recv_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.is_initiator = is_initiator
        self.created = created
        self.local_index = local_index
        self.remote_index = remote_index
        # The first 8 bytes of every transport message sent with this keypair.
        self.header = _II.pack(MESSAGE_TRANSPORT, remote_index)


class Keypairs:
    """A peer's previous / current / next keypairs. Owned by that Peer."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, kp: Keypair) -> list[Keypair | None]:
        """Add a fresh keypair; returns the ones dropped (their indices must be freed)."""
        dropped: list[Keypair | None] = [self.previous]
        if kp.is_initiator:
            if self.next is not None:
                self.previous, self.next = self.next, None
                dropped.append(self.current)
            else:
                self.previous = self.current
            self.current = kp
        else:
            dropped.append(self.next)
            self.next = kp
            self.previous = None
        return dropped

    def confirm(self, kp: Keypair) -> Keypair | None:
        """The first packet received on ``next`` (= ``kp``) makes it current; returns the
        keypair dropped (the old previous, if any)."""
        assert kp is self.next
        old = self.previous
        self.previous, self.current, self.next = self.current, kp, None
        return old

    def live(self) -> list[Keypair]:
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]

    def clear(self) -> list[Keypair]:
        gone = self.live()
        self.previous = self.current = self.next = None
        return gone


class IndexTable:
    """local index -> Peer (handshake in progress) or Keypair."""

    __slots__ = ("_random", "entries", "worker")

    def __init__(self, worker: int, random_bytes: Callable[[int], bytes]) -> None:
        self.worker = worker
        self._random = random_bytes
        self.entries: dict[int, Any] = {}

    def new(self, owner: Any) -> int:
        entries = self.entries
        while True:
            index = make_index(self.worker, int.from_bytes(self._random(4), "little"))
            if index not in entries:
                entries[index] = owner
                return index

    def delete(self, index: int | None) -> None:
        if index is not None:
            self.entries.pop(index, None)
