"""Updates from the other services that arrive before the control connection is up.

Regression (CI, 2026-12-06): the udp service published its endpoints while the TS2021
upgrade was still waiting for the server's 101; the control service tried to POST a lite
MapRequest on a connection that was not up, raised, and exited — a node started by hand never
reached Running. Updates that come early are kept and go out with the map request that
follows registration.

The control service runs for real (``sunbeam-control``); the server is a real socket that
answers ``GET /key`` with a key and then holds the upgrade unanswered; the udp and derp
statuses come over their real PUB channels.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import zmq
from sunbeam.shared.channels import DERP_PUB, UDP_PUB
from sunbeam.shared.messages.dataplane import DerpStatus, UdpStatus

from .test_server_answers import raw_server

SERVER_KEY = json.dumps({"publicKey": "mkey:" + "11" * 32}).encode()


@contextmanager
def upgrade_holding_server() -> Iterator[tuple[str, threading.Event]]:
    """Answers ``GET /key``; holds every other request (the upgrade) open, unanswered, until
    the block ends. The event is set once an upgrade request arrived."""
    upgrading, done = threading.Event(), threading.Event()

    def answer(conn: socket.socket, request: bytes) -> None:
        if request.startswith(b"GET /key"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(SERVER_KEY)).encode() + b"\r\nConnection: close\r\n\r\n" + SERVER_KEY)
        else:
            upgrading.set()
            done.wait(60)

    with raw_server(answer) as url:
        try:
            yield url, upgrading
        finally:
            done.set()


def _status(env: dict[str, str]) -> dict:
    res = subprocess.run(["sunbeam-ctl", "status", "--json"], check=False, env=env,
                         capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout) if res.stdout.strip() else {}


def test_endpoints_and_home_derp_during_the_upgrade_do_not_stop_control(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    with upgrade_holding_server() as (url, upgrading):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        env.update(SUNBEAM_RUNTIME_DIR=str(run), SUNBEAM_STATE_DIR=str(tmp_path / "state"),
                   SUNBEAM_CONTROL_URL=url, SUNBEAM_AUTH_KEY="hskey-auth-secret",
                   XDG_CONFIG_HOME=str(tmp_path / "cfg"))
        ctx = zmq.Context()
        # the statuses' publishers, as the udp and derp services bind them
        udp_pub = ctx.socket(zmq.PUB)
        udp_pub.bind(UDP_PUB.endpoint(run))
        derp_pub = ctx.socket(zmq.PUB)
        derp_pub.bind(DERP_PUB.endpoint(run))
        proc = subprocess.Popen(["sunbeam-control"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert upgrading.wait(15), f"control never sent its upgrade request: {_status(env)}"
            # PUB/SUB drops what is sent before the subscription is joined: send for a while,
            # each with new endpoints, all while the upgrade is unanswered
            for i in range(30):
                udp_pub.send(UDP_PUB.codec.encode(UdpStatus(port=41641, endpoints=(f"10.9.0.{i + 1}:41641",))))
                derp_pub.send(DERP_PUB.codec.encode(DerpStatus(state="connected", home_region=900 + i % 2)))
                time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            control = _status(env).get("control") or {}
            counters = control.get("counters") or {}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            udp_pub.close(0)
            derp_pub.close(0)
            ctx.term()
    assert control.get("state") == "Registering", control
    assert not {k: v for k, v in counters.items() if k.endswith("_failed")}, counters
