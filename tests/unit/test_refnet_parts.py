"""The reference network's own parts that run without root: blobs, the test service, pins."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
from http.server import ThreadingHTTPServer

import pytest

from sunbeam.refnet import headscale, install
from sunbeam.refnet.blobs import CHUNK, blob_sha256, iter_blob
from sunbeam.refnet.testservice import Handler, parse_size


def test_blob_golden_vectors():
    # Pinned so a change to the blob definition (which other tools recompute) is noticed.
    assert blob_sha256(100000, "0") == "989e297e0c107602024c21a2f2448f19bfc8f52cab82486cca26094d67a8d2d6"
    assert blob_sha256(65536, "x") == "f0021559c9f397e6916ae3b3eccf02e8ec9189c69e0955a2f1818901724ef804"
    assert blob_sha256(0) == hashlib.sha256(b"").hexdigest()
    assert next(iter_blob(8, "0")) == bytes.fromhex("4f91cd87098d411e")


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_blob_sizes_and_prefix_property(size):
    data = b"".join(iter_blob(size, "s"))
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == blob_sha256(size, "s")
    longer = b"".join(iter_blob(size + 10, "s"))
    assert longer[:size] == data  # a blob is a prefix of every longer blob with the same seed
    assert b"".join(iter_blob(size, "t")) != data or size == 0


def test_blob_size_bounds():
    with pytest.raises(ValueError):
        next(iter_blob(-1))
    with pytest.raises(ValueError):
        parse_size("9G")
    assert parse_size("10M") == 10 << 20 and parse_size("7") == 7 and parse_size("2k") == 2048
    for bad in ("", "M", "1.5M", "-1", "0x10"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.fixture()
def service():
    Handler.peer_name = "unit-peer"
    Handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_service_blob_whoami_echo(service):
    resp, data = _request(service, "GET", "/blob/200K?seed=u")
    assert resp.status == 200 and len(data) == 200 * 1024
    assert resp.getheader("X-Blob-Sha256") == hashlib.sha256(data).hexdigest() == blob_sha256(200 * 1024, "u")
    resp, data = _request(service, "GET", "/sha256/200K?seed=u")
    assert data.decode().strip() == blob_sha256(200 * 1024, "u")
    resp, data = _request(service, "GET", "/whoami")
    assert json.loads(data)["peer"] == "unit-peer"
    resp, data = _request(service, "GET", "/echo?msg=hi%20there")
    assert data == b"hi there"
    resp, data = _request(service, "GET", "/blob/nope")
    assert resp.status == 400
    resp, data = _request(service, "GET", "/missing")
    assert resp.status == 404


def test_service_upload_content_length_and_chunked(service):
    payload = bytes(range(256)) * 1000
    resp, data = _request(service, "POST", "/upload", body=payload)
    assert json.loads(data) == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

    def chunks():
        for i in range(0, len(payload), 7777):
            yield payload[i:i + 7777]

    conn = http.client.HTTPConnection("127.0.0.1", service, timeout=10)
    conn.request("POST", "/upload", body=chunks(), encode_chunked=True)
    got = json.loads(conn.getresponse().read())
    assert got == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    resp, data = _request(service, "POST", "/echo", body=b"\x00\x01abc")
    assert data == b"\x00\x01abc"


def test_service_survives_truncated_body(service):
    s = socket.create_connection(("127.0.0.1", service))
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nshort")
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    reply = s.recv(4096)
    s.close()
    assert b" 400 " in reply.split(b"\r\n")[0]
    resp, _ = _request(service, "GET", "/whoami")  # still serving
    assert resp.status == 200


def test_pins_are_complete():
    pins = install.load_pins()
    assert set(pins) == {"headscale", "tailscale"}
    assert pins["headscale"].version.startswith("v0.29.")
    assert pins["tailscale"].version.startswith("v1.9")
    assert set(pins["tailscale"].binaries) == {"tailscaled", "tailscale"}
    assert pins["headscale"].binaries == ("headscale",)


def test_cache_outside_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("SUNBEAM_REFNET_CACHE", str(tmp_path / "c"))
    pin = install.load_pins()["headscale"]
    assert install.pin_dir(pin) == tmp_path / "c" / f"headscale-{pin.version}"
    assert not install.is_installed(pin)


def test_headscale_config_keeps_everything_on_loopback(tmp_path):
    text = headscale.config_yaml(tmp_path)
    for key in ("listen_addr", "metrics_listen_addr", "grpc_listen_addr", "stun_listen_addr"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
        assert line.split(":", 1)[1].strip().startswith("127.0.0.1:"), line
    assert "urls: []" in text and "auto_update_enabled: false" in text
    assert str(tmp_path) in text
