"""A bulk transfer's batches of full-size data segments as arrays (numpy), sans-IO: checked
and joined on the way in (`check`), built on the way out (`build`).

In
--

`TcpStack.receive` hands a batch's leading packets here when at least `BULK_MIN` of them
have the same length (a bulk transfer's full-size segments). `check` does, as operations
on the packets as rows of one array, what the per-packet fast path (header prediction)
checks for each:

- IPv4 with a 20-byte header (0x45), not a fragment, protocol 6, a total length equal to
  the packet's, a valid header checksum;
- one connection (the same addresses and ports), the same ACK number and window, a
  20-byte TCP header (no options), flags ACK and maybe PSH (no SYN, FIN, RST or URG), data;
- sequence numbers contiguous from the first, each segment starting where the one before
  ended (modulo 2**32);
- a valid TCP checksum, with the connection's pseudo-header sum (``addr_sum``) added in.

If every row passes, it returns the `Run`: the first sequence number, the ACK, the window,
the last segment's flags, and all the data joined in one copy. Otherwise None, and the
packets take the per-packet path, which finds, counts and drops what was wrong. Whether
the connection can take the run whole (in order, nothing out of order queued, the window
holds it) is its own decision (`_Input.input_bulk`): a refused run also goes per packet.

A download's packets arrive from the WireGuard worker already joined (`join_runs`,
`FromPeer.segments`): entries of equal packets back to back, each maybe ending with one
shorter packet -- the sender's writes (32 kB from a Go HTTP server: 26 full segments and
a short one) cut the stream into stretches, and one check per stretch paid numpy's fixed
cost ~6 400 times per 200 MB. `check_entries` checks the full packets of all entries as
one set of rows, their sequence numbers contiguous but for the shorter packets' data,
which it checks one by one in Python (`_tail_fits`); `TcpStack.receive_joined` hands the
data on in stream order. Measured on the download through the real network (200 MB,
4 alternating rounds of 2): 0.695 s of CPU per 100 MB (0.67-0.71) against 0.752 s
(0.71-0.835) with the per-packet batches, and 855 checks per 200 MB instead of 6 394.

Header bytes 0..40 of every row are compared with the first row's under `_SAME`, which
keeps the fields that must be equal: version/IHL, total length, flags/fragment offset,
protocol, addresses, ports, ACK number, data offset, the flags but PSH, window. The
ident, TOS, TTL, both checksums, the sequence number and the urgent pointer may differ.
The word sums are the ones `sunbeam.shared.proto.ip.wordsums` explains (little-endian u32
rows, zero padding to a multiple of 4 bytes); a header, or a segment with its
pseudo-header, is valid when its sum is 0 modulo 0xffff.

Cost (this machine, CPU timer): the checks and the joined copy of 150 segments of 1280
bytes take ~0.5 us per segment; `bench/bench_tcp.py --batch 150`'s receive fast path
(checksums, the stretch ACK and the read included) went from 1.87-2.51 to 1.15-1.25 us
per segment (3 interleaved runs each).

Out
---
`_Output._send_new_data` hands `build` a run of at least `BULK_MIN` full segments of new
data over IPv4 (an MSS that is a multiple of 4). It makes what `_Output._tx4_run` makes
one by one, byte for byte: every row starts as one packed header; the fields that change
per segment -- IP ident (counting up), IP checksum, sequence number, the last segment's
PSH, TCP checksum (with each payload's word sum) -- are written as columns; the data is
copied in once (from a view of the send buffer: `SendBuffer.view`).

The rows leave as one `Burst` (a view of them, their size and count), not as a bytes object
per packet: `TcpStack.poll_bursts` hands it on whole, the proxy routes it by its first
packet's destination and sends it to the WireGuard worker as entries of up to 64 kB with
a segment size (`ToPeer.segments`), and the worker encrypts views of them. `TcpStack.poll`
still returns packets one by one. Measured on the upload through the real network
(200 MB, 3 runs each, CPU per 100 MB): the proxy 0.135-0.19 s of user time against
0.20-0.22 s when each packet was sliced out, encoded and decoded on its own, and ~30 numpy
calls per run instead of ~50 (the checksums take their 16-bit folds once, at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..ip.wordsums import joined_rows, loaded_numpy, numpy_if_loaded, row_sums, word_sum
from .segment import ACK

__all__ = ["BULK_MIN", "Burst", "Outgoing", "Run", "build", "check", "check_entries"]

BULK_MIN = 16
"""Fewer packets go per packet: numpy's fixed cost (~30 us a batch) would not pay off."""

_SAME = bytes([0xFF, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0xFF, 0x00, 0x00]  # IPv4 header to the checksum
              + [0xFF] * 12  # addresses, ports
              + [0x00] * 4  # sequence number
              + [0xFF] * 4  # ACK number
              + [0xF0, 0x37, 0xFF, 0xFF]  # data offset, flags but PSH (and ECE/CWR), window
              + [0x00] * 4)  # checksum, urgent pointer


class Burst(NamedTuple):
    """``packet_count`` IPv4 packets of ``size`` bytes each, back to back in ``data``: what `build`
    makes, handed on whole (`TcpStack.poll` with ``bursts=True``) so that nothing copies
    or slices it packet by packet before the WireGuard worker encrypts each one."""

    data: memoryview
    size: int
    packet_count: int

    def packets(self) -> list[bytes]:
        """The packets one by one (a copy each)."""
        data, size = self.data, self.size
        return [bytes(data[i:i + size]) for i in range(0, len(data), size)]


Outgoing = list[bytes | Burst]
"""What a connection appends to as it transmits: packets, and runs built at once."""


class Run(NamedTuple):
    seqw: int
    ackw: int
    wnd: int
    last_flags: int
    data: bytes


def check(packets: Sequence[bytes], length: int, addr_sum: int) -> Run | None:
    """``packets`` (each ``length`` bytes) as one in-order run of data segments of the
    connection whose pseudo-header address sum is ``addr_sum``, or None (see the module
    docstring; also while numpy is not loaded)."""
    if not _may_be_run(packets[0], length) or numpy_if_loaded() is None:
        return None
    buf, width = joined_rows(packets, length)
    return _check_rows(buf, len(packets), length, width, addr_sum, packets[-1][33])


def check_entries(entries: Sequence[bytes], length: int, addr_sum: int) -> Run | None:
    """`check` for packets in the WireGuard worker's form of a run (`FromPeer.segments`):
    each entry holds packets of ``length`` bytes (a multiple of 4) back to back and maybe
    one shorter packet after them (the sender's write that did not fill a segment). The
    full packets of all entries are checked as rows in one pass, their sequence numbers
    contiguous but for the data of the shorter ones between them, which are checked one
    by one (`_tail_fits`); the data comes back in stream order. None: not one run (or
    fewer than `BULK_MIN` full packets, or numpy not loaded)."""
    if length & 3 or length <= 40 or not entries or numpy_if_loaded() is None:
        return None
    np = loaded_numpy()
    fulls: list[bytes | memoryview] = []
    counts: list[int] = []
    tails: list[bytes] = []
    for entry in entries:
        count = len(entry) // length
        full = count * length
        if not count:
            return None
        counts.append(count)
        if full < len(entry):
            fulls.append(memoryview(entry)[:full])
            tails.append(entry[full:])
        else:
            fulls.append(entry)
            tails.append(b"")
    total = sum(counts)
    buf = fulls[0] if len(fulls) == 1 else b"".join(fulls)
    if total < BULK_MIN or not _may_be_run(buf, length):
        return None
    first = bytes(buf[:40])
    seglen = length - 40
    seq0 = int.from_bytes(first[24:28], "big")
    extra = 0  # data of the shorter packets so far
    extras: list[int] = []
    at = seq0
    for count, tail in zip(counts, tails, strict=True):
        extras.append(extra)
        at += count * seglen
        if tail:
            if not _tail_fits(tail, first, at & 0xFFFFFFFF, addr_sum):
                return None
            extra += len(tail) - 40
            at += len(tail) - 40
    offsets = None
    if extra:
        offsets = np.repeat(np.array(extras, np.uint32), counts)
    last_flags = tails[-1][33] if tails[-1] else buf[-length + 33]
    run = _check_rows(buf, total, length, length, addr_sum, last_flags, offsets)
    if run is None or not extra:
        return run
    payload = memoryview(run.data)
    pieces: list[bytes | memoryview] = []
    row = 0
    for count, tail in zip(counts, tails, strict=True):
        pieces.append(payload[row * seglen:(row + count) * seglen])
        row += count
        if tail:
            pieces.append(memoryview(tail)[40:])
    return run._replace(data=b"".join(pieces))


def _tail_fits(tail: bytes, first: bytes, seqw: int, addr_sum: int) -> bool:
    """A shorter packet after a stretch continues the run: what `_SAME` keeps equal to the
    first packet's, IPv4 with a 20-byte header and its length, data (no FIN, SYN, RST or
    URG) from ``seqw``, both checksums valid."""
    n = len(tail)
    return (n > 40 and tail[0] == 0x45 and tail[9] == 6 and not (tail[6] & 0x3F or tail[7])
            and (tail[2] << 8 | tail[3]) == n and tail[12:24] == first[12:24] and tail[28:32] == first[28:32]
            and tail[32] >> 4 == 5 and tail[33] & 0x37 == ACK and tail[34:36] == first[34:36]
            and int.from_bytes(tail[24:28], "big") == seqw and not int.from_bytes(tail[:20], "big") % 0xFFFF
            and not (word_sum(tail) + addr_sum + n - 14) % 0xFFFF)


def _may_be_run(first: bytes | memoryview, length: int) -> bool:
    """The first packet's header says a run of data segments is possible."""
    return (length > 40 and first[0] == 0x45 and first[9] == 6 and not (first[6] & 0x3F or first[7])
            and (first[2] << 8 | first[3]) == length and first[32] >> 4 == 5 and first[33] & 0x37 == ACK)


def _check_rows(buf: bytes | memoryview, count: int, length: int, width: int, addr_sum: int,
                last_flags: int, offsets: Any = None) -> Run | None:
    """The rows' checks (see the module docstring); ``offsets``: per row, the data of the
    shorter packets between it and the first (u32, `check_entries`), or None."""
    np = loaded_numpy()
    first = buf
    rows = np.frombuffer(buf, np.uint8).reshape(count, width)
    if ((rows[:, :40] ^ rows[0, :40]) & np.frombuffer(_SAME, np.uint8)).any():
        return None
    seqs = np.ndarray((count,), ">u4", buf, 24, (width,)).astype(np.uint32)
    expected = np.arange(count, dtype=np.uint32) * np.uint32(length - 40)
    if offsets is not None:
        expected += offsets
    if ((seqs - seqs[0]) != expected).any():
        return None
    words = np.frombuffer(buf, "<u4").reshape(count, width >> 2)
    if (words[:, :5].sum(axis=1, dtype=np.uint64) % 0xFFFF).any():
        return None
    if ((row_sums(words) + (addr_sum + length - 14)) % 0xFFFF).any():
        return None
    return Run(int.from_bytes(first[24:28], "big"), int.from_bytes(first[28:32], "big"),
               first[34] << 8 | first[35], last_flags, rows[:, 40:length].tobytes())


def build(header: bytes, data: bytes | memoryview, mss: int, seqw: int, ident: int, ip_base: int, shared: int,
          last_flags: int) -> Burst:
    """``len(data) // mss`` IPv4 segments of ``mss`` bytes of ``data`` each (``mss`` a
    multiple of 4), from sequence number ``seqw``, with IP idents from ``ident + 1``, as one
    `Burst`. ``header``: the 40 header bytes they share (its ident, sequence number and
    checksums are overwritten, its flags ACK); ``ip_base`` and ``shared``: the parts of the
    IP and TCP checksum sums that `_Output._tx4_run` adds for every segment; ``last_flags``:
    the last segment's flags (ACK, or ACK | PSH). Only once numpy is loaded
    (`wordsums.numpy_if_loaded`)."""
    np = loaded_numpy()
    count = len(data) // mss
    width = 40 + mss
    rows = np.empty((count, width), np.uint8)
    rows[:, :40] = np.frombuffer(header, np.uint8)
    rows[:, 40:] = np.frombuffer(data, np.uint8).reshape(count, mss)
    step = _steps(np, count)
    seqs = (step * mss + seqw) & 0xFFFFFFFF
    idents = (step + (ident + 1)) & 0xFFFF
    # Each checksum is -(its sum) mod 0xffff, the sum's parts taken modulo 0xffff only at
    # the end: a sequence number's two 16-bit words add up to the number itself (mod
    # 0xffff, as 2**16 is 1), a payload's big-endian word sum is 256 times its
    # little-endian u32 row sum, and the constant parts go into a multiple of 0xffff above
    # every row's sum (the u64 differences never go below 0).
    flags = header[33]
    tcp_k = _ABOVE - (shared + mss + flags) % 0xFFFF
    payload_sums = np.frombuffer(data, "<u4").reshape(count, mss >> 2).sum(axis=1, dtype=np.uint64)
    tcp = (tcp_k - seqs - payload_sums * 256) % 0xFFFF
    if last_flags != flags:
        tcp[-1] = (int(tcp[-1]) - (last_flags - flags)) % 0xFFFF
        rows[-1, 33] = last_flags
    ip = (_ABOVE - (ip_base + width) % 0xFFFF - idents) % 0xFFFF
    column = np.ndarray
    column((count,), ">u2", rows, 4, (width,))[:] = idents
    column((count,), ">u2", rows, 10, (width,))[:] = ip
    column((count,), ">u4", rows, 24, (width,))[:] = seqs
    column((count,), ">u2", rows, 36, (width,))[:] = tcp
    return Burst(memoryview(rows).cast("B"), width, count)


_ABOVE = 0xFFFF << 40
"""A multiple of 0xffff above any sum `build` subtracts from it (payload sums of at most
16 383 u32 words times 256, plus a sequence number: below 2**55)."""
_step_cache: list[Any] = []


def _steps(np: Any, count: int) -> Any:
    """0, 1, ... ``count - 1`` as u64 (a view of one cached array)."""
    if not _step_cache or len(_step_cache[0]) < count:
        _step_cache[:] = [np.arange(max(count, 1024), dtype=np.uint64)]
    return _step_cache[0][:count]
