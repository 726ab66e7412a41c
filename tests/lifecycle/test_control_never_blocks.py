"""The control service's loop never waits on the control server: while a server takes the
connection and then says nothing (plain HTTP: no answer to GET /key; https: no TLS
handshake), the ctl socket still answers at once, and the silence ends in a reconnect."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_status_answers_while_the_server_hangs_mid_dial(env, scheme):
    with socket.socket() as silent:  # takes connections (the kernel's backlog), never reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{scheme}://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(["sunbeam-control"], env=env | {"SUNBEAM_CONTROL_URL": url},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answers, started = [], time.monotonic()
            while time.monotonic() - started < 4:  # well inside the 10 s the fetch may take
                t0 = time.monotonic()
                res = subprocess.run(["sunbeam-ctl", "status", "--json"], env=env, capture_output=True, text=True,
                                     timeout=30)
                took = time.monotonic() - t0
                doc = json.loads(res.stdout)
                if doc["control"] is not None:
                    answers.append((took, doc["control"]["state"], doc["not_answering"]))
                time.sleep(0.2)
            assert len(answers) >= 5, answers
            assert all(not silent_ones for _t, _s, silent_ones in answers), answers
            # still dialling (https: the TLS handshake gives up after CONNECT_TIMEOUT, 3 s, and retries)
            assert all(state in ("Starting", "Reconnecting") for _t, state, _n in answers), answers
            # each status took a CLI start (~0.3 s here), never the fetch's 10 s
            assert max(t for t, _s, _n in answers) < 2.0, answers
            # and the silence ends: IO_TIMEOUT (10 s) for the whole fetch, then a retry
            deadline = time.monotonic() + 20
            control: dict = {}
            while time.monotonic() < deadline and control.get("state") != "Reconnecting":
                res = subprocess.run(["sunbeam-ctl", "status", "--json"], env=env, capture_output=True, text=True,
                                     timeout=30)
                control = json.loads(res.stdout)["control"] or {}
                time.sleep(0.2)
            assert control.get("state") == "Reconnecting", control
            assert ("no answer to GET /key within 10s" if scheme == "http" else "timed out") in control["reason"], control
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
