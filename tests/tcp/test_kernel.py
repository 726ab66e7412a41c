"""Our stack against the Linux kernel's TCP, through a TUN device in a fresh namespace
(`kernel.KernelNet`): bulk transfers both ways (clean, and impaired by the harness: 5 %
loss, 10 % of packets held back by 1-5 packets, 1 % duplicated, seeded, both directions),
IPv6, both opening roles, and the RST of a closed port. Throughput is printed, not asserted.

Sizes: 50 MB each way on the clean link and 50 MB each way impaired;
IPv6 5 MB each way on one connection."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest
from sunbeam.shared.proto.ip.wordsums import load_numpy
from sunbeam.shared.proto.tcp import Closed, Reset

from .kernel import (
    KERNEL4,
    KERNEL6,
    OURS4,
    OURS6,
    Driver,
    KernelNet,
    KernelPeer,
    OurEnd,
)
from .link import Impairer, make_stack

load_numpy()  # the bulk paths, as in the proxy once its first bulk batch asked (tcpengine)

MB = 1_000_000


@pytest.fixture(scope="module")
def net():
    n = KernelNet()
    n.start()
    yield n
    n.stop()
    assert not os.path.exists(f"/var/run/netns/{n.ns}")


def _impairers(seed: int) -> dict:
    return {"to_us": Impairer(seed, loss=0.05, dup=0.01, reorder=0.1),
            "to_kernel": Impairer(seed + 1, loss=0.05, dup=0.01, reorder=0.1)}


def _run(net: KernelNet, *, kernel_sends: bytes, we_send: bytes, we_listen: bool, port: int, v6: bool = False,
         impair: dict | None = None, label: str) -> None:
    ours, kern = (OURS6, KERNEL6) if v6 else (OURS4, KERNEL4)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    stack = make_stack(ours, port)
    if we_listen:  # the kernel opens the connection
        stack.listen(port)
        peer = KernelPeer(net.socket(family), kernel_sends, listening=False, connect_to=(ours, port))
        end = OurEnd(stack, we_send)
    else:  # we open it
        lsock = net.socket(family)
        lsock.bind((kern, port))
        lsock.listen(1)
        peer = KernelPeer(lsock, kernel_sends, listening=True)
        end = OurEnd(stack, we_send, stack.connect(ours, (kern, port), time.monotonic()))
    peer.start()
    driver = Driver(stack, net.fd, **(impair or {}))
    t0 = time.monotonic()
    try:
        driver.run(end.done, end.on_events, end.app, timeout=150)
    finally:
        peer.done.wait(30)
    seconds = time.monotonic() - t0
    assert peer.error is None, peer.error
    assert end.reset is None and end.eof
    assert end.received == len(kernel_sends) and peer.received == len(we_send)
    assert end.digest.digest() == hashlib.sha256(kernel_sends).digest()
    assert peer.digest.digest() == hashlib.sha256(we_send).digest()
    total = len(kernel_sends) + len(we_send)
    print(f"\n{label}: {total / MB:.0f} MB in {seconds:.2f} s = {total / MB / seconds:.1f} MB/s "
          f"(packets in {driver.read_packets}, out {driver.written}; {dict(stack.counters)})")


def test_kernel_to_us_50mb_kernel_connects(net):
    _run(net, kernel_sends=os.urandom(50 * MB), we_send=b"", we_listen=True, port=5001,
         label="kernel -> us, clean, kernel-initiated")


def test_us_to_kernel_50mb_we_connect(net):
    _run(net, kernel_sends=b"", we_send=os.urandom(50 * MB), we_listen=False, port=5002,
         label="us -> kernel, clean, we connect")


def test_kernel_to_us_50mb_impaired(net):
    _run(net, kernel_sends=os.urandom(50 * MB), we_send=b"", we_listen=True, port=5003, impair=_impairers(3),
         label="kernel -> us, 5% loss / 10% reorder / 1% dup")


def test_us_to_kernel_50mb_impaired(net):
    _run(net, kernel_sends=b"", we_send=os.urandom(50 * MB), we_listen=False, port=5004, impair=_impairers(4),
         label="us -> kernel, 5% loss / 10% reorder / 1% dup")


def test_ipv6_both_ways(net):
    _run(net, kernel_sends=os.urandom(5 * MB), we_send=os.urandom(5 * MB), we_listen=False, port=5005, v6=True,
         label="IPv6, both ways at once")


def test_ipv6_kernel_connects_impaired(net):
    _run(net, kernel_sends=os.urandom(2 * MB), we_send=os.urandom(2 * MB), we_listen=True, port=5006, v6=True,
         impair=_impairers(6), label="IPv6, kernel-initiated, impaired, both ways")


@pytest.mark.parametrize("v6", [False, True])
def test_connect_to_closed_kernel_port_is_refused(net, v6):
    ours, kern = (OURS6, KERNEL6) if v6 else (OURS4, KERNEL4)
    stack = make_stack(ours, 99)
    cid = stack.connect(ours, (kern, 5999), time.monotonic())
    end = OurEnd(stack, b"", cid)
    Driver(stack, net.fd).run(end.done, end.on_events, end.app, timeout=10)
    assert [e for e in end.events if isinstance(e, (Reset, Closed))] == [Reset(cid, "refused"), Closed(cid)]
