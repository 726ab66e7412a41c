"""Golden packets and an independent Internet checksum for the tests in tests/ip.

The vectors were produced by tailscale v1.98.10's own net/packet code
(tests/ip/upstream/main.go, which test_upstream.py re-runs when Go and the module are
available): ``*_req`` / ``*_ping`` are what ``tailscale ping --icmp`` / ``--tsmp`` builds
(wgengine/userspace.go sendICMPEchoRequest / sendTSMPPing, here with a fixed
identifier 0x1234, sequence 7 and data "hello!", TSMP data 01..08), and ``*_rep`` /
``*_pong`` are tailscaled's answers (ICMP4Header/ICMP6Header.ToResponse,
tstun.Wrapper.injectOutboundPong); ``*_reject`` is the TSMP reject its packet filter sends
for a refused TCP SYN (TailscaleRejectedHeader, reason ACLs) of our flow us:12345 -> peer:443. Peer 100.64.0.9 / fd7a:115c:a1e0::9 pings us at
100.64.0.5 / fd7a:115c:a1e0::5.
"""

from __future__ import annotations

PEER4, OURS4 = "100.64.0.9", "100.64.0.5"
PEER6, OURS6 = "fd7a:115c:a1e0::9", "fd7a:115c:a1e0::5"

UPSTREAM = {k: bytes.fromhex(v) for k, v in {
    "echo4_req": "45000022000000004001b24d64400009644000050800a1d11234000768656c6c6f21",
    "echo4_rep": "45000022ffff00004001b24d64400005644000090000a9d11234000768656c6c6f21",
    "echo6_req": "60000000000e3a40fd7a115ca1e000000000000000000009fd7a115ca1e000000000000000000005"
                 "8000c80b1234000768656c6c6f21",
    "echo6_rep": "600fffff000e3a40fd7a115ca1e000000000000000000005fd7a115ca1e000000000000000000009"
                 "8100c70b1234000768656c6c6f21",
    "tsmp4_ping": "4500001d000000004063b1f06440000964400005700102030405060708",
    "tsmp4_pong": "4500001fffff00004063b1ee64400005644000096f01020304050607080000",
    "tsmp6_ping": "6000000000096340fd7a115ca1e000000000000000000009fd7a115ca1e000000000000000000005"
                  "700102030405060708",
    "tsmp6_pong": "600fffff000b6340fd7a115ca1e000000000000000000005fd7a115ca1e000000000000000000009"
                  "6f01020304050607080000",
    "tsmp4_reject": "4500001b000000004063b1f26440000964400005210641303901bb",
    "tsmp6_reject": "6000000000076340fd7a115ca1e000000000000000000009fd7a115ca1e000000000000000000005"
                    "210641303901bb",
}.items()}


def rfc1071(data: bytes) -> int:
    """RFC 1071 section 4.1, word by word with end-around carry (not our implementation)."""
    total = 0
    for i in range(0, len(data) - 1, 2):
        total += (data[i] << 8) | data[i + 1]
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def v6_pseudo(src: bytes, dst: bytes, length: int, next_header: int) -> bytes:
    """RFC 8200 section 8.1 pseudo-header."""
    return src + dst + length.to_bytes(4, "big") + b"\x00\x00\x00" + bytes([next_header])
