"""Cryptokey routing: longest-prefix match from an IP address to a peer (whitepaper
section 2; wireguard-go ``device/allowedips.go``, here as one dict per prefix length).

Used both ways: ``lookup(dst)`` picks the peer to encrypt for, and a decrypted packet is
accepted only if ``lookup(its source)`` is the peer it came from. Inserting a prefix that
another peer holds moves it (last writer wins, as in WireGuard). Owned by the Device.

Keys are integers: ``address >> (bits - prefix_len)`` in the table of that length; lengths
are tried longest first, so a lookup costs one dict probe per distinct length in use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from typing import Any


class _Family:
    __slots__ = ("bits", "lengths", "tables")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, Any]] = {}
        self.lengths: list[int] = []  # longest first

    def insert(self, network: int, plen: int, value: Any) -> None:
        table = self.tables.get(plen)
        if table is None:
            table = self.tables[plen] = {}
            self.lengths = sorted(self.tables, reverse=True)
        table[network >> (self.bits - plen)] = value

    def remove_value(self, value: Any) -> None:
        for plen in list(self.tables):
            table = self.tables[plen]
            for key in [k for k, v in table.items() if v is value]:
                del table[key]
            if not table:
                del self.tables[plen]
        self.lengths = sorted(self.tables, reverse=True)

    def lookup(self, addr: int) -> Any:
        bits = self.bits
        tables = self.tables
        for plen in self.lengths:
            v = tables[plen].get(addr >> (bits - plen))
            if v is not None:
                return v
        return None

    def entries(self, value: Any) -> list[str]:
        out = []
        for plen, table in self.tables.items():
            for key, v in table.items():
                if v is value:
                    net = key << (self.bits - plen)
                    addr = ipaddress.IPv4Address(net) if self.bits == 32 else ipaddress.IPv6Address(net)
                    out.append(f"{addr}/{plen}")
        return sorted(out)


class AllowedIPs:
    __slots__ = ("v4", "v6")

    def __init__(self) -> None:
        self.v4 = _Family(32)
        self.v6 = _Family(128)

    def set(self, value: Hashable, cidrs: Iterable[str]) -> None:
        """Replace ``value``'s prefixes with ``cidrs`` (host bits are ignored)."""
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]  # parse all first
        self.remove(value)
        for net in nets:
            fam = self.v4 if net.version == 4 else self.v6
            fam.insert(int(net.network_address), net.prefixlen, value)

    def remove(self, value: Any) -> None:
        self.v4.remove_value(value)
        self.v6.remove_value(value)

    def lookup(self, addr: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
        if isinstance(addr, (bytes, bytearray, memoryview)):
            n = len(addr)
            if n == 4:
                return self.v4.lookup(int.from_bytes(addr, "big"))
            if n == 16:
                return self.v6.lookup(int.from_bytes(addr, "big"))
            raise ValueError("a packed IP address is 4 or 16 bytes")
        ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
        return (self.v4 if ip.version == 4 else self.v6).lookup(int(ip))

    def entries(self, value: Any) -> list[str]:
        return self.v4.entries(value) + self.v6.entries(value)
