"""Per-peer traffic totals that survive a worker restart: ``<rundir>/wg-<k>.stats``.

The worker owns its peers' counters (rx/tx bytes, last handshake, in the `Device`'s
`Peer`s), and they die with the process. So that a restarted worker (supervisord after a
crash, or a clean restart) goes on from the totals its predecessor reached, the worker
keeps a *base* per node key and reports ``base + live``:

- at start it loads the base from ``wg-<k>.stats`` (`load_totals`). A missing file is
  the normal first start; a file that cannot be read or decoded, or that another shard
  wrote, is a counted, logged drop (``stats_file_dropped``) and the worker starts from zero;
  it never crashes on it;
- every `SAVE_INTERVAL` seconds (when anything changed) and at a clean shutdown it writes
  ``base + live`` for every peer it knows (`StatsSaver`). The write replaces the file
  atomically (a temp file ``wg-<k>.stats.tmp`` in the same directory, mode 0600, then
  ``os.replace``), so a reader sees the old file or the new one, never half of one. There
  is no fsync: the file is only meant to outlive the process, not the machine (the runtime
  directory is per run and usually on tmpfs), and an fsync would stall the loop for
  milliseconds;
- a kill -9 loses what was counted since the last write: at most one `SAVE_INTERVAL`.

Peers the current netmap does not hold keep their base (loaded, or folded in by `fold`
when the netmap drops them) but are never reported: only the peers the worker has routes
for appear in `PeersReply`. When such a peer comes back it continues from its base.

The totals are per connect run: ``sunbeam-ctl connect`` deletes ``STATS_GLOB`` in the
runtime directory before it starts supervisord, so a fresh connect starts from zero.

File layout (msgpack via msgspec; a map, so fields added later with defaults still load)::

    {"version": 1, "worker": 1, "workers": 2,
     "peers": {<32-byte node key>: {"rx_bytes": 53267, "tx_bytes": 980,
                                    "last_handshake": 1718000000.5}, ...}}

``last_handshake`` is wall-clock seconds (0 = never), as `PeerStats` carries it.

Ownership: every object here belongs to the worker's loop thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import msgspec
from sunbeam.shared.runtime import RateLimitedLog, StructLogger
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.loop import ServiceLoop
from sunbeam.shared.runtime.timers import TimerHandle

__all__ = [
    "FORMAT_VERSION",
    "SAVE_INTERVAL",
    "STATS_GLOB",
    "BadStatsFile",
    "PeerTotals",
    "StatsFile",
    "StatsSaver",
    "Totals",
    "decode",
    "encode",
    "load_totals",
    "stats_path",
]

FORMAT_VERSION = 1
SAVE_INTERVAL = 1.0  # s: how often changed totals are written (and what a kill -9 may lose)
STATS_GLOB = "wg-*.stats*"  # every worker's file and temp file in the runtime directory
MAX_FILE_BYTES = 4 << 20  # a bigger file is not ours: dropped unread

_Count = Annotated[int, msgspec.Meta(ge=0)]
_WallTime = Annotated[float, msgspec.Meta(ge=0, le=1e11)]  # unix seconds; rejects NaN and inf
_NodeKey = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class Totals(msgspec.Struct, frozen=True):
    """One peer's counters: since the run began (saved) or since this process began (live)."""

    rx_bytes: _Count = 0
    tx_bytes: _Count = 0
    last_handshake: _WallTime = 0.0
    """Wall-clock seconds of the last completed handshake; 0 = never."""

    def plus(self, live: Totals) -> Totals:
        """These totals continued by ``live`` (counted since they were saved)."""
        return Totals(self.rx_bytes + live.rx_bytes, self.tx_bytes + live.tx_bytes,
                      live.last_handshake or self.last_handshake)


class _File(msgspec.Struct, frozen=True):
    version: int
    worker: int
    workers: int
    peers: dict[_NodeKey, Totals]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_File)


class BadStatsFile(ValueError):
    """A stats file we must not use; the message says why (for the drop's log line)."""


def stats_path(rundir: str | os.PathLike[str], worker: int) -> Path:
    """``<rundir>/wg-<worker>.stats``."""
    return Path(rundir) / f"wg-{worker}.stats"


def encode(worker: int, workers: int, totals: dict[bytes, Totals]) -> bytes:
    return _ENCODER.encode(_File(FORMAT_VERSION, worker, workers, totals))


def decode(data: bytes, worker: int, workers: int) -> dict[bytes, Totals]:
    """The totals of a file that worker ``worker`` of ``workers`` wrote; `BadStatsFile` for
    anything else (garbage, another version, another shard: its peers are not ours)."""
    try:
        f = _DECODER.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise BadStatsFile(f"undecodable: {exc}") from None
    if f.version != FORMAT_VERSION:
        raise BadStatsFile(f"format version {f.version}, not {FORMAT_VERSION}")
    if (f.worker, f.workers) != (worker, workers):
        raise BadStatsFile(f"written by worker {f.worker} of {f.workers}, we are {worker} of {workers}")
    return dict(f.peers)


class PeerTotals:
    """The base each peer's live counters continue (``base + live``).

    ``base`` holds what earlier processes of this worker counted (loaded) plus what this
    one counted for peers the netmap has since dropped (`fold`)."""

    def __init__(self, base: dict[bytes, Totals] | None = None) -> None:
        self.base: dict[bytes, Totals] = dict(base or {})

    def total(self, key: bytes, live: Totals) -> Totals:
        """What to report for a peer whose live counters are ``live``."""
        base = self.base.get(key)
        return base.plus(live) if base is not None else live

    def fold(self, key: bytes, live: Totals) -> None:
        """The peer leaves the device (and its live counters with it): keep its total."""
        self.base[key] = self.total(key, live)

    def snapshot(self, live: dict[bytes, Totals]) -> dict[bytes, Totals]:
        """Every peer's total, present (``live``) or not (its base alone): what to save."""
        out = dict(self.base)
        for key, counters in live.items():
            out[key] = self.total(key, counters)
        return out


class StatsFile:
    """Reads and atomically replaces one worker's stats file."""

    def __init__(self, path: Path, worker: int, workers: int) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.worker, self.workers = worker, workers

    def load(self) -> dict[bytes, Totals]:
        """The saved totals; {} when there is no file. `BadStatsFile` when there is one we
        cannot use (unreadable, too big, garbage, another shard's)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BadStatsFile(f"unreadable: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise BadStatsFile(f"unreadable: {exc.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise BadStatsFile(f"larger than {MAX_FILE_BYTES} bytes")
        return decode(data, self.worker, self.workers)

    def save(self, data: bytes) -> None:
        """Write ``data`` (from `encode`) to a 0600 temp file and rename it over the file;
        raises OSError (the old file stays)."""
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a temp file left by an earlier run keeps its mode otherwise
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)


def load_totals(file: StatsFile, counters: Counters, log: StructLogger) -> dict[bytes, Totals]:
    """What the worker before us saved ({} if nothing); a file we cannot use is a counted
    (``stats_file_dropped``), logged drop, and we start from zero."""
    try:
        loaded = file.load()
    except BadStatsFile as exc:
        counters.incr("stats_file_dropped")
        log.warning("stats_file_dropped", path=str(file.path), reason=str(exc)[:200])
        return {}
    if loaded:
        log.info("stats_loaded", path=str(file.path), peers=len(loaded))
    return loaded


class StatsSaver:
    """Saves ``snapshot()`` to the file every `SAVE_INTERVAL` s while it changed, and once
    more at `flush` (clean shutdown). A failed write is counted (``stats_save_failed``) and
    logged (rate-limited); the next tick tries again."""

    def __init__(self, loop: ServiceLoop, file: StatsFile, snapshot: Callable[[], dict[bytes, Totals]],
                 counters: Counters, log: RateLimitedLog, interval: float = SAVE_INTERVAL) -> None:
        self._loop = loop
        self._file = file
        self._snapshot = snapshot
        self._counters = counters
        self._log = log
        self._interval = interval
        self._written: bytes | None = None  # what the file holds (None: unknown, write anyway)
        self._handle: TimerHandle | None = None

    def start(self) -> None:
        """Arm the timer (the first tick writes whatever the file held, then only changes)."""
        self._handle = self._loop.call_later(self._interval, self._tick)

    def flush(self) -> None:
        """Write now if anything changed (the worker's clean shutdown); stop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._save()

    def _tick(self) -> None:
        self._save()
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _save(self) -> None:
        data = encode(self._file.worker, self._file.workers, self._snapshot())
        if data == self._written:
            return
        try:
            self._file.save(data)
        except OSError as exc:
            self._counters.incr("stats_save_failed")
            self._log.warning("stats_save", "stats_save_failed", path=str(self._file.path), error=exc.strerror or str(exc))
            return
        self._written = data
        self._counters.incr("stats_saved")
