"""A userspace link emulator for the reference network: delay, jitter, loss, reordering, rate.

This kernel has no ``sch_netem``, so ``topology.attach(info, kind, link=...)`` puts one more
namespace E on the A<->B wire and this process forwards every Ethernet frame across it::

    A  <name>            E  <name>-e  (this process)                  B  <name>-b  (or R, nat)
    +-----------+        +-------------------------------------+        +-----------------+
    | sbh0      |========| sbh1  ---[to_b: delay/loss/...]-->  |        |                 |
    | 10.77.0.1 |        |       AF_PACKET   heap of   AF_PACKET|        |                 |
    |           |        |  <--[to_a: delay/loss/...]--- sbe0  |========| sbh1 10.77.0.2  |
    +-----------+        +-------------------------------------+        +-----------------+

E is a bridge in userspace: its two veth ends have no address (IPv6 off), a netdev-ingress
nft table drops every frame after the packet sockets have their copy (so E's own kernel
never processes them), and B's end keeps the name ``sbh1``: IP-wise B is on A's link as
before, so everything else in topology.py (addresses, ``block_*`` tables) is unchanged.

Each direction is a `Direction` (sans-IO: items, sizes and a clock passed in; the RNG is
seeded) fed from one AF_PACKET socket and drained into the other:

- loss: each frame is dropped with probability ``loss`` (ARP and ICMPv6, MLD reports
  behind their hop-by-hop header too, are exempt, so neighbour discovery does not stall
  the link and a test's own frames are the only ones lost);
- rate (optional): the frame is serialised at ``rate_mbit``, queued behind the earlier ones,
  tail-dropped when that queue holds more than ``queue_ms``;
- delay and jitter: due = sent + delay + uniform(-jitter, +jitter), but never before the
  previous frame's due time: jitter alone keeps the order, as a real (FIFO) link does;
- reorder: a frame is held back ``gap_ms`` beyond its due time with probability
  ``reorder``; frames behind it overtake it (the FIFO floor ignores held frames).

Frames come with a virtio-net header (``PACKET_VNET_HDR``) so checksum offload survives
the trip; UDP GSO super-frames (tailscaled's and sunbeam's batched sends) are cut into
their datagrams here, so loss and delay apply per datagram as on a wire; the sources' TCP
segmentation offload is turned off by topology.py (`set_tso`), so no TCP super-frame comes.

Process: ``python -m sunbeam.refnet.linkemu --a-if sbh1 --b-if sbe0 --to-b PROFILE
--to-a PROFILE --seed N --stats FILE``; one thread, epoll with the next due time as
timeout; it writes its counters as JSON to FILE (once when its sockets are bound, which is
the readiness signal, then every second when they changed, at SIGUSR1 and at SIGTERM; each
write bumps "serial").

Profile text (`LinkProfile.parse`), tokens split by ``,`` ``/`` ``+`` or spaces::

    20ms/0.5%                         delay 20 ms, loss 0.5 %
    50ms+1%+reorder=1%                delay 50 ms, loss 1 %, 1 % held back 5 ms
    delay=50ms,jitter=2ms,loss=1%,reorder=1%,gap=3ms,rate=100mbit,queue=50ms

A bare time is the delay, a bare percentage the loss, a bare ``<n>mbit`` the rate. A link
(`parse_link`) is one profile for both directions or ``to_b:<profile>;to_a:<profile>``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["Direction", "DirectionStats", "LinkProfile", "parse_link", "run", "set_tso", "split_udp_gso"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_LEN = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
ETH_LEN = 14
RECV_SIZE = 70000  # a GSO super-frame is up to 64 KB
BATCH = 256  # frames read from one socket before the due queues get a look
EARLY = 0.0002  # release frames due this soon (epoll sleeps in whole milliseconds)
STATS_EVERY = 1.0

SIOCETHTOOL = 0x8946
ETHTOOL_GTSO = 0x1E
ETHTOOL_STSO = 0x1F


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class LinkProfile:
    """One direction of a link. Times in milliseconds, ``loss`` and ``reorder`` fractions."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0
    gap_ms: float = 5.0  # how long a reordered frame is held back beyond its due time
    rate_mbit: float | None = None
    queue_ms: float = 100.0  # with a rate: tail drop beyond this much queued

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "gap_ms", "queue_ms"):
            if getattr(self, name) < 0:
                raise ProfileError(f"{name} must be >= 0")
        for name in ("loss", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ProfileError(f"{name} must be a fraction in [0, 1]")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ProfileError("rate_mbit must be > 0")

    @classmethod
    def parse(cls, text: str) -> LinkProfile:
        values: dict[str, float] = {}
        for token in re.split(r"[,/+\s]+", text.strip().lower()):
            if not token:
                continue
            key, sep, value = token.partition("=")
            if not sep:
                key, value = _bare_key(token), token
            key = {"delay": "delay_ms", "jitter": "jitter_ms", "gap": "gap_ms", "queue": "queue_ms",
                   "rate": "rate_mbit", "loss": "loss", "reorder": "reorder"}.get(key, "")
            if not key:
                raise ProfileError(f"unknown profile token {token!r} in {text!r}")
            if key in values:
                raise ProfileError(f"{key} given twice in {text!r}")
            values[key] = _rate(value) if key == "rate_mbit" else _fraction(value) if key in ("loss", "reorder") \
                else _millis(value)
        rate = values.pop("rate_mbit", None)
        return cls(rate_mbit=rate, **values)

    def __str__(self) -> str:
        """The short text form; ``LinkProfile.parse(str(p)) == p``."""
        parts = [f"delay={_num(self.delay_ms)}ms"]
        if self.jitter_ms:
            parts.append(f"jitter={_num(self.jitter_ms)}ms")
        if self.loss:
            parts.append(f"loss={_num(self.loss * 100)}%")
        if self.reorder:
            parts.append(f"reorder={_num(self.reorder * 100)}%")
        if self.gap_ms != 5.0:
            parts.append(f"gap={_num(self.gap_ms)}ms")
        if self.rate_mbit is not None:
            parts.append(f"rate={_num(self.rate_mbit)}mbit")
        if self.queue_ms != 100.0:
            parts.append(f"queue={_num(self.queue_ms)}ms")
        return ",".join(parts)


def _num(x: float) -> str:
    return f"{x:.6g}"


def _bare_key(token: str) -> str:
    if token.endswith("%"):
        return "loss"
    if token.endswith(("mbit", "kbit", "gbit")):
        return "rate"
    if re.fullmatch(r"[0-9.]+(ms|s|us)?", token):
        return "delay"
    return ""


def _number(text: str, original: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ProfileError(f"not a number: {original!r}") from None


def _millis(value: str) -> float:
    for suffix, scale in (("ms", 1.0), ("us", 0.001), ("s", 1000.0)):
        if value.endswith(suffix):
            return _number(value[: -len(suffix)], value) * scale
    return _number(value, value)


def _fraction(value: str) -> float:
    if value.endswith("%"):
        return _number(value[:-1], value) / 100
    return _number(value, value)


def _rate(value: str) -> float:
    for suffix, scale in (("gbit", 1000.0), ("mbit", 1.0), ("kbit", 0.001)):
        if value.endswith(suffix):
            return _number(value[: -len(suffix)], value) * scale
    return _number(value, value)


def parse_link(text: str) -> tuple[LinkProfile, LinkProfile]:
    """(to_b, to_a): one profile for both directions, or ``to_b:<profile>;to_a:<profile>``."""
    if ":" not in text:
        p = LinkProfile.parse(text)
        return p, p
    got: dict[str, LinkProfile] = {}
    for part in text.split(";"):
        name, sep, prof = part.strip().partition(":")
        if not sep or name.strip() not in ("to_b", "to_a"):
            raise ProfileError(f"expected to_b:<profile>;to_a:<profile>, got {text!r}")
        got[name.strip()] = LinkProfile.parse(prof)
    return got.get("to_b", LinkProfile()), got.get("to_a", LinkProfile())


@dataclass
class DirectionStats:
    frames: int = 0  # offered
    bytes: int = 0
    lost: int = 0  # dropped by the loss draw
    queue_drops: int = 0  # tail drops of the rate limiter
    held: int = 0  # reordered: held back gap_ms
    sent: int = 0
    gso_frames: int = 0  # super-frames cut into datagrams (each datagram counts in ``frames``)
    send_errors: int = 0


@dataclass
class Direction:
    """The queue of one direction: `offer` a frame at ``now``; `pop_due` what is due by then."""

    profile: LinkProfile
    rng: random.Random = field(default_factory=random.Random)
    stats: DirectionStats = field(default_factory=DirectionStats)

    def __post_init__(self) -> None:
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._floor = 0.0  # the last in-order due time: jitter never reorders
        self._free_at = 0.0  # when the rate limiter's wire is free again

    def __len__(self) -> int:
        return len(self._heap)

    def offer(self, item: bytes, size: int, now: float, *, exempt: bool = False) -> bool:
        """Queue ``item`` (``size`` bytes on the wire) arriving at ``now`` (seconds); False if
        dropped. ``exempt`` items (ARP...) are neither lost nor reordered."""
        p, st = self.profile, self.stats
        st.frames += 1
        st.bytes += size
        if p.loss and not exempt and self.rng.random() < p.loss:
            st.lost += 1
            return False
        t = now
        if p.rate_mbit is not None:
            start = max(now, self._free_at)
            if start - now > p.queue_ms / 1000:
                st.queue_drops += 1
                return False
            self._free_at = t = start + size * 8 / (p.rate_mbit * 1e6)
        due = t + p.delay_ms / 1000
        if p.jitter_ms:
            due += self.rng.uniform(-p.jitter_ms, p.jitter_ms) / 1000
        due = max(due, self._floor, now)
        self._floor = due
        if p.reorder and not exempt and self.rng.random() < p.reorder:
            due += p.gap_ms / 1000
            st.held += 1
        heapq.heappush(self._heap, (due, self._seq, item))
        self._seq += 1
        return True

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[bytes]:
        """Yield every queued item due at or before ``now``, in due order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)[2]


def _ones_sum(data: bytes) -> int:
    """The 16-bit one's-complement sum of ``data`` (padded to even length), folded."""
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF  # 2**16 == 1 (mod 0xFFFF): the words' sum, folded
    return s if s or not any(data) else 0xFFFF


def split_udp_gso(item: bytes) -> list[bytes] | None:
    """Cut a UDP GSO super-frame (vnet header + Ethernet + IPv4/IPv6 + UDP + gso_size-byte
    datagrams back to back) into plain frames, each with a vnet header asking the receiving
    side to finish the UDP checksum (NEEDS_CSUM; the field holds the pseudo-header sum, as
    the kernel's own segmentation leaves it). None if the frame is not one we can cut."""
    _flags, gso_type, _hdr_len, gso_size, _cs, _co = VNET_HDR.unpack_from(item)
    if gso_type != VIRTIO_NET_HDR_GSO_UDP_L4 or not gso_size:
        return None
    eth = item[VNET_LEN:VNET_LEN + ETH_LEN]
    ethertype = struct.unpack_from("!H", eth, 12)[0]
    ip_off = VNET_LEN + ETH_LEN
    if ethertype == 0x0800:
        ihl = (item[ip_off] & 0x0F) * 4
        ip = bytearray(item[ip_off:ip_off + ihl])
        if ip[9] != 17:
            return None
        ident = struct.unpack_from("!H", ip, 4)[0]
        pseudo_addrs = bytes(ip[12:20])
    elif ethertype == 0x86DD:
        ihl = 40
        ip = bytearray(item[ip_off:ip_off + 40])
        if ip[6] != 17:
            return None
        ident = 0
        pseudo_addrs = bytes(ip[8:40])
    else:
        return None
    udp_off = ip_off + ihl
    ports = item[udp_off:udp_off + 4]
    payload = memoryview(item)[udp_off + 8:]
    csum_start = ETH_LEN + ihl
    out = []
    for i, at in enumerate(range(0, len(payload), gso_size)):
        chunk = payload[at:at + gso_size]
        udp_len = 8 + len(chunk)
        if ethertype == 0x0800:
            struct.pack_into("!HH", ip, 2, ihl + udp_len, (ident + i) & 0xFFFF)
            struct.pack_into("!H", ip, 10, 0)
            struct.pack_into("!H", ip, 10, 0xFFFF - _ones_sum(bytes(ip)))
        else:
            struct.pack_into("!H", ip, 4, udp_len)
        seed = _ones_sum(pseudo_addrs + struct.pack("!HH", 17, udp_len))
        vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, csum_start, 6)
        out.append(b"".join((vnet, eth, ip, ports, struct.pack("!HH", udp_len, seed), chunk)))
    return out


def _exempt(item: bytes) -> bool:
    """ARP and ICMPv6 (neighbour discovery; MLD reports too, which come behind a hop-by-hop
    options header) are never lost nor reordered."""
    ethertype = item[VNET_LEN + 12] << 8 | item[VNET_LEN + 13]
    if ethertype == 0x0806:
        return True
    if ethertype != 0x86DD or len(item) <= VNET_LEN + ETH_LEN + 6:
        return False
    next_header = item[VNET_LEN + ETH_LEN + 6]
    if next_header == 0 and len(item) > VNET_LEN + ETH_LEN + 40:  # hop-by-hop options first
        next_header = item[VNET_LEN + ETH_LEN + 40]
    return next_header == 58


def set_tso(ifname: str, on: bool) -> bool:
    """Turn TCP segmentation offload of ``ifname`` (in the calling thread's namespace) on or
    off; returns what it was. Without TSO the kernel segments TCP before the veth, so no
    TCP super-frame reaches the emulator (checksum offload and UDP GSO stay on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_GTSO, 0))
        ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)) + b"\0" * 16
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
        was = bool(struct.unpack_from("II", value.raw)[1])
        ctypes.memmove(value, struct.pack("II", ETHTOOL_STSO, int(on)), 8)
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return was


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    for opt in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE (root): ride out a busy moment
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def _write_stats(path: Path | None, stats: dict[str, object]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, path)


def run(a_if: str, b_if: str, to_b: LinkProfile, to_a: LinkProfile, *, seed: int = 1,
        stats_path: Path | None = None) -> dict[str, object]:
    """Forward frames between ``a_if`` and ``b_if`` (in this namespace) until SIGTERM/SIGINT."""
    rng = random.Random(seed)
    sock_a, sock_b = _packet_socket(a_if), _packet_socket(b_if)
    # (input socket, its direction, output socket)
    lanes = {sock_a.fileno(): (sock_a, Direction(to_b, random.Random(rng.random())), sock_b),
             sock_b.fileno(): (sock_b, Direction(to_a, random.Random(rng.random())), sock_a)}
    dirs = {"to_b": lanes[sock_a.fileno()][1], "to_a": lanes[sock_b.fileno()][1]}
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    serial = 0

    def snapshot() -> dict[str, object]:
        nonlocal serial
        serial += 1
        return {"pid": os.getpid(), "serial": serial, "to_b_profile": str(to_b), "to_a_profile": str(to_a),
                **{name: asdict(d.stats) for name, d in dirs.items()}}

    dump_asked = False

    def dump(_sig: int, _frame: object) -> None:
        nonlocal dump_asked
        dump_asked = True

    signal.signal(signal.SIGUSR1, dump)
    wake_r, wake_w = os.pipe()  # a signal's byte wakes the epoll
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    ep = select.epoll()
    for fd in (*lanes, wake_r):
        ep.register(fd, select.EPOLLIN)
    _write_stats(stats_path, snapshot())
    last_stats, last_seen = time.monotonic(), -1
    clock = time.monotonic
    try:
        while not stopping:
            now = clock()
            wake: float | None = None
            for _in, d, out in lanes.values():
                send = out.send
                for item in d.pop_due(now + EARLY):
                    try:
                        send(item)
                        d.stats.sent += 1
                    except OSError:
                        d.stats.send_errors += 1
                nd = d.next_due()
                if nd is not None and (wake is None or nd < wake):
                    wake = nd
            timeout = STATS_EVERY if wake is None else max(0.0, min(wake - now, STATS_EVERY))
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            now = clock()
            for fd, _ev in events:
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    continue
                sock, d, _out = lanes[fd]
                recv, offer = sock.recv, d.offer
                for _ in range(BATCH):
                    try:
                        item = recv(RECV_SIZE)
                    except BlockingIOError:
                        break
                    if item[1] == VIRTIO_NET_HDR_GSO_NONE:  # gso_type
                        offer(item, len(item) - VNET_LEN, now, exempt=_exempt(item))
                        continue
                    parts = split_udp_gso(item)
                    if parts is None:  # not ours to cut: pass it whole
                        offer(item, len(item) - VNET_LEN, now)
                        continue
                    d.stats.gso_frames += 1
                    for part in parts:
                        offer(part, len(part) - VNET_LEN, now)
            if dump_asked:
                dump_asked = False
                _write_stats(stats_path, snapshot())
            if now - last_stats >= STATS_EVERY:
                seen = sum(d.stats.frames for d in dirs.values())
                if seen != last_seen:
                    _write_stats(stats_path, snapshot())
                    last_seen = seen
                last_stats = now
    finally:
        final = snapshot()
        _write_stats(stats_path, final)
        signal.set_wakeup_fd(-1)
        ep.close()
        os.close(wake_r)
        os.close(wake_w)
        sock_a.close()
        sock_b.close()
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--a-if", required=True, help="the interface toward A")
    ap.add_argument("--b-if", required=True, help="the interface toward B")
    ap.add_argument("--to-b", default="", help="profile of the A->B direction")
    ap.add_argument("--to-a", default="", help="profile of the B->A direction")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", type=Path, default=None, help="JSON counters file")
    args = ap.parse_args(argv)
    to_b, to_a = LinkProfile.parse(args.to_b), LinkProfile.parse(args.to_a)
    run(args.a_if, args.b_if, to_b, to_a, seed=args.seed, stats_path=args.stats)
    return 0


def describe(to_b: LinkProfile, to_a: LinkProfile) -> str:
    """One line for logs: the same profile once, else both directions."""
    return str(to_b) if to_b == to_a else f"to_b:{to_b};to_a:{to_a}"


if __name__ == "__main__":
    sys.exit(main())
