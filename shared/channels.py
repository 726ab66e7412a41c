"""Every ZeroMQ socket between sunbeam's processes, declared once.

Each is an ``ipc://`` endpoint in the context's runtime directory, ``<rundir>/<name>.sock``
(``{k}``: a WireGuard worker's number). One process binds it; the others connect::

    name            pattern     bound by   connected by                  frames (codec)
    wg-{k}-in       PUSH->PULL  wg-{k}     udp, derp, proxy, wg-{j}      WG_IN_CODEC
    udp-in          PUSH->PULL  udp        wg-*, derp                    UDP_IN_CODEC
    derp-in         PUSH->PULL  derp       wg-*, udp                     DERP_IN_CODEC
    proxy-in        PUSH->PULL  proxy      wg-*                          PROXY_IN_CODEC
    udp-pub         PUB->SUB    udp        control                       UDP_PUB_CODEC
    derp-pub        PUB->SUB    derp       control                       DERP_PUB_CODEC
    control-pub     XPUB->SUB   control    derp, udp, wg-*, proxy, ctl   CONTROL_EVENT_CODEC
    control-account REQ->ROUTER control   ctl                           ACCOUNT_REQUEST/REPLY
    proxy-ping      REQ->REP    proxy      ctl                           PING_REQUEST/REPLY
    {service}-ctl   REQ->REP    each       ctl                           CTL_REQUEST/REPLY

(``ctl`` = ``sunbeam-ctl``.) The pipeline, drawn once::

    out:     app -> proxy -> wg-{k}-in -> wg-{k} -+-> udp-in  -> udp  -> kernel UDP  -> peer
                                                  +-> derp-in -> derp -> DERP server -> peer
    in:      peer -> udp  -+-> wg-{k}-in -> wg-{k} -> proxy-in -> proxy -> app
             peer -> derp -+   (disco between udp and derp: udp-in / derp-in; wg-{k} asks
                                udp for a direct path with PathWanted on udp-in)
    direct:  with SUNBEAM_DIRECT_SOCKETS=1, wg-{k} <-> kernel UDP <-> peer on a trusted direct
             path (its own socket on udp's port); what lands there for udp: UdpForwarded
    control: control -> control-pub -> derp, udp, wg-*, proxy   (the netmap, our state)
             udp -> udp-pub, derp -> derp-pub -> control        (our endpoints, home region)

A sender's queue is bounded (``hwm`` messages on the PUSH / PUB side); a message that finds
it full is dropped at once and counted under ``drop_counter`` (in packets for a batch),
never blocking the sender's loop. Frames are one msgspec message each, a batch of packets
per message (``list[bytes]``), never one message per packet.

Usage, in a service shell::

    inbox = WG_IN.bind(loop, rundir, k=index)        # PULL, RCVHWM set, stale file cleared
    to_udp = UDP_IN.connect(loop, rundir)             # PUSH, SNDHWM set
    UDP_IN.send(to_udp, UdpSend(...), counters)       # encoded, bounded, drops counted
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec
import zmq

from .messages.account import ACCOUNT_REPLY_CODEC, ACCOUNT_REQUEST_CODEC
from .messages.codec import Codec
from .messages.ctl import CTL_REPLY_CODEC, CTL_REQUEST_CODEC
from .messages.dataplane import (
    DERP_IN_CODEC,
    DERP_PUB_CODEC,
    PROXY_IN_CODEC,
    UDP_IN_CODEC,
    UDP_PUB_CODEC,
    WG_IN_CODEC,
)
from .messages.netmap import CONTROL_EVENT_CODEC
from .messages.ping import PING_REPLY_CODEC, PING_REQUEST_CODEC
from .runtime.batching import send_bounded
from .runtime.counters import Counters
from .runtime.rundir import endpoint, socket_path

__all__ = ["ALL", "CONTROL_ACCOUNT", "CONTROL_PUB", "CTL", "Channel", "DERP_IN", "DERP_PUB", "PROXY_IN", "PROXY_PING", "UDP_IN",
           "UDP_PUB", "WG_IN"]

Pattern = Literal["push-pull", "pub-sub", "xpub-sub", "req-rep", "req-router"]
# socket types: (bound side, connected side)
_TYPES: dict[str, tuple[int, int]] = {
    "push-pull": (zmq.PULL, zmq.PUSH),
    "pub-sub": (zmq.PUB, zmq.SUB),
    "xpub-sub": (zmq.XPUB, zmq.SUB),
    "req-rep": (zmq.REP, zmq.REQ),
    "req-router": (zmq.ROUTER, zmq.REQ),  # the binder answers later, without blocking its loop
}


class Channel(msgspec.Struct, frozen=True):
    name: str
    """The socket file's stem; ``{k}`` stands for a worker's number, ``{service}`` for a
    service's name."""
    pattern: Pattern
    binder: str
    """The process that binds it (``wg-{k}``: each worker its own)."""
    connectors: tuple[str, ...]
    codec: Codec[Any]
    """What travels toward the binder (for req-rep: the requests)."""
    reply_codec: Codec[Any] | None = None
    """req-rep: the replies."""
    hwm: int = 1000
    """Messages queued per socket before a send is dropped (PUSH/PUB) or input waits in
    the sender's queue (PULL)."""
    drop_counter: str = ""
    """The sender's counter for messages (or packets of a batch) dropped on a full queue."""

    def endpoint(self, rundir: str | os.PathLike[str], *, k: int | None = None, service: str | None = None) -> str:
        return endpoint(rundir, self.name.format(k=k, service=service))

    def path(self, rundir: str | os.PathLike[str], *, k: int | None = None, service: str | None = None) -> Path:
        """The socket file."""
        return socket_path(rundir, self.name.format(k=k, service=service))

    def bind(self, loop: Any, rundir: str | os.PathLike[str], *, k: int | None = None,
             service: str | None = None) -> zmq.Socket[Any]:
        """The bound side (PULL / PUB / XPUB / REP), adopted by ``loop`` (a `ServiceLoop`)."""
        sock: zmq.Socket[Any] = loop.socket(_TYPES[self.pattern][0])
        if self.pattern == "push-pull":
            sock.setsockopt(zmq.RCVHWM, self.hwm)
        elif self.pattern in ("pub-sub", "xpub-sub"):
            sock.setsockopt(zmq.SNDHWM, self.hwm)
        if self.pattern == "xpub-sub":
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, so each gets a snapshot
        loop.bind(sock, self.endpoint(rundir, k=k, service=service))
        return sock

    def connect(self, loop: Any, rundir: str | os.PathLike[str], *, k: int | None = None,
                service: str | None = None) -> zmq.Socket[Any]:
        """The connecting side (PUSH / SUB subscribed to everything / REQ), adopted by
        ``loop`` (a `ServiceLoop`, or anything with ``socket(type)``)."""
        sock: zmq.Socket[Any] = loop.socket(_TYPES[self.pattern][1])
        if self.pattern == "push-pull":
            sock.setsockopt(zmq.SNDHWM, self.hwm)
        elif self.pattern in ("pub-sub", "xpub-sub"):
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.endpoint(rundir, k=k, service=service))
        return sock

    def send(self, sock: zmq.Socket[Any], msg: Any, counters: Counters, *, weight: int = 1) -> bool:
        """Encode ``msg`` with the channel's codec and send it without blocking; a full
        queue adds ``weight`` to the drop counter. True if queued."""
        return send_bounded(sock, self.codec.encode(msg), counters, counter=self.drop_counter, weight=weight)

    def send_encoded(self, sock: zmq.Socket[Any], data: bytes, counters: Counters, *, weight: int = 1) -> bool:
        """`send` for a frame already encoded with this channel's codec (a `Batcher`'s)."""
        return send_bounded(sock, data, counters, counter=self.drop_counter, weight=weight)


WORKERS = "wg-*"
# packet batches (up to MAX_BATCH packets each) per data socket: the depth the workers have
# always used, so a burst from a peer waits here rather than being dropped
DATA_HWM = 4096
WG_IN = Channel("wg-{k}-in", "push-pull", "wg-{k}", ("udp", "derp", "proxy", "wg-{j}"), WG_IN_CODEC,
                hwm=DATA_HWM, drop_counter="wg_in.dropped")
UDP_IN = Channel("udp-in", "push-pull", "udp", (WORKERS, "derp"), UDP_IN_CODEC, hwm=DATA_HWM,
                 drop_counter="udp_in.dropped")
DERP_IN = Channel("derp-in", "push-pull", "derp", (WORKERS, "udp"), DERP_IN_CODEC, hwm=DATA_HWM,
                  drop_counter="derp_in.dropped")
PROXY_IN = Channel("proxy-in", "push-pull", "proxy", (WORKERS,), PROXY_IN_CODEC, hwm=DATA_HWM,
                   drop_counter="proxy_in.dropped")
UDP_PUB = Channel("udp-pub", "pub-sub", "udp", ("control",), UDP_PUB_CODEC, hwm=1000,
                  drop_counter="udp_status_dropped")
DERP_PUB = Channel("derp-pub", "pub-sub", "derp", ("control",), DERP_PUB_CODEC, hwm=1000,
                   drop_counter="derp_status_dropped")
CONTROL_PUB = Channel("control-pub", "xpub-sub", "control", ("derp", "udp", WORKERS, "proxy", "ctl"),
                      CONTROL_EVENT_CODEC, hwm=1000, drop_counter="netmap_pub_dropped")
CONTROL_ACCOUNT = Channel("control-account", "req-router", "control", ("ctl",), ACCOUNT_REQUEST_CODEC,
                          ACCOUNT_REPLY_CODEC)
PROXY_PING = Channel("proxy-ping", "req-rep", "proxy", ("ctl",), PING_REQUEST_CODEC, PING_REPLY_CODEC)
CTL = Channel("{service}-ctl", "req-rep", "{service}", ("ctl",), CTL_REQUEST_CODEC, CTL_REPLY_CODEC)

ALL: tuple[Channel, ...] = (WG_IN, UDP_IN, DERP_IN, PROXY_IN, UDP_PUB, DERP_PUB, CONTROL_PUB, CONTROL_ACCOUNT,
                             PROXY_PING, CTL)
