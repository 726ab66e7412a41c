"""The parsers against a real client: curl through SOCKS5 (``--socks5-hostname``,
``--socks5``), an HTTP proxy (absolute-form ``-x``) and HTTP CONNECT (``-p -x``).

A small threaded TCP server on 127.0.0.1 plays the proxy service: per connection it runs
a parser, resolves the destination with `names.resolve` against a test netmap, and
"connects" to a canned upstream, an h11 server that answers each request with JSON
describing what it received (where, request line, headers, body) and closes. No tailnet.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import h11
import pytest
from sunbeam.services.proxy import httpproxy, socks5
from sunbeam.shared.netmap.names import resolve

from .test_names import NETMAP

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


class CannedUpstream:
    """An HTTP/1.1 origin at ``ip``:``port`` that answers one request, then closes."""

    def __init__(self, ip: str, port: int) -> None:
        self.where = f"{ip}:{port}"
        self.conn = h11.Connection(h11.SERVER)
        self.request: h11.Request | None = None
        self.body = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Client bytes in; the whole response out once the request is complete."""
        if not data:  # b"" would mean EOF to h11; the request's framing marks its end
            return b""
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if type(event) is h11.Request:
                self.request = event
            elif type(event) is h11.Data:
                self.body += event.data
            elif type(event) is h11.EndOfMessage:
                self.done = True
                return self._respond()
        return b""

    def _respond(self) -> bytes:
        assert self.request is not None
        seen = {"upstream": self.where, "method": self.request.method.decode(),
                "target": self.request.target.decode(), "body": self.body.decode(),
                "headers": [[k.decode(), v.decode()] for k, v in self.request.headers.raw_items()]}
        body = json.dumps(seen).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
        return b"".join([self.conn.send(h11.Response(status_code=200, headers=headers)),
                         self.conn.send(h11.Data(body)), self.conn.send(h11.EndOfMessage())])


class ProxyServer:
    """Accepts on 127.0.0.1:<port>; one thread per connection; ``kind`` "socks5" or "http"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.errors: list[str] = []
        self.events: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                (self._socks if self.kind == "socks5" else self._http)(conn)
            except Exception as exc:  # noqa: BLE001 -- a test failure: surface it in the test thread
                self.errors.append(repr(exc))

    def _pump(self, conn: socket.socket, parser, first: bytes):
        """Feed the parser until it has a request; returns the request event or None."""
        data = first
        while True:
            for event in parser.receive_data(data):
                self.events.append(event)
                if not isinstance(event, socks5.ProtocolError | httpproxy.ProtocolError):
                    return event
            conn.sendall(parser.data_to_send())
            if not data or parser.state.name == "CLOSED":
                return None
            data = conn.recv(4096)

    def _splice(self, conn: socket.socket, upstream: CannedUpstream, data: bytes) -> None:
        while True:
            if reply := upstream.feed(data):
                conn.sendall(reply)
            if upstream.done or not (data := conn.recv(4096)):
                return

    def _socks(self, conn: socket.socket) -> None:
        parser = socks5.Socks5Server()
        request = self._pump(conn, parser, conn.recv(4096))
        if request is None:
            return
        ip = resolve(NETMAP, request.host)
        if ip is None:
            parser.reply(socks5.Reply.HOST_UNREACHABLE)
            conn.sendall(parser.data_to_send())
            return
        parser.reply(socks5.Reply.SUCCEEDED, (ip, 40000))
        conn.sendall(parser.data_to_send())
        self._splice(conn, CannedUpstream(ip, request.port), parser.leftover())

    def _http(self, conn: socket.socket) -> None:
        parser = httpproxy.HttpProxyServer()
        request = self._pump(conn, parser, conn.recv(4096))
        if request is None:
            return
        ip = resolve(NETMAP, request.host)
        if isinstance(request, httpproxy.ConnectRequest):
            parser.reply_connect(ip is not None, 502)
            conn.sendall(parser.data_to_send())
            if ip is not None:
                self._splice(conn, CannedUpstream(ip, request.port), parser.leftover())
            return
        if ip is None:
            parser.reply_error(502, f"no tailnet address for {request.host}")
            conn.sendall(parser.data_to_send())
            return
        upstream = CannedUpstream(ip, request.port)
        reply = upstream.feed(request.head + parser.body_data())
        while not upstream.done:
            data = conn.recv(4096)
            parser.receive_data(data)
            reply += upstream.feed(parser.body_data())
            if not data:
                break
        conn.sendall(reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def socks_proxy() -> Iterator[ProxyServer]:
    server = ProxyServer("socks5")
    yield server
    server.close()
    assert server.errors == []


@pytest.fixture
def http_proxy() -> Iterator[ProxyServer]:
    server = ProxyServer("http")
    yield server
    server.close()
    assert server.errors == []


def curl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "15", "--noproxy", "", *args],
                          check=False, capture_output=True, input=input, timeout=30, env={"PATH": "/usr/bin:/bin"})


def seen(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def header(seen: dict, name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k.lower() == name.lower()]


def test_socks5_hostname(socks_proxy):
    got = seen(curl("--socks5-hostname", f"127.0.0.1:{socks_proxy.port}", "http://peer-1.tailnet.test:8000/x"))
    assert (got["upstream"], got["method"], got["target"]) == ("100.64.0.1:8000", "GET", "/x")
    assert header(got, "host") == ["peer-1.tailnet.test:8000"]
    assert socks_proxy.events == [socks5.ConnectRequest("peer-1.tailnet.test", 8000, socks5.AddressType.DOMAIN)]


def test_socks5_ipv4_and_ipv6_literals(socks_proxy):
    got = seen(curl("--socks5", f"127.0.0.1:{socks_proxy.port}", "http://100.64.0.2:81/v4"))
    assert (got["upstream"], got["target"]) == ("100.64.0.2:81", "/v4")
    got = seen(curl("--socks5", f"127.0.0.1:{socks_proxy.port}", "http://[fd7a:115c:a1e0::2]:82/v6"))
    assert (got["upstream"], got["target"]) == ("fd7a:115c:a1e0::2:82", "/v6")
    assert [e.atyp for e in socks_proxy.events] == [socks5.AddressType.IPV4, socks5.AddressType.IPV6]


def test_socks5_post_body_and_unknown_host(socks_proxy):
    got = seen(curl("--socks5-hostname", f"127.0.0.1:{socks_proxy.port}", "-d", "a=1&b=2", "http://peer-2:8000/p"))
    assert (got["upstream"], got["method"], got["body"]) == ("100.64.0.2:8000", "POST", "a=1&b=2")
    result = curl("--socks5-hostname", f"127.0.0.1:{socks_proxy.port}", "http://nosuch:8000/")
    assert result.returncode == 97  # CURLE_PROXY
    assert result.stderr.endswith(b"(4)\n")  # the reply code: host unreachable


def test_http_proxy_absolute_form(http_proxy):
    got = seen(curl("-x", f"http://127.0.0.1:{http_proxy.port}", "http://peer-1:8000/x?y=1"))
    assert (got["upstream"], got["method"], got["target"]) == ("100.64.0.1:8000", "GET", "/x?y=1")
    assert header(got, "host") == ["peer-1:8000"] and header(got, "connection") == ["close"]
    assert header(got, "proxy-connection") == []
    [event] = http_proxy.events
    assert (type(event), event.host, event.port) == (httpproxy.ForwardRequest, "peer-1", 8000)


def test_http_proxy_bodies(http_proxy, tmp_path):
    proxy = f"http://127.0.0.1:{http_proxy.port}"
    got = seen(curl("-x", proxy, "--data-binary", "hello world", "http://peer-1.tailnet.test/post"))
    assert (got["upstream"], got["body"], header(got, "content-length")) == ("100.64.0.1:80", "hello world", ["11"])
    big = tmp_path / "big"
    big.write_bytes(b"0123456789abcdef" * 20000)  # 320 KB: many reads, streamed through
    got = seen(curl("-x", proxy, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}",
                    "http://peer-2:8000/up"))
    assert got["body"] == big.read_text() and header(got, "transfer-encoding") == ["chunked"]
    assert header(got, "content-length") == []


def test_http_proxy_keep_alive_gets_a_new_connection_per_request(http_proxy):
    result = curl("-x", f"http://127.0.0.1:{http_proxy.port}", "http://peer-1:8000/a", "http://peer-2:8000/b")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.decode().replace("}{", "}\n{").splitlines()
    assert (json.loads(first)["target"], json.loads(second)["upstream"]) == ("/a", "100.64.0.2:8000")
    assert http_proxy.connections == 2


def test_http_proxy_unknown_host_and_bad_request(http_proxy):
    result = curl("-x", f"http://127.0.0.1:{http_proxy.port}", "-w", "%{http_code}", "http://nosuch:8000/")
    assert result.stdout == b"no tailnet address for nosuch\n502"
    result = curl("-w", "%{http_code}", f"http://127.0.0.1:{http_proxy.port}/not-a-proxy-request")
    assert result.stdout == b"400 Bad Request\n400"


def test_http_connect(http_proxy):
    got = seen(curl("-p", "-x", f"http://127.0.0.1:{http_proxy.port}", "http://peer-1:8000/x"))
    assert (got["upstream"], got["target"]) == ("100.64.0.1:8000", "/x")
    assert header(got, "host") == ["peer-1:8000"]
    assert http_proxy.events == [httpproxy.ConnectRequest("peer-1", 8000)]
    result = curl("-p", "-x", f"http://127.0.0.1:{http_proxy.port}", "http://nosuch:8000/x")
    assert result.returncode == 56 and b"502" in result.stderr  # CURLE_RECV_ERROR: CONNECT refused
