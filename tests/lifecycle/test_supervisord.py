"""supervisord.conf runs every service; ctl sockets answer; crashes restart; stop is clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def ctl(env, *args):
    return subprocess.run(["sunbeam-ctl", *args], env=env, capture_output=True, text=True, timeout=30)


def wait_services(env, want: set[str], timeout=20.0, not_pids=()) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        res = ctl(env, "status", "--json")
        if res.stdout:
            seen = {s["service"]: s["pid"] for s in json.loads(res.stdout)["services"] if s["state"] == "running"}
            if want <= set(seen) and not set(seen.values()) & set(not_pids):
                return seen
        time.sleep(0.1)
    raise AssertionError(f"services {sorted(want)} not all up; saw {seen}")


ALL = {"control", "derp", "udp", "proxy", "wg-0", "wg-1"}


def test_pipeline_runs_restarts_and_stops_cleanly(env):
    rundir = Path(env["SUNBEAM_RUNTIME_DIR"])
    sup = subprocess.Popen(["supervisord", "-c", str(ROOT / "supervisord.conf")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = wait_services(env, ALL)
        out = ctl(env, "status")
        assert all(s in out.stdout for s in ALL), out.stdout
        # no control server at 127.0.0.1:9: the VPN is not up, and status says why
        assert out.returncode == 1 and out.stdout.startswith("VPN: reconnecting (control server"), out.stdout
        # every socket file lives in the runtime dir, which nobody else may enter
        assert (rundir.stat().st_mode & 0o777) == 0o700
        assert (rundir / "wg-1-ctl.sock").exists()

        # kill -9 a worker: supervisord restarts it, the new one clears the stale socket
        os.kill(pids["wg-1"], signal.SIGKILL)
        again = wait_services(env, ALL, not_pids=[pids["wg-1"]])
        assert again["wg-1"] != pids["wg-1"] and again["control"] == pids["control"]
        assert "stale_socket_removed" in (rundir / "wg-1.log").read_text()

        # a stop request: acknowledged, the service exits 0 and is not restarted
        from sunbeam.ctl.client import request
        from sunbeam.shared.messages.ctl import Ack, StopRequest
        reply = request(rundir / "derp-ctl.sock", StopRequest(reason="test"))
        assert isinstance(reply, Ack)
        deadline = time.monotonic() + 10
        while (rundir / "derp-ctl.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (rundir / "derp-ctl.sock").exists()
        # supervisord saw the exit as expected (status 0): EXITED, which it does not restart
        from sunbeam.ctl.daemon import supervisor_records

        def derp_record() -> dict:
            return next(r for r in supervisor_records(rundir) or [] if r["name"] == "derp")

        while derp_record()["statename"] not in ("EXITED", "BACKOFF", "STARTING") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert derp_record()["statename"] == "EXITED" and derp_record()["exitstatus"] == 0, derp_record()
        status = json.loads(ctl(env, "status", "--json").stdout)
        assert "derp" not in {s["service"] for s in status["services"]}

        # SIGTERM to supervisord: everything stops promptly, no socket file is left
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0
        assert time.monotonic() - t0 < 5
        assert not list(rundir.glob("*.sock"))
        for pid in again.values():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        res = ctl(env, "status")
        assert res.returncode == 1 and res.stdout.strip() == "VPN: not running"
    finally:
        if sup.poll() is None:  # a failed assertion: stop it the way that stops its children
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()


def test_config_error_is_one_line_and_exit_2(env):
    bad = dict(env, SUNBEAM_WG_WORKERS="lots")
    for cmd in (["sunbeam-control"], ["sunbeam-wg", "--worker", "0"], ["sunbeam-ctl", "status"]):
        res = subprocess.run(cmd, env=bad, capture_output=True, text=True, timeout=30)
        assert res.returncode == 2, (cmd, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "SUNBEAM_WG_WORKERS" in lines[0] and "Traceback" not in res.stderr
        assert "tskey-unit-test-secret" not in res.stderr


def test_worker_number_out_of_range(env):
    res = subprocess.run(["sunbeam-wg", "--worker", "2"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "outside 0..1" in res.stderr


def test_second_instance_refused_while_first_runs(env):
    first = subprocess.Popen(["sunbeam-udp"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_services(env, {"udp"})
        second = subprocess.run(["sunbeam-udp"], env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert "udp-ctl.sock" in second.stderr
        assert wait_services(env, {"udp"})["udp"] == first.pid  # the first one still serves
    finally:
        first.terminate()
        assert first.wait(timeout=10) == 0
