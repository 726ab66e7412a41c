"""`Dialer` on a real `ServiceLoop` with real sockets: connected, refused, a name resolved
off the loop, TLS that verifies and TLS that does not, and a server that takes the
connection and then says nothing: the loop keeps running its other work meanwhile."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from sunbeam.refnet import tlscerts
from sunbeam.shared.runtime import ServiceLoop, Shutdown
from sunbeam.shared.runtime.dial import Dialer
from sunbeam.shared.runtime.tlsctx import client_context


def _dial(host: str, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 2.0,
          run_for: float = 10.0) -> tuple[dict, list[float]]:
    """Run one dial to its end; the result, and when the loop's 50 ms ticker ran meanwhile."""
    result: dict = {}
    ticks: list[float] = []
    with Shutdown() as shutdown, ServiceLoop("dialtest", shutdown) as loop:
        def tick() -> None:
            ticks.append(time.monotonic())
            loop.call_later(0.05, tick)

        dialer = Dialer(loop, host, port, tls=tls, connect_timeout=timeout,
                        on_done=lambda sock: result.update(sock=sock),
                        on_error=lambda reason, answered, cert_error=None: result.update(
                            reason=reason, answered=answered, cert_error=cert_error))
        loop.call_later(0, tick)
        loop.call_later(0, dialer.start)
        end = time.monotonic() + run_for
        while not result and time.monotonic() < end:
            loop.run_once(max_wait=0.05)
    return result, ticks


@pytest.fixture
def listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv


def test_connects_to_a_listening_server(listener):
    result, _ = _dial("127.0.0.1", listener.getsockname()[1])
    sock = result["sock"]
    assert sock.getpeername() == listener.getsockname() and not sock.getblocking()
    sock.close()


def test_a_refused_port_is_the_systems_word_and_not_answered():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result, _ = _dial("127.0.0.1", port)
    assert result == {"reason": "Connection refused", "answered": False, "cert_error": None}


def test_a_name_is_resolved_off_the_loop(listener):
    result, _ = _dial("localhost", listener.getsockname()[1])
    assert result["sock"].getpeername()[1] == listener.getsockname()[1]
    result["sock"].close()


def test_an_unresolvable_name_says_so():
    result, _ = _dial("no-such-host.invalid", 80)
    assert result["reason"].startswith("cannot resolve no-such-host.invalid") and not result["answered"]


def test_a_silent_tls_server_times_out_while_the_loop_runs(listener):
    started = time.monotonic()
    result, ticks = _dial("127.0.0.1", listener.getsockname()[1], tls=client_context(None), timeout=1.0)
    took = time.monotonic() - started
    assert result["reason"] == "TLS with 127.0.0.1:%d timed out" % listener.getsockname()[1]
    assert 1.0 <= took < 3.0
    assert len(ticks) >= 15 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5  # never stalled


def _tls_server(tmp_path, trusted_dir):
    files = tlscerts.make(tmp_path / trusted_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve() -> None:
        conn, _ = srv.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    threading.Thread(target=serve, daemon=True).start()
    return srv, files


def test_tls_that_verifies(tmp_path):
    srv, files = _tls_server(tmp_path, "ca")
    with srv:
        result, _ = _dial("127.0.0.1", srv.getsockname()[1], tls=client_context(files.ca))
    assert isinstance(result["sock"], ssl.SSLSocket) and result["sock"].version()
    result["sock"].close()


def test_tls_from_an_untrusted_ca_is_a_certificate_error_and_answered(tmp_path):
    srv, _files = _tls_server(tmp_path, "ca")
    other = tlscerts.make(tmp_path / "other")
    with srv:
        result, _ = _dial("127.0.0.1", srv.getsockname()[1], tls=client_context(other.ca))
    assert isinstance(result["cert_error"], ssl.SSLCertVerificationError) and result["answered"]
