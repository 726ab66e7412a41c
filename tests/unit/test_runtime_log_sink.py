"""`JsonSink`: the stdlib-free writer behind `get_logger` (log.py), against what the
stdlib logging did for us before: destinations, reconfiguration, levels, tracebacks."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from sunbeam.shared.runtime.log import ERROR, WARNING, get_logger, level_number


def test_a_file_destination_appends_and_a_reconfiguration_moves_every_logger(tmp_path):
    path = tmp_path / "svc.log"
    path.write_text('{"old":1}\n')
    first = get_logger("sinktest-file", path=str(path))
    first.info("to_file", n=1)
    out = io.StringIO()
    get_logger("sinktest-file", stream=out, level="warning")
    first.info("hidden")  # the earlier logger follows the new destination and level
    first.warning("to_stream")
    assert [json.loads(x).get("event") for x in path.read_text().splitlines()] == [None, "to_file"]
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["to_stream"]


def test_without_a_destination_the_configuration_is_reused():
    out = io.StringIO()
    get_logger("sinktest-reuse", stream=out, level="error")
    again = get_logger("sinktest-reuse", level="debug")  # no destination: level ignored, as before
    again.warning("hidden")
    again.error("shown")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["shown"]


def test_stderr_is_looked_up_at_write_time(monkeypatch):
    log = get_logger("sinktest-stderr")
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replaced)
    log.warning("late")
    assert json.loads(replaced.getvalue())["event"] == "late"


def test_level_names_as_the_stdlib_reads_them():
    assert level_number("warn") == level_number("WARNING") == WARNING == logging.WARNING
    assert level_number("error") == ERROR == logging.ERROR and level_number(15) == 15
    with pytest.raises(ValueError):
        level_number("verbose")


def test_the_traceback_is_the_stdlib_formatters():
    out = io.StringIO()
    log = get_logger("sinktest-exc", stream=out)
    try:
        raise KeyError("boom")
    except KeyError:
        log.exception("crashed")
        want = logging.Formatter().formatException(sys.exc_info())
    assert json.loads(out.getvalue())["exc"] == want


def test_a_closed_stream_loses_the_line_and_nothing_else():
    out = io.StringIO()
    log = get_logger("sinktest-closed", stream=out)
    out.close()
    log.error("lost")  # no exception out of a log call


def test_stdlib_records_of_the_service_logger_become_our_lines():
    out = io.StringIO()
    get_logger("sinktest-bridge", stream=out, level="info")
    get_logger("sinktest-bridge", stream=out)  # configured twice: still one line per record
    logging.getLogger("sunbeam.sinktest-bridge").warning("legacy %d", 7)
    logging.getLogger("sunbeam.sinktest-bridge").debug("below the level")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "legacy 7" and record["level"] == "warning" and record["service"] == "sinktest-bridge"
