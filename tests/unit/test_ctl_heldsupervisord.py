"""supervisord's interpreter held by `sunbeam-ctl connect` (ctl/heldsupervisord.py): it does
nothing when the ctl does not start sunbeam, and becomes supervisord with the ctl's
environment, output file, session and umask when it does."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from sunbeam.ctl import heldsupervisord
from sunbeam.ctl.daemon import process_table, supervisord_pid

from .sleeperconf import sleeper_conf

CONF = sleeper_conf("%(ENV_HELD_TEST_DIR)s")


def _loaded_at_start() -> set[str]:
    out = subprocess.run([sys.executable, "-c", "import sys; print(*sys.modules)"], capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def test_without_the_go_line_it_exits_having_done_nothing(tmp_path):
    held = heldsupervisord.HeldSupervisord()
    assert held.proc.stdin is not None
    held.proc.stdin.close()  # the ctl exits without starting sunbeam
    assert held.proc.wait(timeout=30) == 0
    assert list(tmp_path.iterdir()) == []


def test_cancel_kills_it():
    heldsupervisord.prestart()
    held = heldsupervisord._held
    assert held is not None
    heldsupervisord.cancel()
    assert held.proc.returncode is not None and heldsupervisord.take() is None


def test_released_it_is_supervisord_with_our_environment(tmp_path):
    (tmp_path / "s.conf").write_text(CONF)
    held = heldsupervisord.HeldSupervisord()
    env = dict(os.environ, HELD_TEST_DIR=str(tmp_path))
    proc = held.release(tmp_path / "s.conf", env, tmp_path / "supervisord.out", new_session=True, umask=0o077)
    assert proc is held.proc
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process_table(tmp_path).get("sleeper") != "RUNNING":
            time.sleep(0.05)
        assert process_table(tmp_path) == {"sleeper": "RUNNING"}
        assert supervisord_pid(tmp_path) == proc.pid  # its command line names supervisord
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)  # a session of its own
        assert stat.S_IMODE((tmp_path / "supervisord.out").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "supervisord.log").stat().st_mode) == 0o600  # the umask
        # it serves XML-RPC (process_table above) without the optional imports it never uses,
        # unless the interpreter loads them before any code of ours runs (a site hook)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        for name, lib in (("ssl", "/_ssl."), ("bz2", "/_bz2."), ("lzma", "/_lzma.")):
            assert name in _loaded_at_start() or lib not in maps, lib
    finally:
        proc.terminate()
        proc.wait(timeout=20)
