"""What the udp service does with one received disco packet (sans-IO; nonce passed in).

- Ping: answered with a Pong carrying its txid and ``path_src``, sealed to the sender's
  disco key. ``path_src`` is the path the ping came in on, as magicsock's handlePingLocked
  sets Pong.Src: the sender's ``ip:port`` as we saw it for UDP, ``127.3.3.40:<region>``
  (`sunbeam.shared.proto.disco.derp_src`) for DERP. The caller sends the answer back on
  that same path (UDP to the source / DerpSend to the relaying peer and region).
- Pong, CallMeMaybe: no answer yet (path trust and call-me-maybe pings come with the
  full disco state machine); the caller counts them.

Any peer fault raises `DiscoError`. No sender is checked against the netmap yet: every
ping sealed to our disco key is answered (a pong is smaller than its ping, so this
cannot amplify traffic).
"""

from __future__ import annotations

from typing import NamedTuple

from sunbeam.shared.proto.disco import DiscoBoxes, Message, Ping, Pong

__all__ = ["Answer", "answer"]


class Answer(NamedTuple):
    sender: bytes
    """The sender's disco public key."""
    message: Message
    reply: bytes | None
    """The sealed Pong to send back on the same path, or None."""


def answer(boxes: DiscoBoxes, pkt: bytes, path_src: str, nonce: bytes) -> Answer:
    sender, message = boxes.open(pkt)
    reply = None
    if isinstance(message, Ping):
        reply = boxes.seal(sender, Pong(message.txid, path_src), nonce)
    return Answer(sender, message, reply)
