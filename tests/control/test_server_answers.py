"""A control URL that points at something other than a control server: the error is one
line (status, reason phrase, where, a hint, a short excerpt of the body), with no control
character of the server's in it, whatever the server sent.

The answers are real bytes from a real HTTP server (``http.server`` in a thread): its own
404 page, an nginx-style 502, a 200 HTML page, a hostile body with escape sequences.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import (
    BaseHTTPRequestHandler,
    SimpleHTTPRequestHandler,
    ThreadingHTTPServer,
)

import h11
import pytest
from sunbeam.services.control.serverkey import ServerKeyError, Unanswered, fetch_server_key
from sunbeam.shared.proto.httpanswer import (
    MAX_EXCERPT,
    NOT_CONTROL_SERVER,
    describe_answer,
    excerpt,
)
from sunbeam.shared.proto.upgrade import Refused, Upgrade

NGINX_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
             b"</body>\r\n</html>\r\n")
HOSTILE = (b"<html><body>\x1b[31mred\x1b[0m\n\x1b]0;owned\x07title\r\n&#27;[2J &#x9b;1m "
           b"\xe2\x80\xae reversed\xe2\x80\xa8 next" + b" filler" * 100 + b"</body></html>")
MAX_LINE = 250  # status, reason, URL, hint and excerpt together


def _answer(status: int, body: bytes, reason: str | None = None,
            content_type: str = "text/html") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status, reason)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class _Quiet404(SimpleHTTPRequestHandler):
    """``python -m http.server``'s handler: every path under an empty directory is its 404 page."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, directory="/nonexistent-sunbeam-test", **kwargs)  # type: ignore[arg-type]

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(answer: Callable[[socket.socket, bytes], None]) -> Iterator[str]:
    """A TCP server: each connection (in a thread of its own) reads the request, then does
    ``answer(conn, request)`` and closes."""
    lsock = socket.create_server(("127.0.0.1", 0))

    def one(conn: socket.socket) -> None:
        with conn:
            answer(conn, conn.recv(65536))

    def run() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{lsock.getsockname()[1]}"
    finally:
        lsock.close()


def _key_error(url: str) -> ServerKeyError:
    with pytest.raises(ServerKeyError) as err:
        fetch_server_key(url, 130, timeout=5)
    return err.value


def assert_one_line(text: str) -> None:
    assert len(text) <= MAX_LINE, text
    bad = [c for c in text if unicodedata.category(c)[0] in "CZ" and c != " "]
    assert not bad, (bad, text)
    assert "  " not in text and text == text.strip()
    if "(body: '" in text:
        assert len(text.split("(body: '", 1)[1].removesuffix("')")) <= MAX_EXCERPT


def test_python_http_server_404():
    with serving(_Quiet404) as url:
        err = _key_error(url)
    text = str(err)
    assert text.startswith(f"HTTP 404 File not found from {url}/key: {NOT_CONTROL_SERVER} (body: 'Error response "
                           "Error code: 404 Message: File not found."), text
    assert text.endswith("...')")
    assert_one_line(text)
    assert err.permanent


def test_html_page_answering_200():
    page = b"<!doctype html>\n<html><head><title>Welcome</title><style>h1{}</style></head>\n<body><h1>It works!</h1></body></html>\n"
    with serving(_answer(200, page)) as url:
        err = _key_error(url)
    assert str(err) == f"HTTP 200 OK from {url}/key: not JSON; {NOT_CONTROL_SERVER} (body: 'It works!')"
    assert not err.permanent


def test_json_that_is_not_a_key_answer():
    with serving(_answer(200, b'{"status": "ok"}', content_type="application/json")) as url:
        err = _key_error(url)
    assert str(err) == f"HTTP 200 OK from {url}/key: no publicKey; {NOT_CONTROL_SERVER} (body: '{{\"status\": \"ok\"}}')"
    assert not err.permanent


def test_reverse_proxy_502():
    with serving(_answer(502, NGINX_502)) as url:
        err = _key_error(url)
    assert str(err) == f"HTTP 502 Bad Gateway from {url}/key (body: '502 Bad Gateway nginx/1.24.0')"
    assert not err.permanent  # the server behind it may come back


def test_capability_version_refused_stays_permanent():
    with serving(_answer(400, b"unsupported client version\n", content_type="text/plain")) as url:
        err = _key_error(url)
    assert str(err) == (f"HTTP 400 Bad Request from {url}/key: the server refuses capability version 130 "
                        "(body: 'unsupported client version')")
    assert err.permanent


def test_hostile_answer_has_no_control_characters():
    with serving(_answer(500, HOSTILE, reason="Oops\x1b[5m\x9b7m")) as url:
        err = _key_error(url)
    text = str(err)
    assert_one_line(text)
    # ESC, BEL, CR/LF, C1 CSI (\x9b), U+202E and U+2028 are gone; "&#x9b;" is "›" to HTML
    assert text.startswith(f"HTTP 500 Oops [5m 7m from {url}/key (body: '[31mred [0m ]0;owned title [2J ›1m "
                           "reversed next filler")
    assert not err.permanent


def test_plain_text_keeps_its_angle_brackets():
    with serving(_answer(404, b"404 page not found: <nil>\n", content_type="text/plain")) as url:
        err = _key_error(url)
    assert str(err) == f"HTTP 404 Not Found from {url}/key: {NOT_CONTROL_SERVER} (body: '404 page not found: <nil>')"


def test_connection_closed_without_answer_is_no_answer():
    with raw_server(lambda conn, request: None) as url, pytest.raises(OSError) as err:
        fetch_server_key(url, 130, timeout=5)
    assert isinstance(err.value, Unanswered)  # the client retries it as unreachable


def test_not_http_at_all():
    with raw_server(lambda conn, request: conn.sendall(b"SSH-2.0-OpenSSH_9.6\x1b[31m\r\n")) as url:
        err = _key_error(url)
    assert str(err) == f"malformed HTTP answer from {url}/key: {NOT_CONTROL_SERVER} (it said: 'SSH-2.0-OpenSSH_9.6 [31m')"
    assert_one_line(str(err))


def test_user_and_password_in_the_url_are_not_shown():
    with serving(_Quiet404) as url:
        err = _key_error(url.replace("//", "//user:secret@"))
    assert "secret" not in str(err) and f"from {url}/key:" in str(err)


# -- upgrade refusals (TS2021 and DERP share `Upgrade`) ----------------------------------


def _upgrade_answer(url: str) -> Refused:
    up = Upgrade(h11.Request(method="POST", target="/ts2021", headers=[
        ("Host", "x"), ("Upgrade", "tailscale-control-protocol"), ("Connection", "upgrade"), ("Content-Length", "0")]))
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(up.bytes_to_send())
        while True:
            data = sock.recv(1)  # one byte at a time: the answer may end anywhere
            answer = up.receive(data)
            if answer is not None:
                assert isinstance(answer, Refused)
                return answer


def test_upgrade_refused_by_a_reverse_proxy():
    with serving(_answer(502, NGINX_502)) as url:
        refused = _upgrade_answer(url)
    assert refused.status == 502 and refused.reason == "Bad Gateway"
    assert refused.describe("TS2021 upgrade") == (
        "server refused the TS2021 upgrade: HTTP 502 Bad Gateway (body: '502 Bad Gateway nginx/1.24.0')")


def test_upgrade_refused_with_a_hostile_body():
    with serving(_answer(403, HOSTILE, reason="No\x1b[31m")) as url:
        refused = _upgrade_answer(url)
    text = refused.describe("DERP upgrade")
    assert text.startswith("server refused the DERP upgrade: HTTP 403 No [31m (body: '[31mred [0m")
    assert_one_line(text)


# -- the helper alone --------------------------------------------------------------------


def test_excerpt_bounds_and_cuts_at_a_word():
    text = excerpt(b"word " * 100)
    assert len(text) <= MAX_EXCERPT and text.endswith("word...")
    assert excerpt(b"x" * 500) == "x" * (MAX_EXCERPT - 3) + "..."
    assert excerpt(b"\xff\xfe bad utf-8") == "\ufffd\ufffd bad utf-8"
    assert excerpt(b"") == ""


def test_describe_answer_without_a_reason_or_a_body():
    assert describe_answer(503) == "HTTP 503 Service Unavailable"
    assert describe_answer(599, b"", b"  \r\n ") == "HTTP 599"


# -- the control service, as `sunbeam-ctl status` shows it --------------------------------


def test_control_status_reason_is_one_line(tmp_path):
    with serving(_answer(500, HOSTILE, reason="Oops\x1b[5m")) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        env.update(SUNBEAM_RUNTIME_DIR=str(tmp_path / "run"), SUNBEAM_STATE_DIR=str(tmp_path / "state"),
                   SUNBEAM_CONTROL_URL=url, SUNBEAM_AUTH_KEY="hskey-auth-secret", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
        proc = subprocess.Popen(["sunbeam-control"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline, control = time.monotonic() + 15, {}
            while time.monotonic() < deadline and control.get("state") != "Reconnecting":
                res = subprocess.run(["sunbeam-ctl", "status", "--json"], check=False, env=env,
                                     capture_output=True, text=True, timeout=30)
                control = (json.loads(res.stdout) if res.stdout.strip() else {}).get("control") or {}
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert control.get("state") == "Reconnecting", control
    assert control["reason"].startswith(f"HTTP 500 Oops [5m from {url}/key (body: '[31mred [0m")
    assert_one_line(control["reason"])
