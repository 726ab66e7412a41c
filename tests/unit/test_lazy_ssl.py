"""The control and derp services load ``ssl`` only when TLS is used (idle memory).

Importing ``ssl`` maps libssl and libcrypto (a few MB per process); a plain-HTTP deployment
(``http://`` control URL, DERP regions without TLS) never needs them. The modules that may
run without TLS ask `tlsctx.is_tls_socket`, `is_cert_error` and `would_block`, which look
in ``sys.modules`` instead of importing ssl; contexts are built (and ssl imported) by
`tlsctx.client_context` / `insecure_context` only. These tests check the imports, a whole
``/key`` fetch over http:// in a fresh interpreter, and the same fetch over TLS.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sunbeam.refnet import tlscerts
from sunbeam.shared.runtime import ServiceLoop, Shutdown, tlsctx

from ..httphead import recv_head

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
KEY_ANSWER = json.dumps({"publicKey": "mkey:" + KEY.hex()}).encode()

# run in the probe before anything else: remembers who imported ssl first (for the message)
WHO_IMPORTS_SSL = """
    import importlib.abc, json, sys, traceback
    first = []
    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ssl" and not first:
                first.extend(f"{f.filename}:{f.lineno}: {f.line}" for f in traceback.extract_stack()
                             if "importlib" not in f.filename and f.filename != "<string>")
            return None
    sys.meta_path.insert(0, Watch())
"""


def _probe(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(WHO_IMPORTS_SSL) + textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def _importer(out: dict) -> str:
    return "\n  ".join(["ssl first imported via:", *out["first"][-6:]])


class _KeyServer:
    """One connection: (TLS if ``files``) read the request, answer the key, close."""

    def __init__(self, files: tlscerts.TlsFiles | None) -> None:
        self.ctx = None
        if files is not None:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(files.cert, files.key)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return self.srv.getsockname()[1]

    def __exit__(self, *_exc: object) -> None:
        self.srv.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        try:
            conn.settimeout(5)
            sock = self.ctx.wrap_socket(conn, server_side=True) if self.ctx is not None else conn
            with sock:
                if recv_head(sock) is None:
                    return
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(KEY_ANSWER), KEY_ANSWER))
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


@pytest.mark.parametrize("svc", ["control", "derp"])
def test_a_service_does_not_load_ssl_at_start(svc):
    out = _probe(f"""
        import sunbeam.services.{svc}.main
        print(json.dumps({{"ssl": "ssl" in sys.modules, "libssl": "_ssl" in sys.modules, "first": first}}))
    """)
    assert not out["ssl"] and not out["libssl"], _importer(out)


def test_a_key_fetch_over_http_loads_no_ssl():
    # the whole plain-HTTP path: Dialer, send_available, KeyFetch's reads (would_block, is_tls_socket)
    with _KeyServer(None) as port:
        out = _probe(f"""
            import time
            from sunbeam.services.control.keyfetch import KeyFetch
            from sunbeam.shared.runtime import ServiceLoop, Shutdown
            result = {{}}
            with Shutdown() as shutdown, ServiceLoop("probe", shutdown) as loop:
                fetch = KeyFetch(loop, "http://127.0.0.1:{port}", 130, None, connect_timeout=2, timeout=5,
                                 on_key=lambda key: result.update(key=key.hex()),
                                 on_error=lambda exc, answered: result.update(error=repr(exc)))
                fetch.start()
                end = time.monotonic() + 10
                while not result and time.monotonic() < end:
                    loop.run_once(max_wait=0.05)
            print(json.dumps({{"result": result, "ssl": "ssl" in sys.modules, "first": first}}))
        """)
    assert out["result"] == {"key": KEY.hex()}
    assert not out["ssl"], _importer(out)


def test_contexts_are_still_ssl_contexts(tmp_path):
    ctx = tlsctx.client_context(None)
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    files = tlscerts.make(tmp_path)
    assert isinstance(tlsctx.client_context(files.ca), ssl.SSLContext)
    insecure = tlsctx.insecure_context()
    assert isinstance(insecure, ssl.SSLContext) and insecure.verify_mode == ssl.CERT_NONE


def test_the_checks_match_isinstance_once_ssl_is_loaded():
    assert ssl.SSLWantReadError in tlsctx.would_block() and ssl.SSLWantWriteError in tlsctx.would_block()
    assert BlockingIOError in tlsctx.would_block()
    assert tlsctx.would_block(want_write=False) == (BlockingIOError, ssl.SSLWantReadError)
    with socket.socket() as plain:
        assert not tlsctx.is_tls_socket(plain) and not tlsctx.is_tls_socket(None)
        wrapped = ssl.create_default_context().wrap_socket(plain, server_hostname="x", do_handshake_on_connect=False)
        with wrapped:
            assert tlsctx.is_tls_socket(wrapped)
    assert tlsctx.is_cert_error(ssl.SSLCertVerificationError("no"))
    assert not tlsctx.is_cert_error(ssl.SSLError("no")) and not tlsctx.is_cert_error(OSError("no"))
    assert not tlsctx.is_cert_error(None)


def test_the_checks_without_ssl_loaded():
    out = _probe("""
        import socket
        from sunbeam.shared.runtime.tlsctx import is_cert_error, is_tls_socket, would_block
        with socket.socket() as s:
            plain = is_tls_socket(s)
        print(json.dumps({"plain": plain, "cert": is_cert_error(OSError("x")),
                          "block": [c.__name__ for c in would_block()], "ssl": "ssl" in sys.modules, "first": first}))
    """)
    assert out["plain"] is False and out["cert"] is False and out["block"] == ["BlockingIOError"]
    assert not out["ssl"], _importer(out)


# -- the same fetch over TLS: keyfetch's TLS path (the certificate, the TLS socket's reads) --

def _fetch(url: str, tls: ssl.SSLContext | None) -> dict:
    from sunbeam.services.control.keyfetch import KeyFetch

    result: dict = {}
    with Shutdown() as shutdown, ServiceLoop("keyfetchtest", shutdown) as loop:
        fetch = KeyFetch(loop, url, 130, tls, connect_timeout=2, timeout=5,
                         on_key=lambda key: result.update(key=key),
                         on_error=lambda exc, answered: result.update(error=exc, answered=answered))
        fetch.start()
        end = time.monotonic() + 10
        while not result and time.monotonic() < end:
            loop.run_once(max_wait=0.05)
    return result


def test_a_key_fetch_over_tls(tmp_path):
    files = tlscerts.make(tmp_path / "ca")
    with _KeyServer(files) as port:
        result = _fetch(f"https://127.0.0.1:{port}", tlsctx.client_context(files.ca))
    assert result == {"key": KEY}


def test_a_key_fetch_from_an_untrusted_server_is_a_certificate_error(tmp_path):
    files = tlscerts.make(tmp_path / "ca")
    other = tlscerts.make(tmp_path / "other")
    with _KeyServer(files) as port:
        result = _fetch(f"https://127.0.0.1:{port}", tlsctx.client_context(other.ca))
    assert tlsctx.is_cert_error(result["error"]) and result["answered"], result
    assert "not trusted" in tlsctx.untrusted_reason(f"127.0.0.1:{port}", result["error"])
