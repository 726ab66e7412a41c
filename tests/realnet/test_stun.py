"""Our STUN core against Headscale's real embedded STUN server (127.0.0.1:3478 in the netns).

Headscale answers with tailscale's ``stun.Response`` after ``stun.ParseBindingRequest``,
which drops any request whose SOFTWARE is not "tailnode" or that does not end in a valid
FINGERPRINT; so the mapped address must be our own socket's, and a request without
SOFTWARE must go unanswered.
"""

from __future__ import annotations

import os
import socket
import struct
import zlib

import pytest
from sunbeam.refnet import netns
from sunbeam.refnet.headscale import STUN_PORT
from sunbeam.shared.proto.stun import binding_request, is_stun, parse_response

pytestmark = pytest.mark.realnet

SERVER = ("127.0.0.1", STUN_PORT)


@pytest.fixture
def sock(refnet):
    with netns.entered(refnet["netns"]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stays in the namespace
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def request_without_software(txid: bytes) -> bytes:
    """Header (length 8) + FINGERPRINT only: well-formed RFC 5389, but not "tailnode"."""
    head = struct.pack(">HH4s12s", 0x0001, 8, b"\x21\x12\xa4\x42", txid)
    return head + struct.pack(">HHI", 0x8028, 4, zlib.crc32(head) ^ 0x5354554E)


def own(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def exchange(sock: socket.socket, txid: bytes) -> tuple[bytes, str]:
    sock.sendto(binding_request(txid), SERVER)
    data, src = sock.recvfrom(2048)
    assert src == SERVER
    assert is_stun(data), data.hex()
    return parse_response(data)


def test_headscale_reports_our_own_address(sock):
    for _ in range(3):
        txid = os.urandom(12)
        assert exchange(sock, txid) == (txid, own(sock))


def test_several_transactions_in_flight(sock):
    txids = [os.urandom(12) for _ in range(4)]
    for txid in txids:
        sock.sendto(binding_request(txid), SERVER)
    got = {}
    for _ in txids:
        got_txid, addr = parse_response(sock.recvfrom(2048)[0])
        got[got_txid] = addr
    assert got == {t: own(sock) for t in txids}


def test_request_without_software_is_ignored(sock):
    sock.sendto(request_without_software(os.urandom(12)), SERVER)
    sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        data = sock.recvfrom(2048)[0]
        pytest.fail(f"Headscale answered a request without SOFTWARE: {data.hex()}")
    # the server is alive and the same socket is answered once the attribute is there
    sock.settimeout(5)
    txid = os.urandom(12)
    assert exchange(sock, txid) == (txid, own(sock))
