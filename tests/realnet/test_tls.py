"""sunbeam against an HTTPS control server: TS2021 and DERP over TLS (issue 17, item 1).

The network (`refnet_tls`): Headscale serving https://127.0.0.1:8080 with a certificate from
a throwaway CA made at ``up``, its embedded DERP server on the same port (TLS, verified
against 127.0.0.1), two tailscaled peers that trust the CA (SSL_CERT_FILE) and may only
talk through DERP, so every packet between sunbeam and a peer crosses DERP over TLS.

1. With ``ca_file`` in its context, `sunbeam-ctl connect` joins: control over TLS, home
   DERP region 999 connected over TLS (verified with the same CA); a real peer's disco
   ping reaches us via DERP, its ICMP ping is answered through the tunnel, and blobs go
   both ways through our SOCKS5 listener with their sha256 intact.
2. Without ``ca_file`` (the system store only), or with another CA: `connect` fails within
   seconds, exit 1, with one line naming the server and OpenSSL's verification error, and
   leaves no process and no socket behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from sunbeam.refnet import tlscerts
from sunbeam.refnet.blobs import blob_sha256, iter_blob
from sunbeam.refnet.cli import describe
from sunbeam.ctl.daemon import process_alive

from .sunbeam_node import SunbeamNode, until_ok

pytestmark = pytest.mark.realnet

SOCKS = 21380
MB = 1 << 20
CONNECTED = re.compile(r"^Connected \((100\.64\.\d+\.\d+), fd7a:[0-9a-f:]+\) — \d+ peers? visible$", re.MULTILINE)
UNTRUSTED = ("Connect failed: TLS certificate of 127.0.0.1:8080 not trusted: certificate verify failed: "
             "unable to get local issuer certificate (set ca_file in the context, or SSL_CERT_FILE)")


def _node(refnet: dict, hostname: str, ca_file: str | None) -> SunbeamNode:
    node = SunbeamNode(refnet, hostname=hostname, listeners=[{"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"}],
                       extra_env={"SUNBEAM_WG_WORKERS": "1"})
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # trust only what the context says
        node.env.pop(var, None)
    if ca_file is not None:  # in the config file, where a user puts it
        cfg = Path(node.env["SUNBEAM_CONFIG"])
        url_line = f'control_url = "{refnet["control_url"]}"\n'
        cfg.write_text(cfg.read_text().replace(url_line, url_line + f'ca_file = "{ca_file}"\n', 1))
    return node


def _events(node: SunbeamNode, service: str, event: str) -> list[dict]:
    out = []
    for line in node.log(service).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            out.append(record)
    return out


def _curl(refnet: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(refnet["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", str(timeout), *args],
                          check=False, capture_output=True, timeout=timeout + 30)


def _ours(node: SunbeamNode) -> list[int]:
    """PIDs of every process started for this node (by its runtime dir in the environment)."""
    marker = f"SUNBEAM_RUNTIME_DIR={node.rundir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if process_alive(pid)]


def test_refnet_describes_its_ca(refnet_tls):
    assert refnet_tls["tls"] and refnet_tls["control_url"] == "https://127.0.0.1:8080"
    assert Path(refnet_tls["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert f"CA (trust it)   {refnet_tls['ca_file']}" in describe(refnet_tls)


def test_tls_control_and_derp_carry_a_real_peer(refnet_tls):
    node = _node(refnet_tls, "sunbeam-tls", refnet_tls["ca_file"])
    try:
        t0 = time.monotonic()
        res = node.ctl("connect", timeout=90)
        took = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr + node.log()[-3000:]
        m = CONNECTED.search(res.stdout)
        assert m, res.stdout
        ours = m.group(1)
        print(f"connect over TLS: {took:.1f} s")
        assert len(_ours(node)) >= 6  # supervisord + 5 services: what the failure test finds none of

        # control: the TS2021 connection (to https://) is up; DERP: region 999 over TLS
        assert _events(node, "control", "ts2021_connected"), node.log()[-3000:]
        derp = _events(node, "derp", "derp_connected")
        assert any(e["region"] == 999 and e["tls"] is True and e["port"] == 8080 for e in derp), derp
        assert "derp home: region 999" in node.ctl("status").stdout

        # a real tailscaled reaches us: disco over DERP, then ICMP through the tunnel
        peer = refnet_tls["peers"][0]
        disco = subprocess.run(peer["tailscale_cli"] + ["ping", "--until-direct=false", "--c=3", "--timeout=5s", ours],
                               check=False, capture_output=True, text=True, timeout=60)
        assert disco.returncode == 0 and "via DERP(refnet)" in disco.stdout, disco.stdout + disco.stderr
        icmp = subprocess.run(peer["tailscale_cli"] + ["ping", "--icmp", "--c=2", "--timeout=5s", ours],
                              check=False, capture_output=True, text=True, timeout=60)
        assert icmp.returncode == 0 and "pong from sunbeam-tls" in icmp.stdout, icmp.stdout + icmp.stderr

        # bytes both ways through our SOCKS5 listener, over the TLS-bootstrapped tailnet
        target = refnet_tls["peers"][1]
        base = f"http://{target['name']}:{target['service_port']}"
        first = until_ok(lambda: _curl(refnet_tls, "--socks5-hostname", f"127.0.0.1:{SOCKS}", f"{base}/whoami",
                                       timeout=20))
        assert first.returncode == 0, first.stderr + node.log("proxy")[-2000:].encode()
        t0 = time.monotonic()
        down = _curl(refnet_tls, "--socks5-hostname", f"127.0.0.1:{SOCKS}", f"{base}/blob/16M?seed=tls")
        took = time.monotonic() - t0
        assert down.returncode == 0 and len(down.stdout) == 16 * MB, down.stderr
        assert hashlib.sha256(down.stdout).hexdigest() == blob_sha256(16 * MB, "tls")
        print(f"16 MB down through DERP over TLS: {16 / took:.1f} MB/s")
        payload = node.base / "up.bin"
        payload.write_bytes(b"".join(iter_blob(4 * MB, "tls-up")))
        up = _curl(refnet_tls, "--socks5-hostname", f"127.0.0.1:{SOCKS}", "--data-binary", f"@{payload}",
                   "-H", "Content-Type: application/octet-stream", f"{base}/upload")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout) == {"bytes": 4 * MB, "sha256": blob_sha256(4 * MB, "tls-up")}
        # every packet went through DERP: nothing was ever trusted as a direct path
        peers = {p["name"]: p for p in json.loads(node.ctl("peers", "--json").stdout)}
        assert peers[target["name"]]["path"] == "derp", peers[target["name"]]
    finally:
        node.close()


@pytest.mark.parametrize("trust", ["system store only", "another CA"])
def test_untrusted_certificate_fails_at_once_with_one_line(refnet_tls, trust, tmp_path):
    other = None if trust == "system store only" else str(tlscerts.make(tmp_path / "other").ca)
    node = _node(refnet_tls, "sunbeam-untrusted", other)
    try:
        t0 = time.monotonic()
        res = node.ctl("connect", timeout=60)
        took = time.monotonic() - t0
        print(f"{trust}: connect failed after {took:.1f} s")
        assert res.returncode == 1, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        assert UNTRUSTED in lines, res.stdout
        assert took < 10, res.stdout
        errors = _events(node, "control", "control_error")
        assert [e["reason"] for e in errors] == [UNTRUSTED.removeprefix("Connect failed: ")], errors
        # nothing left running: no process of this node, no socket, and status agrees
        assert _ours(node) == []
        assert not list(node.rundir.glob("*.sock")), list(node.rundir.iterdir())
        status = node.ctl("status")
        assert status.returncode == 1 and status.stdout.strip() == "VPN: not running", status.stdout
    finally:
        node.close()


def test_ssl_cert_file_is_trusted_too(refnet_tls):
    """No ca_file, but SSL_CERT_FILE names the CA: OpenSSL's default paths honour it."""
    node = _node(refnet_tls, "sunbeam-sslenv", None)
    node.env["SSL_CERT_FILE"] = refnet_tls["ca_file"]
    try:
        res = node.ctl("connect", timeout=90)
        assert res.returncode == 0 and CONNECTED.search(res.stdout), res.stdout + res.stderr
        derp = _events(node, "derp", "derp_connected")
        assert any(e["region"] == 999 and e["tls"] is True for e in derp), derp
    finally:
        node.close()
