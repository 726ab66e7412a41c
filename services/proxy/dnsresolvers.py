"""Which resolvers a forwarded name goes to, and the addresses in a reply (sans-IO).

`resolvers_for` picks as tailscaled does: the split-DNS route (``DNSConfig.Routes``) with
the longest suffix of the name, if it has resolvers (an empty route means "answered
here": dnsanswer.py's local zones); else ``DNSConfig.Resolvers``; else
``FallbackResolvers``. Each ``addr`` is ``ip``, ``ip:port`` or ``[v6]:port``; DoH / DoT
URLs are skipped (we speak DNS over TCP only). At most `MAX_SERVERS`, without repeats.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
from sunbeam.shared.proto.tailcfg import DNSConfig, Resolver

__all__ = ["MAX_SERVERS", "addresses", "resolvers_for"]

MAX_SERVERS = 3


def resolvers_for(config: DNSConfig | None, qname: dns.name.Name) -> list[tuple[str, int]]:
    """The resolvers (ip, port) to ask for ``qname``, in order."""
    if config is None:
        return []
    best: list[Resolver] | None = None
    best_len = -1
    for suffix, resolvers in (config.routes or {}).items():
        try:
            zone = dns.name.from_text(suffix.rstrip(".") + ".")
        except dns.exception.DNSException:
            continue
        if resolvers and qname.is_subdomain(zone) and len(zone) > best_len:
            best, best_len = resolvers, len(zone)
    chosen = best or config.resolvers or config.fallback_resolvers or []
    servers = [s for s in map(_parse_addr, (r.addr for r in chosen)) if s is not None]
    return list(dict.fromkeys(servers))[:MAX_SERVERS]


def _parse_addr(addr: str) -> tuple[str, int] | None:
    host, port = addr, 53
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = 53 if not rest else int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else -1
    elif addr.count(":") == 1:
        host, _, text = addr.partition(":")
        port = int(text) if text.isdigit() else -1
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a DoH / DoT URL, or junk
    return (str(ip), port) if 0 < port < 65536 else None


def addresses(msg: dns.message.Message | None) -> list[str]:
    """Every A and AAAA address in ``msg``'s answer section (CNAMEs followed by the server)."""
    out: list[str] = []
    for rrset in msg.answer if msg is not None else ():
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out += [r.address for r in rrset]  # type: ignore[attr-defined]
    return out
