"""A local listener that cannot listen: `check_listeners` names it, and the real
sunbeam-proxy exits 2 with that one line (no traceback), so supervisord gives up on it
instead of restarting it for ever."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from sunbeam.shared.config import Address, Listener
from sunbeam.shared.runtime.portcheck import check_listeners, open_listener

from .proxyconf import free_port, proxy_env


def _socks(host: str, port: int) -> Listener:
    return Listener(kind="socks5", listen=Address(host=host, port=port))


@pytest.fixture()
def taken():
    """A port on 127.0.0.1 that another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_in_use_is_named(taken):
    assert check_listeners([_socks("127.0.0.1", taken)]) == [
        f"listener socks5 cannot listen on 127.0.0.1:{taken}: address already in use"]


def test_free_port_passes_and_stays_free():
    port = free_port()
    listeners = [_socks("127.0.0.1", port), Listener(kind="http", listen=Address(host="127.0.0.1", port=0)),
                 Listener(kind="inbound", port=22, target=Address(host="127.0.0.1", port=22))]
    assert check_listeners(listeners) == []
    open_listener(Address(host="127.0.0.1", port=port)).close()  # the check closed its socket


def test_one_line_per_failing_listener(taken):
    listeners = [_socks("127.0.0.1", taken), Listener(kind="http", listen=Address(host="127.0.0.1", port=0)),
                 Listener(kind="forward", listen=Address(host="127.0.0.1", port=taken),
                          target=Address(host="peer", port=80))]
    assert check_listeners(listeners) == [
        f"listener socks5 cannot listen on 127.0.0.1:{taken}: address already in use",
        f"listener forward cannot listen on 127.0.0.1:{taken}: address already in use"]


def test_address_not_on_this_machine():
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a host
    assert check_listeners([_socks("192.0.2.1", 1080)]) == [
        ("listener socks5 cannot listen on 192.0.2.1:1080: address not available "
         "(192.0.2.1 is not an address of this machine)")]


def test_ipv6_address_in_use():
    try:
        held = open_listener(Address(host="::1", port=0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with held:
        port = held.getsockname()[1]
        assert check_listeners([_socks("::1", port)]) == [
            f"listener socks5 cannot listen on [::1]:{port}: address already in use"]


def test_privileged_port():
    """As an unprivileged user (root may bind any port; this test needs root to drop to nobody)."""
    if os.geteuid() != 0:
        pytest.fail("this test drops to uid nobody and needs root", pytrace=False)
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        first_free = int(f.read())
    assert first_free > 1, "this kernel lets anyone bind any port: the case cannot arise here"
    code = ("import os, sys; from sunbeam.shared.runtime.portcheck import check_listeners; "
            "from sunbeam.shared.config.model import Address, Listener; os.setgid(65534); os.setuid(65534); "
            "print(check_listeners([Listener(kind='socks5', listen=Address(host='127.0.0.1', port=1))]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == repr([
        "listener socks5 cannot listen on 127.0.0.1:1: permission denied "
        "(ports below 1024 need root or CAP_NET_BIND_SERVICE)"])


def test_proxy_exits_2_naming_the_listener(tmp_path, taken):
    free = free_port()
    rundir, env = proxy_env(tmp_path, [("http", f"127.0.0.1:{free}"), ("socks5", f"127.0.0.1:{taken}")])
    started = time.monotonic()
    res = subprocess.run(["sunbeam-proxy"], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 10
    line = f"listener socks5 cannot listen on 127.0.0.1:{taken}: address already in use"
    assert f"sunbeam-proxy: {line}\n" in res.stderr
    assert '"event":"listener_unavailable"' in res.stderr and "Traceback" not in res.stderr
    assert not list(rundir.glob("*.sock"))  # its ctl and ipc sockets went with it
    open_listener(Address(host="127.0.0.1", port=free)).close()  # and the listener that did open


class _Refusing:
    """A listening socket whose accept() fails with ``errnos`` in turn, then has nothing."""

    def __init__(self, *errnos: int) -> None:
        self.errnos = list(errnos)

    def accept(self):
        if self.errnos:
            raise OSError(self.errnos.pop(0), "refused by the test")
        raise BlockingIOError


def test_accept_errors_are_counted_never_raised():
    import errno

    from sunbeam.shared.runtime.counters import Counters
    from sunbeam.shared.runtime.portcheck import accept_ready

    counters = Counters()
    assert list(accept_ready(_Refusing(errno.ECONNABORTED, errno.ENOBUFS, errno.EPERM), counters)) == []
    assert list(accept_ready(_Refusing(errno.EPERM), counters)) == []
    assert list(accept_ready(_Refusing(errno.EMFILE), counters)) == []
    snap = counters.snapshot()
    assert (snap["accept_aborted"], snap["accept_error"], snap["accept_fd_exhausted"]) == (1, 2, 1)
