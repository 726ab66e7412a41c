"""The load generator (sunbeam.refnet.loadgen) against the real test service, directly and
through small scripted proxies on 127.0.0.1: what it sends, and how each way a request can
go wrong is counted (refusals, hangs, early closes, wrong bodies, a missing close)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from sunbeam.refnet import loadgen
from sunbeam.refnet.blobs import blob_sha256, iter_blob
from sunbeam.refnet.loadgen import Via, fetch, percentile, run
from sunbeam.refnet.testservice import Handler, HTTPServer


@pytest.fixture(scope="module")
def service():
    Handler.peer_name = "unit-peer"
    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address
    srv.shutdown()
    srv.server_close()


class Scripted:
    """A listener on 127.0.0.1 that runs ``script(conn)`` per connection, each in a thread;
    ``seen`` collects what scripts record."""

    def __init__(self, script: Callable[[socket.socket, Scripted], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.addr = self.sock.getsockname()
        self.script = script
        self.seen: list = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            self.script(conn, self)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def scripted():
    made: list[Scripted] = []

    def make(script):
        made.append(Scripted(script))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = conn.recv(n - len(out))
        if not data:
            raise ConnectionError("closed")
        out += data
    return out


def _recv_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(1)
        if not data:
            raise ConnectionError("closed")
        head += data
    return head


def _relay(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(10)
    a.close()
    b.close()


def socks5_relay(service_addr):
    """A SOCKS5 proxy that records (atyp, host, port) and relays every CONNECT to the service."""

    def script(conn: socket.socket, srv: Scripted) -> None:
        assert _recv_exact(conn, 3) == b"\x05\x01\x00"
        conn.sendall(b"\x05\x00")
        _ver, _cmd, _rsv, atyp = _recv_exact(conn, 4)
        if atyp == 3:
            host = _recv_exact(conn, _recv_exact(conn, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET if atyp == 1 else socket.AF_INET6,
                                    _recv_exact(conn, 4 if atyp == 1 else 16))
        (port,) = struct.unpack("!H", _recv_exact(conn, 2))
        srv.seen.append((atyp, host, port))
        conn.sendall(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
        _relay(conn, socket.create_connection(service_addr))

    return script


def http_relay(service_addr):
    """An HTTP proxy that records each request line; CONNECT -> 200 and a tunnel, an
    absolute-form request -> rewritten to origin-form and relayed."""

    def script(conn: socket.socket, srv: Scripted) -> None:
        head = _recv_head(conn)
        line, rest = head.split(b"\r\n", 1)
        srv.seen.append(line.decode())
        method, target, version = line.split(b" ")
        up = socket.create_connection(service_addr)
        if method == b"CONNECT":
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            path = b"/" + target.split(b"://", 1)[1].split(b"/", 1)[1]
            up.sendall(b" ".join((method, path, version)) + b"\r\n" + rest)
        _relay(conn, up)

    return script


def test_direct_blob_and_whoami(service):
    host, port = service
    o = fetch(Via("direct"), host, port, "/blob/1K?seed=u")
    assert o.ok, o
    assert 0 < o.connect_s <= o.total_s < 5
    assert fetch(Via("direct"), host, port, "/whoami").ok
    assert fetch(Via("direct"), host, port, "/nothing-here").kind == "http_404"


def test_run_counts_and_percentiles(service):
    host, port = service
    s = run(Via("direct"), host, port, count=60, concurrency=6, path="/blob/4K?seed=r")
    assert (s.attempted, s.ok, s.failed) == (60, 60, 0)
    assert len(s.total_s) == 60 and len(s.connect_s) == 60
    f = s.figures()
    assert f["total_p50_ms"] <= f["total_p99_ms"] and f["conns_per_s"] > 0
    assert "60/60 ok, failures: none" in s.line()


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 50) == 50.0 and percentile(data, 99) == 99.0 and percentile(data, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([7.0], 99) == 7.0


def test_socks5_handshake_by_name_and_by_ip(service, scripted):
    proxy = scripted(socks5_relay(service))
    assert fetch(Via("socks5", proxy.addr), "peer-2", 18002, "/blob/1K?seed=n").ok
    assert fetch(Via("socks5", proxy.addr), "100.64.0.2", 18002, "/whoami").ok
    assert fetch(Via("socks5", proxy.addr), "fd7a:115c:a1e0::2", 80, "/whoami").ok
    assert proxy.seen == [(3, "peer-2", 18002), (1, "100.64.0.2", 18002), (4, "fd7a:115c:a1e0::2", 80)]


def test_http_proxy_absolute_form_and_connect(service, scripted):
    proxy = scripted(http_relay(service))
    assert fetch(Via("http", proxy.addr), "peer-2", 18002, "/blob/1K?seed=h").ok
    assert fetch(Via("http-connect", proxy.addr), "100.64.0.2", 18002, "/blob/1K?seed=h").ok
    assert proxy.seen == ["GET http://peer-2:18002/blob/1K?seed=h HTTP/1.1", "CONNECT 100.64.0.2:18002 HTTP/1.1"]


@pytest.mark.parametrize("code", [2, 3, 4, 5, 6])
def test_socks5_refusal_code(scripted, code):
    def script(conn, srv):
        _recv_exact(conn, 3)
        conn.sendall(b"\x05\x00")
        _recv_exact(conn, 4 + 1 + 6 + 2)  # ATYP 3 "peer-2"
        conn.sendall(bytes([5, code, 0, 1]) + bytes(6))
        conn.close()

    o = fetch(Via("socks5", scripted(script).addr), "peer-2", 80)
    assert (o.kind, o.total_s) == (f"socks5_reply_{code}", None)


def test_socks5_no_acceptable_method(scripted):
    def script(conn, srv):
        _recv_exact(conn, 3)
        conn.sendall(b"\x05\xff")
        conn.close()

    assert fetch(Via("socks5", scripted(script).addr), "peer-2", 80).kind == "socks5_method"


@pytest.mark.parametrize("status", [403, 502, 504])
def test_http_proxy_refusals(scripted, status):
    def script(conn, srv):
        _recv_head(conn)
        conn.sendall(f"HTTP/1.1 {status} No\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n".encode())
        conn.close()

    proxy = scripted(script)
    assert fetch(Via("http", proxy.addr), "peer-2", 80).kind == f"http_{status}"
    assert fetch(Via("http-connect", proxy.addr), "peer-2", 80).kind == f"http_{status}"


def _silent(conn, srv):
    srv.seen.append(conn.recv(4096))
    time.sleep(5)


def test_a_hang_is_a_timeout_in_its_phase(scripted):
    hang = scripted(_silent)
    for via, phase in ((Via("socks5", hang.addr), "handshake"), (Via("http-connect", hang.addr), "handshake"),
                       (Via("forward", hang.addr), "response"), (Via("http", hang.addr), "response")):
        t0 = time.monotonic()
        o = fetch(via, "peer-2", 80, timeout=0.4)
        assert o.kind == f"timeout:{phase}", (via, o)
        assert 0.35 < time.monotonic() - t0 < 2


def test_no_close_after_the_response_is_a_timeout(scripted):
    body = b"".join(iter_blob(1024, "e"))

    def script(conn, srv):
        _recv_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + body)
        time.sleep(5)  # never closes

    o = fetch(Via("forward", scripted(script).addr), "peer-2", 80, "/blob/1K?seed=e", timeout=0.5)
    assert o.kind == "timeout:eof" and o.total_s is not None  # the body itself arrived


def test_client_closes_asks_for_keep_alive_and_waits_for_no_close(scripted):
    body = b"".join(iter_blob(1024, "k"))

    def script(conn, srv):
        srv.seen.append(_recv_head(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + body)
        srv.seen.append(conn.recv(10))  # b"": the client closed first
        time.sleep(5)

    srv = scripted(script)
    o = fetch(Via("forward", srv.addr), "peer-2", 80, "/blob/1K?seed=k", timeout=2, client_closes=True)
    assert o.ok and o.elapsed_s < 1, o
    wait = time.monotonic() + 2
    while len(srv.seen) < 2 and time.monotonic() < wait:
        time.sleep(0.01)
    assert b"\r\nConnection: keep-alive\r\n" in srv.seen[0] and srv.seen[1] == b""


def test_client_closes_against_the_service(service):
    s = run(Via("direct"), *service, count=20, concurrency=4, client_closes=True)
    assert (s.ok, s.failed) == (20, 0)


@pytest.mark.parametrize("reply, kind", [
    (b"", "closed:response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + bytes(1024), "bad_body"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + bytes(100), "closed:response"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "bad_response"),
    (b"SSH-2.0-nope\r\n\r\n", "bad_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi and more", "bad_response"),
])
def test_wrong_answers(scripted, reply, kind):
    def script(conn, srv):
        _recv_head(conn)
        conn.sendall(reply)
        conn.close()

    path = "/blob/1K?seed=w" if b"1024" in reply else "/whoami"
    assert fetch(Via("forward", scripted(script).addr), "peer-2", 80, path).kind == kind


def test_a_reset_is_counted_as_one(scripted):
    def script(conn, srv):
        _recv_head(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST

    assert fetch(Via("forward", scripted(script).addr), "peer-2", 80).kind == "reset:response"


def test_nothing_listening_is_refused_at_connect():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert fetch(Via("socks5", ("127.0.0.1", port)), "peer-2", 80).kind == "refused:connect"


def test_stop_after_ends_a_failing_run_early(scripted):
    hang = scripted(_silent)
    t0 = time.monotonic()
    s = run(Via("forward", hang.addr), "peer-2", 80, count=1000, concurrency=4, timeout=0.2, stop_after=8)
    assert s.failures == {"timeout:response": s.attempted} and 8 <= s.attempted <= 8 + 4
    assert s.ok == 0 and s.figures()["total_p50_ms"] is None and len(s.examples) == min(10, s.attempted)
    assert time.monotonic() - t0 < 3


def test_mixed_outcomes_are_tallied(service, scripted):
    """Every third connection is refused by the proxy: the summary says so exactly."""
    relay = socks5_relay(service)
    n = [0]
    lock = threading.Lock()

    def script(conn, srv):
        with lock:
            n[0] += 1
            mine = n[0]
        if mine % 3:
            return relay(conn, srv)
        _recv_exact(conn, 3)
        conn.sendall(b"\x05\x00")
        _recv_exact(conn, 13)
        conn.sendall(b"\x05\x02\x00\x01" + bytes(6))

    s = run(Via("socks5", scripted(script).addr), "peer-2", 18002, count=30, concurrency=3)
    assert (s.ok, dict(s.failures)) == (20, {"socks5_reply_2": 10})
    assert all(kind == "socks5_reply_2" for _, kind, _, _ in s.examples)


def test_via_and_blob_expectations():
    with pytest.raises(ValueError):
        Via("socks5")
    with pytest.raises(ValueError):
        Via("direct", ("127.0.0.1", 1))
    with pytest.raises(ValueError):
        Via("carrier-pigeon", ("127.0.0.1", 1))
    assert loadgen.expected_blob("/blob/2K?seed=q") == (2048, blob_sha256(2048, "q"))
    assert loadgen.expected_blob("/blob/5") == (5, blob_sha256(5, "0"))
    assert loadgen.expected_blob("/whoami") is None
    assert loadgen.socks5_request("a.b", 258) == b"\x05\x01\x00\x03\x03a.b\x01\x02"
