"""What of disco (`sunbeam.shared.proto.disco`) a process needs without opening boxes:
the header (``magic 6 | sender disco key 32 | nonce 24``, see disco.py), `looks_like_disco`,
`sender_key`, and the text forms of addresses used on the data-plane sockets.

Separate so that the WireGuard workers, which only tell disco from WireGuard on their
direct sockets and parse addresses, do not load PyNaCl (~0.5 MB per process).
"""

from __future__ import annotations

import ipaddress

__all__ = ["HEADER_LEN", "KEY_LEN", "MAGIC", "NONCE_LEN", "format_addr_port", "looks_like_disco",
           "parse_addr_port", "sender_key"]

MAGIC = "TS💬".encode()
KEY_LEN = 32
NONCE_LEN = 24
HEADER_LEN = len(MAGIC) + KEY_LEN + NONCE_LEN  # 62


def looks_like_disco(pkt: bytes) -> bool:
    """True if ``pkt`` starts with the magic and is long enough for the header
    (upstream LooksLikeDiscoWrapper); a WireGuard message never does."""
    return len(pkt) >= HEADER_LEN and pkt[:len(MAGIC)] == MAGIC


def sender_key(pkt: bytes) -> bytes:
    """The sender's disco public key of a packet that `looks_like_disco`."""
    return bytes(pkt[len(MAGIC):len(MAGIC) + KEY_LEN])


def parse_addr_port(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``"1.2.3.4:5"`` or ``"[v6]:5"`` (a ``%zone`` is kept) -> (address, port);
    ValueError if malformed."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {text!r}")
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {text!r}")
        addr = ipaddress.IPv4Address(host)
    if not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"bad port in {text!r}")
    return addr, int(port)


def format_addr_port(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """The text form; v4-mapped IPv6 is shown as IPv4 (Go's ``Unmap``)."""
    if addr.version == 6:
        mapped = addr.ipv4_mapped  # type: ignore[union-attr]
        if mapped is None:
            return f"[{addr}]:{port}"
        addr = mapped
    return f"{addr}:{port}"
