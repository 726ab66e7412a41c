"""The reference network itself: real Headscale + real tailscaled peers, checked end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from sunbeam.refnet import netns, network
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.refnet.cli import fetch_via_socks
from sunbeam.ctl.daemon import process_alive

pytestmark = pytest.mark.realnet

TEN_MB = 10 * 1024 * 1024


def _status(peer: dict) -> dict:
    out = subprocess.run(peer["tailscale_cli"] + ["status", "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _check_mesh(info: dict) -> None:
    a, b = info["peers"][:2]  # (other modules may have added peers to the shared network)
    for me, other in ((a, b), (b, a)):
        st = _status(me)
        assert st["BackendState"] == "Running"
        assert sorted(st["Self"]["TailscaleIPs"]) == sorted(me["ips"])
        listed = {p["HostName"]: p for p in st["Peer"].values()}
        assert other["name"] in listed, f"{me['name']} does not list {other['name']}: {sorted(listed)}"
        assert sorted(listed[other["name"]]["TailscaleIPs"]) == sorted(other["ips"])


def _ping(info: dict) -> str:
    a, b = info["peers"][:2]  # (other modules may have added peers to the shared network)
    # In DERP-only mode no direct path can form, and `tailscale ping` would report that as a
    # failure; there, count the DERP pongs instead of waiting for a direct one.
    until_direct = "--until-direct=false" if info["derp_only"] else "--until-direct=true"
    res = subprocess.run(a["tailscale_cli"] + ["ping", "--c=10", until_direct, b["ips"][0]],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pong from {b['name']} ({b['ips'][0]})" in res.stdout
    return res.stdout


def _blob_through_socks(info: dict, size: int) -> None:
    a, b = info["peers"][:2]  # (other modules may have added peers to the shared network)
    res = fetch_via_socks(info, a, b, f"/blob/{size}?seed=refnet")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert len(res.stdout) == size
    assert hashlib.sha256(res.stdout).hexdigest() == blob_sha256(size, "refnet")


def test_peers_list_each_other(refnet):
    assert len(refnet["peers"]) >= 2
    _check_mesh(refnet)
    # Headscale agrees: both nodes registered and online.
    nodes = json.loads(subprocess.run(refnet["headscale_cli"] + ["nodes", "list", "-o", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    # (the session's network is shared: other test modules may have added nodes)
    by_name = {n["given_name"]: n for n in nodes}
    assert by_name["peer-1"]["online"] and by_name["peer-2"]["online"]


def test_tailscale_ping(refnet):
    out = _ping(refnet)
    assert "via DERP" not in out.splitlines()[-1], "direct path expected when DERP-only mode is off"


def test_blob_through_socks5(refnet):
    _blob_through_socks(refnet, TEN_MB)


def test_upload_and_echo_through_socks5(refnet):
    a, b = refnet["peers"][:2]
    payload = os.urandom(3 * 1024 * 1024 + 7)
    base = f"http://{b['ips'][0]}:{b['service_port']}"
    curl = refnet["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", "60", "--socks5-hostname", a["socks5"]]
    up = subprocess.run(curl + ["--data-binary", "@-", f"{base}/upload"], input=payload, capture_output=True, check=True)
    assert json.loads(up.stdout) == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    echo = subprocess.run(curl + ["--data-binary", "@-", f"{base}/echo"], input=b"sunbeam\x00echo", capture_output=True,
                          check=True)
    assert echo.stdout == b"sunbeam\x00echo"
    who = subprocess.run(curl + [f"{base}/whoami"], capture_output=True, check=True)
    assert json.loads(who.stdout)["peer"] == b["name"]


def test_derp_only_mode(refnet_derp):
    assert refnet_derp["derp_only"]
    _check_mesh(refnet_derp)
    out = _ping(refnet_derp)
    assert "via DERP(refnet)" in out, out
    _blob_through_socks(refnet_derp, TEN_MB)


def test_cli_up_json_and_down_leave_nothing(tmp_path):
    name = f"sbdown-{os.getpid()}"
    env = dict(os.environ, SUNBEAM_REFNET_STATE_DIR=str(tmp_path / "state"))
    try:
        res = subprocess.run(["sunbeam-refnet", "up", "--peers", "1", "--json", "--name", name], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert info["netns"] == name and netns.exists(name)
        assert info["control_url"] == "http://127.0.0.1:8080"
        assert info["auth_keys"]["reusable"].startswith("hskey-auth-")
        assert info["peers"][0]["ips"] and info["peers"][0]["socks5"] == "127.0.0.1:11081"
        pids = list(info["pids"].values())
        assert all(process_alive(p) for p in pids)
        # the command prefix really runs a command inside the namespace
        links = subprocess.run(info["exec_prefix"] + ["ip", "-o", "link"], capture_output=True, text=True, check=True)
        assert "sb0-void" in links.stdout
        res = subprocess.run(["sunbeam-refnet", "down", "--name", name], env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 5
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if process_alive(p)]
        assert not netns.exists(name)
        assert not Path(info["workdir"]).exists()
        assert not (tmp_path / "state" / f"{name}.json").exists()
    finally:
        network.down(name)

