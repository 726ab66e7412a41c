"""A dns listener needs its UDP and its TCP port: `check_listeners` (what `sunbeam-ctl
connect` runs first) and the real sunbeam-proxy name whichever is taken in one line."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from sunbeam.shared.config import Address, Listener
from sunbeam.shared.runtime.portcheck import check_listeners, open_dns

from .proxyconf import proxy_env


def _dns(port: int, host: str = "127.0.0.1") -> Listener:
    return Listener(kind="dns", listen=Address(host=host, port=port))


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    tcp, udp = open_dns(Address(host="127.0.0.1", port=0))
    port = tcp.getsockname()[1]
    tcp.close()
    udp.close()
    return port


@pytest.fixture()
def udp_taken():
    """A UDP port another program holds (with SO_REUSEADDR, which must not let us share it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", _free_port()))
        yield s.getsockname()[1]


def test_udp_port_in_use_is_named(udp_taken):
    assert check_listeners([_dns(udp_taken)]) == [
        f"listener dns cannot listen on 127.0.0.1:{udp_taken}: address already in use (UDP)"]


def test_tcp_port_in_use_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", _free_port()))
        s.listen()
        port = s.getsockname()[1]
        assert check_listeners([_dns(port)]) == [
            f"listener dns cannot listen on 127.0.0.1:{port}: address already in use"]


def test_free_port_passes_and_both_halves_close():
    port = _free_port()
    assert check_listeners([_dns(port), _dns(0)]) == []
    tcp, udp = open_dns(Address(host="127.0.0.1", port=port))  # the check left nothing open
    assert tcp.getsockname()[1] == udp.getsockname()[1] == port
    assert tcp.type == socket.SOCK_STREAM and udp.type == socket.SOCK_DGRAM
    tcp.close()
    udp.close()


def test_port_zero_gets_one_port_for_both():
    for _ in range(20):
        tcp, udp = open_dns(Address(host="127.0.0.1", port=0))
        assert tcp.getsockname()[1] == udp.getsockname()[1] != 0
        tcp.close()
        udp.close()


def test_proxy_exits_2_when_the_dns_udp_port_is_taken(tmp_path, udp_taken):
    rundir, env = proxy_env(tmp_path, [("dns", f"127.0.0.1:{udp_taken}")])
    started = time.monotonic()
    res = subprocess.run(["sunbeam-proxy"], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 10
    line = f"listener dns cannot listen on 127.0.0.1:{udp_taken}: address already in use (UDP)"
    assert f"sunbeam-proxy: {line}\n" in res.stderr and "Traceback" not in res.stderr
    with socket.socket() as s:  # the TCP half it opened went with it
        s.bind(("127.0.0.1", udp_taken))
