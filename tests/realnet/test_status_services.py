"""``sunbeam-ctl status`` against the real network: exit 0 only while the VPN runs and every
service does; a killed worker is listed with its restart, a stopped service makes it 1;
``--json`` says who we are on the tailnet and lists the peers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from .sunbeam_node import SunbeamNode

pytestmark = pytest.mark.realnet

ALL = ["control", "derp", "udp", "proxy", "wg-0", "wg-1"]


def status(node: SunbeamNode) -> tuple[int, dict[str, Any]]:
    res = node.ctl("status", "--json")
    assert res.stdout.strip(), res.stderr
    return res.returncode, json.loads(res.stdout)


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["service"]: r for r in doc["processes"]}


def wait_status(node: SunbeamNode, ok: Callable[[int, dict[str, dict[str, Any]]], bool], what: str,
                timeout: float = 30.0) -> tuple[int, dict[str, dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    rc, seen = -1, {}
    while time.monotonic() < deadline:
        rc, doc = status(node)
        seen = rows(doc)
        assert list(seen) == ALL, list(seen)  # every service, whatever its state, at every look
        if ok(rc, seen):
            return rc, seen
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s; last exit {rc}, {json.dumps(seen, indent=1)}")


def supervisorctl(node: SunbeamNode, *args: str) -> str:
    # node.env: supervisorctl also reads a supervisord.conf it finds (the working directory's)
    res = subprocess.run(["supervisorctl", "-s", f"unix://{node.rundir / 'supervisor.sock'}", *args],
                         check=False, env=node.env, capture_output=True, text=True, timeout=30)
    return res.stdout + res.stderr


def test_status_follows_every_service_and_names_us(refnet):
    node = SunbeamNode(refnet, hostname="sunbeam-st", extra_env={"SUNBEAM_WG_WORKERS": "2"})
    try:
        res = node.ctl("connect", timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr
        rc, first = wait_status(node, lambda rc, r: rc == 0, "status exit 0 after connect")
        assert all(r["state"] == "running" and r["restarts"] == 0 for r in first.values()), first

        _, doc = status(node)
        assert doc["healthy"] is True and doc["control"]["state"] == "Running"
        assert doc["hostname"] == "sunbeam-st"
        assert doc["magicdns_name"] == doc["control"]["name"].rstrip(".")
        assert doc["tailnet_domain"] and doc["magicdns_name"] == f"sunbeam-st.{doc['tailnet_domain']}"
        assert doc["version"] and doc["peers_detail"] == "sunbeam-ctl peers --json"
        listed = {p["name"]: p for p in doc["peers"]}
        for ref in refnet["peers"][:2]:
            assert listed[ref["name"]]["online"] is True, listed
            assert ref["ips"][0] in listed[ref["name"]]["addresses"], listed
            assert listed[ref["name"]]["magicdns_name"].endswith("." + doc["tailnet_domain"]), listed
        text = node.ctl("status")
        assert text.returncode == 0 and f"magicdns: {doc['magicdns_name']}" in text.stdout.splitlines(), text.stdout

        # SIGKILL a worker: supervisord restarts it; once it answers, exit 0 again, restarts 1
        os.kill(first["wg-1"]["pid"], signal.SIGKILL)
        _, after = wait_status(node, lambda rc, r: rc == 0 and r["wg-1"]["pid"] != first["wg-1"]["pid"],
                               "exit 0 with a new wg-1")
        assert after["wg-1"]["restarts"] == 1 and all(after[n]["restarts"] == 0 for n in ALL if n != "wg-1")
        text = node.ctl("status")
        assert re.search(rf"^  wg-1\s+pid {after['wg-1']['pid']}\s+running\s+up \d+s\s+restarts 1\s", text.stdout,
                         re.MULTILINE), text.stdout

        # a service stopped by supervisorctl: the VPN still says running, status exits 1
        assert "stopped" in supervisorctl(node, "stop", "sunbeam:derp")
        rc, stopped = wait_status(node, lambda rc, r: r["derp"]["state"] == "stopped", "derp stopped")
        assert rc == 1 and stopped["derp"]["healthy"] is False and stopped["derp"]["pid"] is None
        text = node.ctl("status")
        assert text.returncode == 1 and text.stdout.startswith("VPN: running\n"), text.stdout
        assert re.search(r"^  derp\s+pid -\s+stopped\s+-\s+restarts 0\s", text.stdout, re.MULTILINE), text.stdout

        assert "started" in supervisorctl(node, "start", "sunbeam:derp")
        _, back = wait_status(node, lambda rc, r: rc == 0, "exit 0 with derp back")
        assert back["derp"]["restarts"] == 1 and back["derp"]["state"] == "running"
    finally:
        node.close()
