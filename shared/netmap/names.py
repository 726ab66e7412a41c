"""Names an application gives the proxy -> a tailnet IP, from the netmap (sans-IO).

What an app may name (the host of a SOCKS5 request, of an HTTP proxy request, or of a
port-forward target), tried in this order; text is case-insensitive and a trailing dot
is ignored:

1. an IP literal (``100.64.0.2``, ``fd7a:115c:a1e0::2``, ``[fd7a:115c:a1e0::2]``): returned
   as is (normalised); whether it routes anywhere is AllowedIPs routing's business;
2. a node's MagicDNS FQDN, ``Node.Name`` (``peer-1.tailnet.test.``);
3. a name of ``DNSConfig.ExtraRecords`` (A / AAAA records control adds to MagicDNS);
4. a short name (no dot left): the host itself, or the host with one search suffix removed
   (``peer-1.tailnet.test`` -> ``peer-1`` when the MagicDNS suffix or one of
   ``DNSConfig.Domains`` is ``tailnet.test``), matched first against the first label of
   each node's Name (what MagicDNS answers, as tailscaled's resolver does), then against
   each node's ``Hostinfo.Hostname`` (the OS hostname, case-insensitive). A dotted OS
   hostname never matches: a peer picks its own, and ``www.example.com`` must not make
   it the answer for that internet name.

Nodes are our own node first, then the peers by id; on a tie (two OS hostnames alike)
the first wins. Names are unique in a tailnet, so ties only arise among OS hostnames.

A node answers with one of its own addresses (``Addresses``, not routed subnets):
the first of the preferred family (``family_pref`` 4 or 6), else the first of the other.

For the proxy's dns listener (services/proxy/dnsanswer.py) the table also answers `lookup_name` (names only, no
IP literals), `reverse` (a tailnet address -> the node's MagicDNS name, else the first
ExtraRecords name of it), `has_names_under` (an empty non-terminal: a name that exists
only as the parent of others, e.g. the base domain) and `domain` (the MagicDNS suffix: our
node's name without its first label, as tailscaled's ``MagicDNSSuffix`` finds it; not
``MapResponse.Domain``, which names the tailnet - Headscale sends its server's host name).

Ownership: the proxy's loop thread builds a `NameTable` per netmap (like its `RouteTable`),
and `sunbeam-ctl` (ip, whois, ping) one per command, so a name means the same to both;
`resolve` is the one-shot form.

`parse_target` splits a ``host:port`` (``peer-a:80``, ``[fd7a::1]:22``) from the
port-forward config and the HTTP CONNECT authority; `is_valid_host` is the host syntax
every parser accepts (DNS-ish names and IP literals, nothing else).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from . import Netmap

__all__ = ["NameTable", "is_valid_host", "parse_target", "resolve"]

# Letters, digits, '-', '_' (seen in real hostnames) and dots; at most 253 characters.
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_NAME = 253


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_valid_host(text: str) -> bool:
    """A DNS-ish name (``[A-Za-z0-9_-]`` labels, dots, <= 253 chars) or an IP literal."""
    if _ip(text) is not None:
        return "%" not in text  # no IPv6 zone: meaningless in a tailnet
    return len(text) <= _MAX_NAME + 1 and _NAME.fullmatch(text) is not None


def parse_target(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; IPv6 literals in brackets (returned without).

    The host is lowercased; the port is 1..65535, and may be left out only when
    ``default_port`` is given. Raises ValueError on anything else (e.g. an unbracketed
    IPv6 address, which is ambiguous).
    """
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or not isinstance(_ip(f"[{host}]"), ipaddress.IPv6Address) or "%" in host:
            raise ValueError(f"bad IPv6 literal in {text[:80]!r}")
        host = str(ipaddress.IPv6Address(host))
    else:
        host, colon, port = text.partition(":")
        rest = colon + port
        if not host or not is_valid_host(host):
            raise ValueError(f"bad host in {text[:80]!r}")
        host = host.lower()
    if not rest:
        if default_port is None:
            raise ValueError(f"no port in {text[:80]!r}")
        return host, default_port
    port = rest[1:]
    if rest[0] != ":" or not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
        raise ValueError(f"bad port in {text[:80]!r}")
    return host, int(port)


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


class NameTable:
    """Name -> addresses maps built from one netmap; see the module docstring."""

    def __init__(self) -> None:
        self._fqdn: dict[str, tuple[str, ...]] = {}
        self._extra: dict[str, list[str]] = {}
        self._label: dict[str, tuple[str, ...]] = {}
        self._hostname: dict[str, tuple[str, ...]] = {}
        self._suffixes: list[str] = []
        self._reverse: dict[str, str] = {}
        self._parents: set[str] = set()
        self.domain: str | None = None
        """The tailnet's MagicDNS suffix (``tailnet.test``), if our node has a name yet."""

    @classmethod
    def from_netmap(cls, netmap: Netmap) -> NameTable:
        table = cls()
        nodes = ([netmap.self_node] if netmap.self_node else []) + list(netmap.peers)
        for node in nodes:
            addrs = tuple(str(ipaddress.ip_interface(a).ip) for a in node.addresses)
            if not addrs:
                continue
            if fqdn := _norm(node.name):
                table._fqdn.setdefault(fqdn, addrs)
                table._label.setdefault(fqdn.split(".", 1)[0], addrs)
                for addr in addrs:
                    table._reverse.setdefault(addr, fqdn)
            if node.hostname and (hostname := _norm(node.hostname)):
                table._hostname.setdefault(hostname, addrs)
        dns = netmap.dns
        for record in (dns.extra_records if dns else None) or ():
            ip = _ip(record.value)
            want = {"A": 4, "AAAA": 6}.get(record.type.upper(), ip.version if ip else 0)
            if ip is not None and ip.version == want and (name := _norm(record.name)):
                table._extra.setdefault(name, []).append(str(ip))
                table._reverse.setdefault(str(ip), name)
        for name in [*table._fqdn, *table._extra]:
            labels = name.split(".")
            table._parents.update(".".join(labels[i:]) for i in range(1, len(labels)))
        me = _norm(netmap.self_node.name) if netmap.self_node else ""
        table.domain = me.partition(".")[2] or None
        # not MapResponse.Domain: it names the tailnet (Headscale sends its server's host name)
        suffixes = [table.domain or "", *((dns.domains if dns else None) or ())]
        for suffix in map(_norm, suffixes):
            if suffix and suffix not in table._suffixes:
                table._suffixes.append(suffix)
        return table

    def lookup(self, host: str) -> tuple[str, ...]:
        """All addresses ``host`` names, in the node's order; () when unknown."""
        if (ip := _ip(host)) is not None:
            return (str(ip),)
        return self.lookup_name(host)

    def lookup_name(self, host: str) -> tuple[str, ...]:
        """As `lookup`, for names only: an IP literal is no name (``()``)."""
        name = _norm(host)
        if not name:
            return ()
        if hit := self._fqdn.get(name) or self._extra.get(name):
            return tuple(hit)
        shorts = [name] + [name[: -len(s) - 1] for s in self._suffixes if name.endswith("." + s)]
        for short in (s for s in shorts if "." not in s):  # a peer chooses its OS hostname: never
            if hit := self._label.get(short) or self._hostname.get(short):  # let it claim a dotted name
                return hit
        for short in (s for s in shorts if "." not in s):  # a short name of an extra record
            for suffix in self._suffixes:
                if hit := self._extra.get(f"{short}.{suffix}"):
                    return tuple(hit)
        return ()

    def reverse(self, ip: str) -> str | None:
        """The name of tailnet address ``ip`` (normalised, no trailing dot): the MagicDNS name
        of the node that has it (our node first, then peers by id), else the first
        ExtraRecords name with that value; None when nothing has it."""
        addr = _ip(ip)
        return self._reverse.get(str(addr)) if addr is not None else None

    def has_names_under(self, name: str) -> bool:
        """Whether some MagicDNS or ExtraRecords name lies strictly below ``name``."""
        return _norm(name) in self._parents

    def resolve(self, host: str, family_pref: int = 4) -> str | None:
        """One address for ``host`` (the preferred family first), or None when unknown."""
        if family_pref not in (4, 6):
            raise ValueError(f"family_pref must be 4 or 6, not {family_pref!r}")
        return _pick(self.lookup(host), family_pref)


def _pick(addrs: Iterable[str], family_pref: int) -> str | None:
    addrs = list(addrs)
    for want in (family_pref, 10 - family_pref):
        for a in addrs:
            if ipaddress.ip_address(a).version == want:
                return a
    return None


def resolve(netmap: Netmap, host: str, family_pref: int = 4) -> str | None:
    """One-shot `NameTable.resolve` (builds the table; keep a table per netmap instead
    when resolving often)."""
    return NameTable.from_netmap(netmap).resolve(host, family_pref)
