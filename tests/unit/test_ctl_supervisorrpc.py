"""supervisord's process table over its unix socket, with the ctl's own XML-RPC transport
(ctl/supervisorrpc.py): a real supervisord, one that never answers, and none at all."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from sunbeam.ctl.daemon import process_table, supervisor_records

from .sleeperconf import sleeper_conf


def test_a_real_supervisord_answers(tmp_path):
    (tmp_path / "s.conf").write_text(sleeper_conf(str(tmp_path)))
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(tmp_path / "s.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        table: dict[str, str] = {}
        while time.monotonic() < deadline and table.get("sleeper") != "RUNNING":
            table = process_table(tmp_path)
            time.sleep(0.05)
        assert table == {"sleeper": "RUNNING"}
        records = supervisor_records(tmp_path)
        assert records is not None and records[0]["name"] == "sleeper" and records[0]["pid"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_supervisord_that_never_answers_times_out(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "supervisor.sock"))
        listener.listen(4)  # accepts (the backlog) but never reads nor answers
        t0 = time.monotonic()
        assert supervisor_records(tmp_path, timeout=0.3) is None
        assert time.monotonic() - t0 < 2.0


def test_no_supervisord(tmp_path):
    assert supervisor_records(tmp_path) is None and process_table(tmp_path) == {}
