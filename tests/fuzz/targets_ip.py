"""Fuzz targets of the IP layer: IPv4/IPv6 headers, ICMP/ICMPv6 echo and TSMP through
`IpResponder`, TCP segment parsing, and the TCP state machine fed arbitrary segments.

Mutated packets mostly die at a checksum, so every target also feeds the input with its
checksums repaired (`fix_checksums`, an independent RFC 1071 sum) to reach what lies
behind them. No UDP header decoder exists yet: the responder counts UDP as
``unhandled_udp`` without parsing it (the UDP engine comes later), which is all that the
``ip_responder`` target can exercise of UDP.

Contracts: ``headers.parse`` / ``parse_icmp`` / ``parse_tsmp`` / ``segment.parse_packet``
raise ``Malformed`` (``reason`` a counter name) only; ``IpResponder.handle`` and
``parse_echo_reply`` never raise; ``TcpStack.receive`` never raises, refusals are counted
``drop_<reason>`` with ``last_drop``.
"""

from __future__ import annotations

import pickle
import struct

from sunbeam.shared.proto.ip import IpResponder, Malformed, parse, parse_echo_reply
from sunbeam.shared.proto.ip.responder import Drop, EchoReplied, Reply, Unreachable
from sunbeam.shared.proto.tcp import (
    Closed,
    Connected,
    ConnectionRequest,
    PeerFinished,
    Readable,
    Reset,
    Writable,
)
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_sack_option,
    build_syn_options,
    parse_options,
    parse_packet,
)

from tests.ip.vectors import OURS4, OURS6, UPSTREAM
from tests.tcp.scripted import STATES, Scripted, stack_in

from .harness import Seed, Target, check_token

# --- checksums, independently -----------------------------------------------------------


def _sum16(data: bytes | bytearray, initial: int = 0) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _csum(data: bytes | bytearray, initial: int = 0) -> int:
    return ~_sum16(data, initial) & 0xFFFF


_CSUM_AT = {1: 2, 58: 2, 6: 16, 17: 6}  # ICMP, ICMPv6, TCP, UDP: checksum offset


def fix_checksums(data: bytes) -> bytes:
    """The packet with its IPv4 header and ICMP/ICMPv6/TCP/UDP checksums recomputed,
    as far as its (possibly bogus) length fields allow; other bytes unchanged."""
    pkt = bytearray(data)
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0xF) * 4
        if ihl < 20 or ihl > len(pkt):
            return bytes(pkt)
        pkt[10:12] = b"\0\0"
        pkt[10:12] = _csum(pkt[:ihl]).to_bytes(2, "big")
        end = min(int.from_bytes(pkt[2:4], "big"), len(pkt))
        proto, start = pkt[9], ihl
        pseudo = _sum16(pkt[12:20] + bytes([0, proto]) + max(end - start, 0).to_bytes(2, "big")) if proto != 1 else 0
    elif len(pkt) >= 40 and pkt[0] >> 4 == 6:
        end = min(40 + int.from_bytes(pkt[4:6], "big"), len(pkt))
        proto, start = pkt[6], 40
        pseudo = _sum16(pkt[8:40] + (end - start).to_bytes(4, "big") + bytes([0, 0, 0, proto]))
    else:
        return bytes(pkt)
    at = _CSUM_AT.get(proto)
    if at is None or end - start < at + 2:
        return bytes(pkt)
    pkt[start + at:start + at + 2] = b"\0\0"
    pkt[start + at:start + at + 2] = _csum(pkt[start:end], pseudo).to_bytes(2, "big")
    return bytes(pkt)


# --- IP responder ----------------------------------------------------------------------

def _ip_responder():
    responder = IpResponder([OURS4, OURS6], peerapi_port=0)

    def one(pkt: bytes) -> str | None:
        echo = parse_echo_reply(pkt)  # never raises
        assert echo is None or isinstance(echo[0], str)
        res = responder.handle(pkt)
        if res is None:
            drop = responder.last_drop
            assert isinstance(drop, Drop)
            return check_token(drop.reason)
        if isinstance(res, Reply):
            assert res.kind in ("echo_reply", "tsmp_pong")
            answer = parse(res.packet)  # our reply is a well-formed packet
            if res.kind == "echo_reply":
                assert parse_echo_reply(res.packet) is not None
            assert answer.src == parse(pkt).dst
        elif isinstance(res, Unreachable):
            assert res.reason in ("denied", "refused", "host_unreachable", "net_unreachable")
            assert len(res.local) == len(res.remote) in (4, 16) and 0 <= res.proto <= 255
            assert 0 <= res.local_port <= 65535 and 0 <= res.remote_port <= 65535
        else:
            assert isinstance(res, EchoReplied)
        return None

    def run(data: bytes):
        reason = one(data)
        fixed = fix_checksums(data)
        return one(fixed) if fixed != data else reason
    return run


def _ip_seeds() -> list[Seed]:
    v4, v6 = ((2, 2, "big"),), ((4, 2, "big"),)
    return [Seed(p, v4 if p[0] >> 4 == 4 else v6) for p in UPSTREAM.values()]


# --- TCP -------------------------------------------------------------------------------

def _tcp_segment():
    def run(data: bytes):
        for pkt in (data, fix_checksums(data)):
            try:
                seg = parse_packet(pkt)
                opts = parse_options(seg.options)
            except Malformed as exc:
                reason = check_token(exc.reason)
                continue
            assert len(seg.options) <= 40 and len(seg.src) in (4, 16)
            assert opts.wscale is None or 0 <= opts.wscale <= 14
            assert len(opts.sack) <= 4 and all(0 <= e < 1 << 32 for b in opts.sack for e in b)
            reason = None
        return reason
    return run


def _split_packets(data: bytes) -> list[bytes]:
    """Packets one after the other, each as long as its own IP length field says."""
    out = []
    while data and len(out) < 16:
        if data[0] >> 4 == 6 and len(data) >= 40:
            n = 40 + int.from_bytes(data[4:6], "big")
        elif len(data) >= 4:
            n = int.from_bytes(data[2:4], "big")
        else:
            n = len(data)
        n = min(max(n, 20), len(data))
        out.append(data[:n])
        data = data[n:]
    return out


_EVENTS = (Closed, Connected, ConnectionRequest, PeerFinished, Readable, Reset, Writable)
_SNAPSHOTS: dict[tuple[int, bool], bytes] = {}


def _snapshot(state: int, v6: bool) -> bytes:
    key = (state, v6)
    if key not in _SNAPSHOTS:
        s, _ = stack_in(STATES[state], v6)
        _SNAPSHOTS[key] = pickle.dumps((s.stack, s.now), pickle.HIGHEST_PROTOCOL)
    return _SNAPSHOTS[key]


def _tcp_stack():
    """Input: a control byte (bits 0-2 the starting state, 3 raw checksums, 4 IPv6,
    5 let time pass between packets), then IP packets back to back. Each input starts
    from a fresh stack in that state (a pickled snapshot)."""
    def run(data: bytes):
        if not data:
            return "empty"
        ctl = data[0]
        stack, now = pickle.loads(_snapshot(ctl & 7 if ctl & 7 < 7 else 3, bool(ctl & 0x10)))
        before = stack.counters.copy()
        packets = _split_packets(data[1:])
        if not ctl & 0x08:
            packets = [fix_checksums(p) for p in packets]
        batches = [[p] for p in packets] if ctl & 0x20 else [packets]
        for batch in batches:
            stack.receive(batch, now)
            for pkt in stack.poll(now):
                parse_packet(pkt)  # what we transmit is always a valid segment
            for ev in stack.events():
                assert isinstance(ev, _EVENTS)
            now += 0.3
            stack.handle_timer(now)
            for pkt in stack.poll(now):
                parse_packet(pkt)
            stack.events()
        for conn in stack._by_id.values():
            assert len(conn.rcv_buf) <= stack.cfg.recv_buffer
            assert len(conn.sbuf) <= stack.cfg.send_buffer
            assert conn.snd_una <= conn.snd_nxt <= conn.snd_max or conn.state >= 9
        drops = [k for k, n in stack.counters.items() if k.startswith("drop_") and n > before.get(k, 0)]
        if drops:
            check_token(stack.last_drop[0])
            return drops[0]
        return None
    return run


def _tcp_seeds() -> list[Seed]:
    seeds = []
    for v6 in (False, True):
        for state in range(7):
            stack, _ = pickle.loads(_snapshot(state, v6))
            s = Scripted(v6=v6)
            s.stack = stack
            conn = next(iter(stack._by_id.values()), None)
            if conn is not None:
                s.sport, s.dport = int.from_bytes(conn.key[-4:-2], "big"), int.from_bytes(conn.key[-2:], "big")
            rcv = conn.rcv_nxt if conn else 1001
            snd = conn.snd_una if conn else 0
            pkts = [s.packet(SYN, 1000, options=build_syn_options(1240, 7, True)),
                    s.packet(ACK | PSH, rcv, snd, b"payload" * 20),
                    s.packet(ACK, rcv, snd, options=build_sack_option([(snd + 10, snd + 2000), (snd - 50, snd)])),
                    s.packet(FIN | ACK, rcv, snd), s.packet(RST, rcv),
                    s.packet(SYN | ACK, 1000, snd, options=build_syn_options(536, 14, True))]
            ctl = state | (0x10 if v6 else 0)
            for i in range(0, len(pkts), 2):
                seeds.append(bytes([ctl | (0x20 if i else 0)]) + b"".join(pkts[i:i + 2]))
            # a run: contiguous data segments with one ACK and window (`TcpStack.receive`
            # hands them to `input_run` together)
            seeds.append(bytes([ctl]) + b"".join(s.packet(ACK | PSH, rcv + k * 140, snd, bytes([k]) * 140)
                                                  for k in range(3)))
    return seeds


def _tcp_seeds_flat() -> list[bytes]:
    return [p for seed in _tcp_seeds() for p in _split_packets(seed[1:])]


TARGETS = [
    Target("ip_responder", _ip_responder, _ip_seeds,
           "ip IpResponder.handle (headers.parse, parse_icmp/parse_echo, parse_tsmp), parse_echo_reply",
           max_len=1500),
    Target("tcp_segment", _tcp_segment, _tcp_seeds_flat,
           "tcp segment.parse_packet, parse_options", max_len=1600),
    Target("tcp_stack", _tcp_stack, _tcp_seeds,
           "tcp TcpStack.receive/poll/handle_timer fed arbitrary segments in every state", max_len=4096),
]

