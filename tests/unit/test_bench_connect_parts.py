"""bench/sides.py's connect split, read from a control log in the service log format."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sides import connect_parts  # noqa: E402


def _line(at: float, event: str, **kv) -> str:
    ts = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"ts": ts, "level": "info", "service": "control", "event": event, **kv})


def test_connect_split_from_the_control_log(tmp_path):
    t0 = 1_800_000_000.0
    log = tmp_path / "control.log"
    log.write_text("\n".join([
        _line(t0 + 0.5, "started"), "not json", _line(t0 + 0.6, "ts2021_connected"),
        _line(t0 + 1.5, "registered"), _line(t0 + 2.5, "control_state", state="Running"),
        _line(t0 + 9.0, "control_state", state="Running"),  # a later one does not count
    ]) + "\n")
    assert connect_parts(log, t0, 2.7) == {"startup": 0.6, "register_wait": 0.9, "first_map_wait": 1.0,
                                           "announce_wait": 0.0, "rest": 0.2}
    log.write_text("\n".join([  # a new node waits for the server to show peers its home region
        _line(t0 + 0.6, "ts2021_connected"), _line(t0 + 1.5, "registered"), _line(t0 + 2.5, "announce_wait"),
        _line(t0 + 3.3, "control_state", state="Running"),
    ]) + "\n")
    assert connect_parts(log, t0, 3.5) == {"startup": 0.6, "register_wait": 0.9, "first_map_wait": 1.0,
                                           "announce_wait": 0.8, "rest": 0.2}
    log.write_text(_line(t0 + 0.6, "ts2021_connected") + "\n")  # never registered: no split
    assert connect_parts(log, t0, 2.7) == {}
