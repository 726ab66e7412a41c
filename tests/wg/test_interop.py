"""Interop with the real WireGuard: Debian's ``wireguard-go`` and ``wg`` in a fresh network
namespace (see ``wgnet.py``), our Device on the other end of a real UDP socket.

Never skipped: without root, wireguard-go or /dev/net/tun these tests fail, because a green
run that skipped the real implementation would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from sunbeam.refnet import netns
from sunbeam.shared.proto.wireguard import Device
from sunbeam.shared.sharding import worker_of_index

from .ippackets import icmp6_echo, icmp_echo, parse_icmp6_echo, parse_icmp_echo
from .wgnet import OUR_ADDR, OUR_ADDR6, THEIR_ADDR, THEIR_ADDR6, Pump, WireGuardGo

WORKER = 7


@pytest.fixture
def wg(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the WireGuard interop tests need root (network namespaces, a TUN device)", pytrace=False)
    device = Device(private_key=os.urandom(32), worker=WORKER, random_bytes=os.urandom)
    real = WireGuardGo(tmp_path, device.public_key)
    try:
        sock = real.start()
        device.set_peer(real.public, [f"{THEIR_ADDR}/32", f"{THEIR_ADDR6}/128"])
        yield real, device, sock
    finally:
        real.stop()
        assert not netns.exists(real.ns)


def _echo_replies(pump: Pump, ident: int) -> set[int]:
    seqs = set()
    for pkt in pump.received:
        parsed = parse_icmp_echo(pkt)
        if parsed and parsed[2] == 0 and parsed[3] == ident and parsed[0] == THEIR_ADDR and parsed[1] == OUR_ADDR:
            seqs.add(parsed[4])
    return seqs


def _handshake_time(real: WireGuardGo) -> int:
    line = real.wg_show("latest-handshakes").strip()
    assert line, "wg shows no peer"
    return int(line.split()[1])


def test_we_initiate_ping_and_bulk_transfer(wg):
    real, device, sock = wg
    pump = Pump(device, sock, real.public)
    # (a) the first packet triggers our handshake initiation; once the session is up the
    # staged echo request goes out and the kernel behind wireguard-go answers it.
    pump.send_packets([icmp_echo(OUR_ADDR, THEIR_ADDR, ident=0x5B, seq=1, payload=b"sunbeam")])
    assert pump.wait_for(lambda: 1 in _echo_replies(pump, 0x5B), 10), (pump.errors, device.counters)
    assert device.counters["handshake_completed"] == 1
    assert device.counters["handshake_initiation_sent"] == 1
    stats = device.peer_stats(real.public)
    assert stats["session"] and stats["last_handshake"] is not None
    # (c) wg on their side saw the handshake
    assert _handshake_time(real) > 0
    # our local indices carry the worker number
    kp = device._peers[real.public].keypairs.current
    assert worker_of_index(kp.local_index) == WORKER
    # (c) 1000 echo requests of mixed sizes, at most 64 in flight: every reply arrives.
    ident, total, sent = 0x77, 1000, 0
    while sent < total:
        while sent < total and sent - len(_echo_replies(pump, ident)) < 64:
            burst = [icmp_echo(OUR_ADDR, THEIR_ADDR, ident, seq, payload=bytes([seq % 256]) * ((seq * 37) % 1300))
                     for seq in range(sent, min(sent + 16, total))]
            pump.send_packets(burst)
            sent += len(burst)
        pump.poll(0.2)
    assert pump.wait_for(lambda: len(_echo_replies(pump, ident)) == total, 10)
    assert _echo_replies(pump, ident) == set(range(total))
    for pkt in pump.received:  # replies come back byte-exact (payload echoed)
        p = parse_icmp_echo(pkt)
        if p and p[3] == ident:
            assert p[5] == bytes([p[4] % 256]) * ((p[4] * 37) % 1300)
    assert "replay" not in device.counters and "decrypt" not in device.counters
    assert device.counters["tx_packets"] >= total + 1 and device.counters["rx_packets"] >= total + 1
    transfer = real.wg_show("transfer").split()
    assert int(transfer[1]) > 0 and int(transfer[2]) > 0  # their rx and tx bytes


def test_they_initiate_ping(wg):
    real, device, sock = wg
    pump = Pump(device, sock, real.public, answer_echo=True)
    pump.start_thread()
    try:
        # (b) the kernel's ping makes wireguard-go initiate; we answer and echo back.
        res = subprocess.run([*netns.exec_prefix(real.ns), "ping", "-c", "3", "-i", "0.2", "-W", "5", OUR_ADDR],
                             check=False, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert " 0% packet loss" in res.stdout
        # and a burst: 200 pings at 5 ms intervals, no loss
        res = subprocess.run([*netns.exec_prefix(real.ns), "ping", "-c", "200", "-i", "0.005", "-q", "-W", "5",
                              "-s", "1000", OUR_ADDR], check=False, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr
    finally:
        pump.stop_thread()
    assert device.counters["handshake_response_sent"] >= 1
    assert "handshake_initiation_sent" not in device.counters  # they initiated, we never had to
    assert _handshake_time(real) > 0
    assert device.peer_stats(real.public)["last_handshake"] is not None


def test_cookie_reply_understood_by_wireguard_go(wg):
    """Under load we answer wireguard-go's initiation with a cookie reply; it stores the
    cookie and its retransmitted initiation carries a valid mac2, which we then accept."""
    real, device, sock = wg
    pump = Pump(device, sock, real.public, answer_echo=True, under_load=True)
    pump.start_thread()
    try:
        res = subprocess.run([*netns.exec_prefix(real.ns), "ping", "-c", "1", "-W", "20", OUR_ADDR],
                             check=False, capture_output=True, text=True, timeout=60)
    finally:
        pump.stop_thread()
    assert res.returncode == 0, res.stdout + res.stderr + str(device.counters)
    assert device.counters["cookie_reply_sent"] >= 1 and device.counters["under_load"] >= 1
    assert device.counters["handshake_response_sent"] == 1
    assert "Receiving cookie response" in real.log_path.read_text()


def test_allowed_ips_source_filter_against_real_kernel(wg):
    """A packet the real peer sends from an address outside its AllowedIPs is dropped."""
    real, device, sock = wg
    device.set_peer(real.public, ["10.99.0.100/32"])  # no longer holds 10.99.0.1
    pump = Pump(device, sock, real.public)
    pump.send_packets([icmp_echo(OUR_ADDR, THEIR_ADDR, ident=9, seq=1)])
    assert pump.wait_for(lambda: device.counters.get("allowed_ips_drop", 0) >= 1, 10), device.counters
    assert not _echo_replies(pump, 9)
    device.set_peer(real.public, [f"{THEIR_ADDR}/32"])  # update keeps the session
    pump.send_packets([icmp_echo(OUR_ADDR, THEIR_ADDR, ident=9, seq=2)])
    assert pump.wait_for(lambda: 2 in _echo_replies(pump, 9), 10)
    assert device.counters["handshake_completed"] == 1


def test_ipv6_echo_and_latest_handshake(wg):
    real, device, sock = wg
    pump = Pump(device, sock, real.public)
    pump.send_packets([icmp6_echo(OUR_ADDR6, THEIR_ADDR6, ident=6, seq=s, payload=bytes(s * 100)) for s in range(1, 6)])

    def replies() -> set[int]:
        got = set()
        for pkt in pump.received:
            p = parse_icmp6_echo(pkt)
            if p and p[2] == 129 and p[0] == THEIR_ADDR6 and p[1] == OUR_ADDR6 and p[5] == bytes(p[4] * 100):
                got.add(p[4])
        return got

    assert pump.wait_for(lambda: replies() == {1, 2, 3, 4, 5}, 10), (pump.errors, device.counters)
    assert abs(_handshake_time(real) - time.time()) < 30
