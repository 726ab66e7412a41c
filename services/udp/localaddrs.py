"""This host's interface addresses, the "local" half of the endpoints we advertise.

IPv4 from the SIOCGIFCONF ioctl (an array of ``struct ifreq``: 16-byte name, then a
``sockaddr_in`` whose bytes 4..8 are the address; 40 bytes per entry on 64-bit Linux);
IPv6 from ``/proc/net/if_inet6`` (hex address, ifindex, prefix length, scope, flags,
name per line). Loopback, link-local, unspecified and the tailnet's own ranges
(100.64.0.0/10, fd7a:115c:a1e0::/48) are left out, as tailscaled's interfaces package
does, since no peer can reach us there... except loopback when nothing else exists (a
test namespace whose peers share our loopback): `endpoints` then falls back to it.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

SIOCGIFCONF = 0x8912
IFREQ_SIZE = 40
MAX_INTERFACES = 256
TAILNET = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))


def ipv4_addresses() -> list[ipaddress.IPv4Address]:
    buf = array.array("B", bytes(IFREQ_SIZE * MAX_INTERFACES))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        addr, _ = buf.buffer_info()
        ifconf = struct.pack("iL", len(buf), addr)
        length = struct.unpack("iL", fcntl.ioctl(s.fileno(), SIOCGIFCONF, ifconf))[0]
    raw = buf.tobytes()[:length]
    return [ipaddress.IPv4Address(raw[i + 20:i + 24]) for i in range(0, len(raw), IFREQ_SIZE)]


def ipv6_addresses(path: str = "/proc/net/if_inet6") -> list[ipaddress.IPv6Address]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and len(fields[0]) == 32:
            out.append(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return out


def usable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast
                or any(addr in net for net in TAILNET))


def endpoints(port: int, *, ipv6: bool = True) -> list[str]:
    """``ip:port`` for each usable local address (loopback only when there is nothing else)."""
    v4 = ipv4_addresses()
    v6 = ipv6_addresses() if ipv6 else []
    good: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    good.extend(a for a in v4 if usable(a))
    good.extend(a for a in v6 if usable(a))
    if not good:
        good.extend([a for a in v4 if a.is_loopback][:1])
    return [f"{a}:{port}" if a.version == 4 else f"[{a}]:{port}" for a in dict.fromkeys(good)]
