"""JSON log lines, Secret redaction, rate limiting."""

import io
import json
import logging

import pytest

from sunbeam.shared.runtime import RateLimitedLog, Secret, get_logger


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def out():
    return io.StringIO()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_line_has_fields(out):
    log = get_logger("wg", stream=out)
    log.info("handshake_done", peer=b"\x01\x02", worker=3, ok=True, note="two\nlines")
    text = out.getvalue()
    assert text.count("\n") == 1  # one line per record, even with a newline in a field
    (record,) = lines(out)
    assert list(record)[:4] == ["ts", "level", "service", "event"]
    assert record["level"] == "info" and record["service"] == "wg"
    assert record["event"] == "handshake_done"
    assert record["ts"].endswith("Z") and "T" in record["ts"]
    assert record["peer"] == "0102" and record["worker"] == 3 and record["ok"] is True
    assert record["note"] == "two\nlines"


def test_core_keys_cannot_be_overwritten_and_levels_filter(out):
    log = get_logger("udp", stream=out, level="warning")
    log.info("hidden")
    log.warning("shown", level="fake", service="fake", ts=1)
    (record,) = lines(out)
    assert record["level"] == "warning" and record["service"] == "udp"
    assert record["_level"] == "fake" and record["_ts"] == 1


def test_exception_traceback_in_exc(out):
    log = get_logger("control", stream=out)
    try:
        raise KeyError("boom")
    except KeyError:
        log.exception("crashed")
    (record,) = lines(out)
    assert record["level"] == "error" and "KeyError: 'boom'" in record["exc"]


def test_long_bytes_are_truncated(out):
    get_logger("derp", stream=out).warning("garbage", data=bytes(1000))
    (record,) = lines(out)
    assert record["data"].endswith("...(1000 bytes)") and len(record["data"]) < 200


def test_secret_is_redacted_everywhere(out):
    key = Secret("privkey:deadbeef")
    assert str(key) == repr(key) == f"{key}" == "<redacted>"
    assert "deadbeef" not in "%s %r" % (key, key)
    assert key.reveal() == "privkey:deadbeef"
    assert Secret(b"x") == Secret(b"x") and Secret(b"x") != Secret(b"y")
    with pytest.raises(TypeError):
        "prefix" + key  # type: ignore[operator]
    log = get_logger("control", stream=out)
    log.info("loaded", key=key, nested={"auth": Secret("tskey-auth-123"), "list": [Secret(b"raw")]})
    # Records from other code that format a Secret into their message.
    logging.getLogger("sunbeam.control").info("legacy %s", key)
    text = out.getvalue()
    assert "deadbeef" not in text and "tskey-auth-123" not in text and "raw" not in text
    first, second = lines(out)
    assert first["key"] == "<redacted>"
    assert first["nested"] == {"auth": "<redacted>", "list": ["<redacted>"]}
    assert second["event"] == "legacy <redacted>"


def test_rate_limiter_suppresses_and_reports_count(out):
    clock = FakeClock()
    limited = RateLimitedLog(get_logger("udp", stream=out), max_lines=2, interval=10.0, clock=clock)
    results = [limited.warning("peer-a", "bad_disco", n=i) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert limited.suppressed("peer-a") == 3
    assert limited.warning("peer-b", "bad_disco") is True  # keys are independent
    clock.now = 10.0
    assert limited.warning("peer-a", "bad_disco", n=5) is True
    records = [r for r in lines(out)]
    assert [r.get("n") for r in records] == [0, 1, None, 5]
    assert "suppressed" not in records[0]
    assert records[3]["suppressed"] == 3
    assert limited.suppressed("peer-a") == 0


def test_rate_limiter_report_suppressed_and_bounded_keys(out):
    clock = FakeClock()
    limited = RateLimitedLog(
        get_logger("udp", stream=out), max_lines=1, interval=5.0, max_keys=4, clock=clock
    )
    for i in range(100):  # 100 distinct peers: keys beyond 4 share one overflow budget
        limited.warning(f"peer-{i}", "garbage")
    assert len(lines(out)) == 5  # 4 keys + 1 overflow line
    assert limited.suppressed(RateLimitedLog.OVERFLOW_KEY) == 95
    clock.now = 5.0
    assert limited.report_suppressed() == 1
    last = lines(out)[-1]
    assert last["event"] == "log_suppressed" and last["suppressed"] == 95
    assert last["key"] == RateLimitedLog.OVERFLOW_KEY
