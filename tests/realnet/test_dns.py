"""The dns listener against the real reference network: the real client `dig` asks sunbeam's
proxy, inside the namespace, over UDP and TCP; the answers are compared with what the
tailscaled peers say about themselves (`tailscale status --json`) and with the ExtraRecords
Headscale was configured with (sunbeam.refnet.headscale.EXTRA_RECORDS). Then fuzzed queries,
after which the same listener, in the same process, still answers."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time

import dns.message
import dns.name
import dns.reversename
import pytest
from sunbeam.refnet import netns
from sunbeam.refnet.headscale import BASE_DOMAIN, EXTRA_RECORDS

from .sunbeam_node import SunbeamNode, wait_for

pytestmark = pytest.mark.realnet

PORT = 25353
HOSTNAME = "sunbeam-dns"
TRANSPORTS = ("udp", "tcp")


@pytest.fixture(scope="module")
def node(refnet):
    n = SunbeamNode(refnet, hostname=HOSTNAME, listeners=[{"kind": "dns", "listen": f"127.0.0.1:{PORT}"}])
    n.start_pipeline(workers=1)
    n.wait_state("Running", timeout=30)
    yield n
    n.close()


def _status(peer: dict) -> dict:
    import json

    res = subprocess.run(peer["tailscale_cli"] + ["status", "--json"], check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def truth(refnet, node) -> dict[str, dict]:
    """name -> {"fqdn", "ips"} as tailscaled reports it: each peer about itself, and about us."""
    nodes = {}
    for peer in refnet["peers"][:2]:
        me = _status(peer)["Self"]
        nodes[peer["name"]] = {"fqdn": me["DNSName"], "ips": me["TailscaleIPs"]}

    def sunbeam_seen():
        found = [p for p in _status(refnet["peers"][0])["Peer"].values() if p["HostName"] == HOSTNAME]
        return found[0] if found and found[0].get("TailscaleIPs") else None

    us = wait_for(sunbeam_seen, 30, f"peer-1 sees {HOSTNAME}")
    nodes["us"] = {"fqdn": us["DNSName"], "ips": us["TailscaleIPs"]}
    for entry in nodes.values():
        assert entry["fqdn"].endswith(f".{BASE_DOMAIN}.") and len(entry["ips"]) == 2, nodes
    return nodes


class Dig:
    def __init__(self, text: str) -> None:
        self.text = text
        head = re.search(r"status: (\w+)", text)
        flags = re.search(r";; flags: ([a-z ]*);", text)
        assert head and flags, text
        self.status = head.group(1)
        self.flags = set(flags.group(1).split())
        self.answers = [line.split() for line in text.splitlines() if line and not line.startswith(";")]

    def values(self, rdtype: str) -> set[str]:
        return {a[4] for a in self.answers if a[3] == rdtype}


def dig(refnet, name: str, rdtype: str = "A", transport: str = "udp", *extra: str) -> Dig:
    cmd = refnet["exec_prefix"] + ["dig", "@127.0.0.1", "-p", str(PORT), "+time=3", "+tries=2",
                                   "+noall", "+comments", "+answer", *extra]
    if transport == "tcp":
        cmd.append("+tcp")
    res = subprocess.run(cmd + ["-q", name, "-t", rdtype], check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return Dig(res.stdout)


def v4(ips: list[str]) -> set[str]:
    return {ip for ip in ips if ":" not in ip}


def v6(ips: list[str]) -> set[str]:
    return {ip for ip in ips if ":" in ip}


def test_the_listener_is_logged(node):
    line = next(ln for ln in node.log("proxy").splitlines() if '"listening"' in ln and '"dns"' in ln)
    assert f'"addr":"127.0.0.1:{PORT}"' in line and '"proto":"udp+tcp"' in line, line


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_names_of_the_peers_and_our_own(refnet, node, truth, transport):
    for who, entry in truth.items():
        fqdn = entry["fqdn"]
        short = fqdn.split(".")[0]
        for name in (short, fqdn, fqdn.rstrip(".").upper()):
            a, aaaa = dig(refnet, name, "A", transport), dig(refnet, name, "AAAA", transport)
            assert (a.status, aaaa.status) == ("NOERROR", "NOERROR"), (who, name, a.text, aaaa.text)
            assert a.values("A") == v4(entry["ips"]) and aaaa.values("AAAA") == v6(entry["ips"]), (who, name)
            assert "aa" in a.flags and "ra" not in a.flags
            assert all(int(line[1]) == 60 for line in a.answers + aaaa.answers)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ptr_of_peer_addresses(refnet, node, truth, transport):
    for entry in truth.values():
        for ip in entry["ips"]:
            res = dig(refnet, dns.reversename.from_address(ip).to_text(), "PTR", transport)
            assert res.status == "NOERROR" and res.values("PTR") == {entry["fqdn"]}, res.text
    res = dig(refnet, dns.reversename.from_address("100.64.99.99").to_text(), "PTR", transport)
    assert res.status == "NXDOMAIN" and "aa" in res.flags


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_extra_records_missing_and_outside_names(refnet, node, transport):
    for record in EXTRA_RECORDS:
        res = dig(refnet, record["name"], record["type"], transport)
        assert res.status == "NOERROR" and res.values(record["type"]) == {record["value"]}, res.text
    res = dig(refnet, f"nosuch.{BASE_DOMAIN}", "A", transport)
    assert res.status == "NXDOMAIN" and "aa" in res.flags and not res.answers
    res = dig(refnet, "example.com", "A", transport)  # dns_forward is off
    assert res.status == "REFUSED" and not res.answers and "ra" not in res.flags
    res = dig(refnet, "peer-1", "MX", transport)  # a name without that type: NODATA
    assert res.status == "NOERROR" and not res.answers


def _valid_queries(truth: dict) -> list[bytes]:
    names = [e["fqdn"] for e in truth.values()] + ["peer-1", f"nosuch.{BASE_DOMAIN}", "example.com",
                                                  dns.reversename.from_address(truth["us"]["ips"][0]).to_text()]
    return [dns.message.make_query(n, t, use_edns=e).to_wire()
            for n in names for t in ("A", "AAAA", "PTR", "ANY") for e in (None, 0)]


def _fuzzed(rnd: random.Random, valid: list[bytes]) -> bytes:
    kind = rnd.randrange(4)
    if kind == 0:
        return rnd.randbytes(rnd.randrange(0, 120))
    wire = bytearray(rnd.choice(valid))
    if kind == 1:  # flipped bytes
        for _ in range(rnd.randrange(1, 5)):
            wire[rnd.randrange(len(wire))] = rnd.getrandbits(8)
    elif kind == 2:  # cut short, or junk after
        wire = wire[:rnd.randrange(len(wire))] if rnd.random() < 0.5 else wire + rnd.randbytes(rnd.randrange(1, 30))
    else:  # header fields: flags, counts
        pos = rnd.randrange(2, 12)
        wire[pos] = rnd.getrandbits(8)
    return bytes(wire)


def test_fuzzed_queries_leave_the_listener_answering(refnet, node, truth):
    proxy = node.procs["proxy"]
    before = node.counters("proxy")
    rnd = random.Random(20263)
    valid = _valid_queries(truth)
    replies = 0
    with netns.entered(refnet["netns"]):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcps = [socket.create_connection(("127.0.0.1", PORT), timeout=5) for _ in range(30)]
    udp.setblocking(False)
    try:
        for i in range(10_000):
            udp.sendto(_fuzzed(rnd, valid), ("127.0.0.1", PORT))
            if i % 100 == 99:  # pace the sender a little, and read what came back
                time.sleep(0.01)
                replies += _drain(udp)
        for k, tcp in enumerate(tcps):  # 300 frames over 30 connections
            frames = []
            for _ in range(10):
                body = _fuzzed(rnd, valid)
                size = len(body) if rnd.random() < 0.9 else rnd.choice([0, 4097, 65535])
                frames.append(size.to_bytes(2, "big") + body)
            data = b"".join(frames)
            if k % 5 == 4:
                data = data[:rnd.randrange(len(data))]  # and hang up mid-frame
            try:
                tcp.sendall(data)
            except OSError:
                pass
        time.sleep(1)
        replies += _drain(udp)
    finally:
        udp.close()
        for tcp in tcps:
            tcp.close()
    assert proxy.poll() is None, node.log("proxy")[-3000:]
    after = node.counters("proxy")
    drops = {k: after[k] - before.get(k, 0) for k in after if k.startswith("dns_drop_")}
    assert sum(drops.values()) > 2000, drops
    assert after["dns_udp_queries"] - before.get("dns_udp_queries", 0) > 5000, after
    assert after["dns_tcp_queries"] - before.get("dns_tcp_queries", 0) > 100, after
    assert replies > 1000
    print(f"fuzz: {replies} UDP replies; drops {drops}")
    # the same process still answers, over both transports
    for transport in TRANSPORTS:
        res = dig(refnet, truth["us"]["fqdn"], "A", transport)
        assert res.status == "NOERROR" and res.values("A") == v4(truth["us"]["ips"])
    assert node.procs["proxy"] is proxy and proxy.poll() is None
    assert "Traceback" not in node.log("proxy") and "handler_failed" not in node.log("proxy")


def _drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            wire = sock.recv(65535)
        except BlockingIOError:
            return n
        reply = dns.message.from_wire(wire)  # whatever comes back is a well-formed response
        assert reply.flags & 0x8000
        n += 1
