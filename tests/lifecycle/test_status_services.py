"""``sunbeam-ctl status`` lists every service, dead, restarting, stopped or silent, with its
restart count, under supervisord and without it.

No control server runs at 127.0.0.1:9, so the VPN never reaches Running and the exit code is
1 throughout; what these tests check is the per-service view (the exit code's dependence on
the services themselves is covered in tests/unit/test_status_view.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALL = ["control", "derp", "udp", "proxy", "wg-0", "wg-1"]


def status(env) -> tuple[int, dict[str, Any]]:
    res = subprocess.run(["sunbeam-ctl", "status", "--json"], check=False, env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.stdout.strip(), res.stderr
    return res.returncode, json.loads(res.stdout)


def text(env) -> subprocess.CompletedProcess:
    return subprocess.run(["sunbeam-ctl", "status"], check=False, env=env, capture_output=True, text=True, timeout=30)


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["service"]: r for r in doc["processes"]}


def wait_rows(env, ok: Callable[[dict[str, dict[str, Any]]], bool], what: str, timeout: float = 20.0,
              every: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Poll ``status --json`` until ``ok(rows)``; ``every(rows)`` checks each intermediate look."""
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        _, doc = status(env)
        seen = rows(doc)
        if every is not None:
            every(seen)
        if ok(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s; last {json.dumps(seen, indent=1)}")


def line_of(out: str, service: str) -> str:
    found = [line for line in out.splitlines() if line.split()[:1] == [service]]
    assert len(found) == 1, out
    return found[0]


def supervisorctl(env, *args: str) -> str:
    res = subprocess.run(["supervisorctl", "-c", str(ROOT / "supervisord.conf"), *args], check=False, env=env,
                         capture_output=True, text=True, timeout=30)
    return res.stdout + res.stderr


@pytest.fixture()
def supervised(env):
    sup = subprocess.Popen(["supervisord", "-c", str(ROOT / "supervisord.conf")], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield sup
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()


def all_running(r: dict[str, dict[str, Any]]) -> bool:
    # supervisord says RUNNING only startsecs (1 s) after the spawn; the service answers sooner
    return list(r) == ALL and all(row["state"] == "running" and row["supervisor"] == "RUNNING" for row in r.values())


def listed_in_order(r: dict[str, dict[str, Any]]) -> None:
    assert list(r) == ALL, list(r)  # never a service left out, whatever its state


def test_every_service_listed_with_state_restarts_and_uptime(env, supervised):
    first = wait_rows(env, all_running, "every service running")
    assert all(row["restarts"] == 0 and row["healthy"] and row["supervisor"] == "RUNNING" for row in first.values())
    out = text(env)
    assert out.returncode == 1  # control server unreachable
    for name in ALL:
        assert re.match(rf"  {name}\s+pid {first[name]['pid']}\s+running\s+up \d+s\s+restarts 0\s+drops \d+$",
                        line_of(out.stdout, name)), out.stdout

    # SIGKILL a worker: listed at every look while supervisord restarts it, then restarts 1
    os.kill(first["wg-1"]["pid"], signal.SIGKILL)
    after = wait_rows(env, lambda r: r["wg-1"]["pid"] not in (None, first["wg-1"]["pid"])
                      and r["wg-1"]["state"] == "running", "wg-1 restarted", every=listed_in_order)
    assert after["wg-1"]["restarts"] == 1 and after["wg-1"]["healthy"]
    assert after["wg-1"]["uptime"] < after["wg-0"]["uptime"]
    assert all(after[n]["restarts"] == 0 for n in ALL if n != "wg-1")
    out = text(env)
    assert re.match(rf"  wg-1\s+pid {after['wg-1']['pid']}\s+running\s+up \d+s\s+restarts 1\s",
                    line_of(out.stdout, "wg-1")), out.stdout

    # a worker that stops answering (SIGSTOP): listed as not answering, with its pid
    os.kill(after["wg-0"]["pid"], signal.SIGSTOP)
    try:
        rc, doc = status(env)
        assert rc == 1 and doc["not_answering"] == ["wg-0"] and "wg-0" not in {s["service"] for s in doc["services"]}
        row = rows(doc)["wg-0"]
        assert (row["state"], row["healthy"], row["pid"], row["drops"]) == ("not answering", False,
                                                                             after["wg-0"]["pid"], None)
        assert row["uptime"] is not None and row["uptime"] >= after["wg-0"]["uptime"]
    finally:
        os.kill(after["wg-0"]["pid"], signal.SIGCONT)
    wait_rows(env, all_running, "wg-0 answers again")

    # stopped by supervisorctl: listed as stopped, not running, no pid; exit 1
    assert "stopped" in supervisorctl(env, "stop", "sunbeam:derp")
    stopped = wait_rows(env, lambda r: r["derp"]["state"] == "stopped", "derp stopped", every=listed_in_order)
    assert (stopped["derp"]["pid"], stopped["derp"]["healthy"], stopped["derp"]["uptime"]) == (None, False, None)
    rc, doc = status(env)
    assert rc == 1 and doc["healthy"] is False and "derp" not in {s["service"] for s in doc["services"]}
    out = text(env)
    assert out.returncode == 1
    assert re.match(r"  derp\s+pid -\s+stopped\s+-\s+restarts 0\s+drops -", line_of(out.stdout, "derp")), out.stdout

    # started again: a second spawn of this supervisord run counts as a restart
    assert "started" in supervisorctl(env, "start", "sunbeam:derp")
    again = wait_rows(env, all_running, "derp running again")
    assert again["derp"]["restarts"] == 1 and again["wg-1"]["restarts"] == 1 and again["control"]["restarts"] == 0


def test_a_stuck_supervisord_does_not_hang_status(env, supervised):
    wait_rows(env, all_running, "every service running")
    supervised.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        rc, doc = status(env)
        took = time.monotonic() - t0
    finally:
        supervised.send_signal(signal.SIGCONT)
    assert took < 10 and rc == 1
    # the services themselves still answer: listed from their sockets, no restart count
    assert list(rows(doc)) == ALL
    assert all(r["state"] == "running" and r["restarts"] is None for r in rows(doc).values())


def test_started_by_hand_sockets_are_the_list(env):
    """Without supervisord: the services that have a ctl socket; a killed one shows as a
    stale socket, and nobody counts restarts."""
    udp = subprocess.Popen(["sunbeam-udp"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wg = subprocess.Popen(["sunbeam-wg", "--worker", "0"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        up = wait_rows(env, lambda r: set(r) == {"udp", "wg-0"} and all(x["state"] == "running" for x in r.values()),
                       "udp and wg-0 answer")
        assert up["wg-0"]["pid"] == wg.pid and up["wg-0"]["restarts"] is None and up["wg-0"]["supervisor"] is None
        wg.send_signal(signal.SIGKILL)
        wg.wait(timeout=10)
        dead = wait_rows(env, lambda r: r.get("wg-0", {}).get("state") == "stale socket", "wg-0 stale")
        assert list(dead) == ["udp", "wg-0"] and dead["wg-0"]["pid"] is None and not dead["wg-0"]["healthy"]
        out = text(env)
        assert out.returncode == 1
        assert re.match(r"  wg-0\s+pid -\s+stale socket\s+-\s+restarts -\s+drops -$", line_of(out.stdout, "wg-0"))
        assert re.match(rf"  udp\s+pid {udp.pid}\s+running\s+up \d+s\s+restarts -", line_of(out.stdout, "udp"))
    finally:
        for p in (udp, wg):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
    # nothing runs any more: a stale socket file alone is not a running VPN
    assert (Path(env["SUNBEAM_RUNTIME_DIR"]) / "wg-0-ctl.sock").exists()
    assert text(env).stdout.strip() == "VPN: not running"
