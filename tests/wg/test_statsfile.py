"""The wg worker's per-peer totals file (services/wg/statsfile.py): encode/decode, load and
atomic save, the base + live merge, the save timer; every unusable file a counted drop."""

from __future__ import annotations

import math
import os
import stat

import msgspec
import pytest
from sunbeam.services.wg.statsfile import (
    MAX_FILE_BYTES,
    BadStatsFile,
    PeerTotals,
    StatsFile,
    StatsSaver,
    Totals,
    decode,
    encode,
    load_totals,
    stats_path,
)
from sunbeam.shared.runtime.counters import Counters

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, /, **kv) -> None:
        self.lines.append((event, kv))

    def warning(self, *args, **kv) -> None:  # StructLogger(event) and RateLimitedLog(key, event)
        self.lines.append((args[-1], kv))


class _Handle:
    def __init__(self, callback) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """call_later only: the test fires the armed timer by hand."""

    def __init__(self) -> None:
        self.armed: list[_Handle] = []

    def call_later(self, delay: float, callback) -> _Handle:
        h = _Handle(callback)
        self.armed.append(h)
        return h

    def fire(self) -> None:
        live = [h for h in self.armed if not h.cancelled]
        assert len(live) == 1, live
        self.armed.remove(live[0])
        live[0].callback()


@pytest.fixture()
def sfile(tmp_path) -> StatsFile:
    return StatsFile(stats_path(tmp_path, 1), 1, 2)


def test_encode_decode_round_trip():
    totals = {A: Totals(53_267_000, 980, 1718000000.5), B: Totals(0, 0, 0.0)}
    assert decode(encode(1, 2, totals), 1, 2) == totals
    assert decode(encode(0, 1, {}), 0, 1) == {}


def test_save_then_load_round_trip_0600_atomic(sfile, tmp_path):
    totals = {A: Totals(1, 2, 3.5)}
    assert sfile.load() == {}  # no file: the first start, not a drop
    sfile.save(encode(1, 2, totals))
    assert sfile.path == tmp_path / "wg-1.stats"
    assert stat.S_IMODE(sfile.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wg-1.stats"]  # the temp file was renamed
    assert sfile.load() == totals
    # a temp file left by a kill -9 mid-write (any mode) is overwritten, and ends 0600
    sfile.tmp.write_bytes(b"half a file")
    os.chmod(sfile.tmp, 0o644)
    sfile.save(encode(1, 2, {B: Totals(7, 8, 9.0)}))
    assert sfile.load() == {B: Totals(7, 8, 9.0)}
    assert stat.S_IMODE(sfile.path.stat().st_mode) == 0o600 and not sfile.tmp.exists()


def _raw(**fields) -> bytes:
    f = {"version": 1, "worker": 1, "workers": 2, "peers": {A: {"rx_bytes": 1, "tx_bytes": 2, "last_handshake": 3.0}}}
    f.update(fields)
    return msgspec.msgpack.encode(f)


@pytest.mark.parametrize("data, reason", [
    (b"", "undecodable"),
    (b"\xff\x00garbage", "undecodable"),
    (encode(1, 2, {A: Totals(1, 2, 3.0)})[:-3], "undecodable"),  # truncated
    (msgspec.msgpack.encode([1, 2, 3]), "undecodable"),
    (_raw(version=2), "format version 2"),
    (_raw(worker=0), "written by worker 0 of 2"),  # another shard's peers are not ours
    (_raw(workers=3), "written by worker 1 of 3"),
    (_raw(peers={b"short": {"rx_bytes": 1}}), "undecodable"),
    (_raw(peers={A: {"rx_bytes": -1}}), "undecodable"),
    (_raw(peers={A: {"last_handshake": math.nan}}), "undecodable"),
    (_raw(peers={A: {"last_handshake": math.inf}}), "undecodable"),
    (_raw(peers={A: {"rx_bytes": "12"}}), "undecodable"),
])
def test_unusable_file_is_a_counted_logged_drop(sfile, data, reason):
    sfile.path.write_bytes(data)
    with pytest.raises(BadStatsFile, match=reason):
        sfile.load()
    counters, log = Counters(), _Log()
    assert load_totals(sfile, counters, log) == {}
    assert counters["stats_file_dropped"] == 1
    assert log.lines[0][0] == "stats_file_dropped" and reason in log.lines[0][1]["reason"]


def test_unreadable_or_oversized_file_is_a_drop_too(sfile):
    sfile.path.write_bytes(b"\x00" * (MAX_FILE_BYTES + 1))
    with pytest.raises(BadStatsFile, match="larger than"):
        sfile.load()
    sfile.path.unlink()
    sfile.path.mkdir()  # reading a directory: EISDIR
    with pytest.raises(BadStatsFile, match="unreadable"):
        sfile.load()
    sfile.path.rmdir()
    sfile.path.symlink_to("/etc/hostname")  # O_NOFOLLOW: not read through a symlink
    counters = Counters()
    assert load_totals(sfile, counters, _Log()) == {}
    assert counters["stats_file_dropped"] == 1


def test_missing_file_loads_nothing_and_counts_nothing(sfile):
    counters, log = Counters(), _Log()
    assert load_totals(sfile, counters, log) == {} and "stats_file_dropped" not in counters and not log.lines


def test_loaded_totals_are_logged(sfile):
    sfile.save(encode(1, 2, {A: Totals(1, 2, 3.0), B: Totals()}))
    log = _Log()
    assert len(load_totals(sfile, Counters(), log)) == 2
    assert log.lines == [("stats_loaded", {"path": str(sfile.path), "peers": 2})]


def test_live_counters_continue_the_base():
    totals = PeerTotals({A: Totals(1000, 2000, 100.0)})
    assert totals.total(A, Totals()) == Totals(1000, 2000, 100.0)  # restarted, nothing counted yet
    assert totals.total(A, Totals(5, 7, 0.0)) == Totals(1005, 2007, 100.0)  # no handshake yet: the old one
    assert totals.total(A, Totals(5, 7, 200.0)) == Totals(1005, 2007, 200.0)
    assert totals.total(B, Totals(5, 7, 200.0)) == Totals(5, 7, 200.0)  # no base: live alone


def test_peers_absent_from_the_netmap_keep_their_base_until_they_return():
    # the worker reports only the peers it has routes for; the snapshot it saves keeps the rest
    totals = PeerTotals({A: Totals(1000, 2000, 100.0), C: Totals(9, 9, 9.0)})
    saved = totals.snapshot({A: Totals(1, 1, 0.0), B: Totals(3, 4, 50.0)})
    assert saved == {A: Totals(1001, 2001, 100.0), B: Totals(3, 4, 50.0), C: Totals(9, 9, 9.0)}
    # B leaves the netmap: its device counters go, its total stays in the base
    totals.fold(B, Totals(3, 4, 50.0))
    assert totals.snapshot({A: Totals()})[B] == Totals(3, 4, 50.0)
    # ... and continues when B comes back (fresh device counters)
    assert totals.total(B, Totals(10, 0, 0.0)) == Totals(13, 4, 50.0)
    # a second fold adds up rather than replacing
    totals.fold(B, Totals(10, 0, 0.0))
    assert totals.base[B] == Totals(13, 4, 50.0)


def test_saver_writes_on_its_timer_only_when_changed_and_at_flush(sfile):
    loop, counters, log = _Loop(), Counters(), _Log()
    live = {A: Totals(1, 2, 3.0)}
    saver = StatsSaver(loop, sfile, lambda: dict(live), counters, log)
    saver.start()
    assert not sfile.path.exists()  # nothing before the first tick
    loop.fire()
    assert sfile.load() == live and counters["stats_saved"] == 1
    loop.fire()  # unchanged: no write
    assert counters["stats_saved"] == 1
    live[A] = Totals(10, 2, 3.0)
    loop.fire()
    assert sfile.load() == live and counters["stats_saved"] == 2
    live[B] = Totals(1, 1, 1.0)
    saver.flush()  # clean shutdown: written now, and the timer is stopped
    assert sfile.load() == live and counters["stats_saved"] == 3
    assert all(h.cancelled for h in loop.armed)
    saver.flush()  # unchanged
    assert counters["stats_saved"] == 3


def test_saver_counts_a_failed_write_and_retries(tmp_path):
    sfile = StatsFile(stats_path(tmp_path / "gone", 0), 0, 1)
    loop, counters, log = _Loop(), Counters(), _Log()
    saver = StatsSaver(loop, sfile, lambda: {A: Totals(1, 2, 3.0)}, counters, log)
    saver.start()
    loop.fire()
    assert counters["stats_save_failed"] == 1 and log.lines[0][0] == "stats_save_failed"
    (tmp_path / "gone").mkdir()
    loop.fire()  # the timer was re-armed and the same totals are written now
    assert counters["stats_saved"] == 1 and sfile.load() == {A: Totals(1, 2, 3.0)}
