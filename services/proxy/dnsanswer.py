"""The dns listener's answers, sans-IO: one query's bytes + the netmap's names -> what to send.

`answer(wire, zone, udp=...)` returns an `Outcome`: the reply's bytes (or None: stay
silent), the counter to bump, and, for a name to forward, the parsed query (the shell
hands it to dnsforward.py and builds the reply with `relay` once the resolver answered).
All wire work is dnspython's (``dns.message``); nothing here reads a clock or a socket.

What is answered (``zone.names`` is the proxy's `NameTable`, so a name the SOCKS5 proxy
resolves is one the DNS listener answers, and the reverse):

    A / AAAA / ANY for a tailnet name     the node's (or ExtraRecords') addresses   NOERROR, AA
      (short name, MagicDNS FQDN, OS       of that family; none of that family:
      hostname, ExtraRecords)              NODATA (NOERROR, empty), as a real
                                           server does; other types: NODATA
    PTR of a tailnet address              the node's MagicDNS name                  NOERROR, AA
      (in-addr.arpa, nibble ip6.arpa)      (else the ExtraRecords name)
    no such name in a local zone          -                                         NXDOMAIN, AA
      (the base domain, split-DNS routes   (a parent of existing names, e.g. the
      without resolvers - Headscale's      base domain itself, or a partial reverse
      reverse zones -, a tailnet address)  name: NODATA, never NXDOMAIN, RFC 8020)
    any other name                        ``zone.forward``: forwarded (RA set);     REFUSED
                                           else refused
    a class other than IN, a meta type    -                                         REFUSED
      (AXFR, IXFR, ...)

Answers carry `TTL` (60 s, see there), copy the ID, the question (its case too) and RD;
AA for local answers; RA only when forwarding is on. A forwarded answer (`relay`) has the
resolver's rcode, records, AD and CD, never AA (we are not its authority). Over UDP a reply
fits the client's EDNS payload size (at most `EDNS_PAYLOAD`; 512 without EDNS), else it is
truncated (TC).

Malformed queries are counted ``dns_drop_<reason>`` and get no answer, or the error a
real server sends when the header could be read (then the question is copied if single):

    too_big     larger than `MAX_QUERY`                           silent
    short       shorter than a DNS header                         silent
    response    the QR bit is set (never answer one: no loops)    silent
    malformed   header and question unreadable                    silent
    <error>     the rest unreadable, by dnspython's exception: ``bad_edns``,
                ``trailing_junk``, ``bad_label``, ``bad_pointer``, ``bad_tsig``,
                ``form_error`` (any other)                      FORMERR
    tsig        signed with TSIG (we have no keys)                NOTAUTH
    opcode      not a QUERY (NOTIFY, UPDATE, ...)                 NOTIMP
    qdcount     not exactly one question                          FORMERR
    badvers     EDNS version above 0                              BADVERS (RFC 6891)

Answered queries count ``dns_<rcode>`` (``dns_noerror``, ``dns_nxdomain``,
``dns_refused``), forwarded ones ``dns_forward`` and then ``dns_forward_<rcode>``
(``dns_forward_servfail`` when no resolver answered).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.netmap.names import NameTable
from sunbeam.shared.netmap.routes import in_tailnet

__all__ = ["EDNS_PAYLOAD", "MAX_QUERY", "TTL", "Outcome", "Zone", "answer", "relay"]

TTL = 60
"""Seconds a tailnet answer may be cached. tailscale's MagicDNS says 600; we answer on
127.0.0.1, so asking again costs nothing, and a name whose node left the tailnet (or was
re-created with a new address) must not linger for ten minutes in a client's cache."""
EDNS_PAYLOAD = 1232
"""Our UDP payload size (EDNS): the DNS flag day 2020 value, safe from IP fragmentation."""
MAX_QUERY = 4096
"""The largest query (UDP datagram or TCP message) read: one question with EDNS options
is a few hundred bytes."""

IN_ADDR = dns.name.from_text("in-addr.arpa.")
IP6 = dns.name.from_text("ip6.arpa.")
_ADDRESS_TYPES = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}
_REASONS = {"UnknownTSIGKey": "tsig", "BadEDNS": "bad_edns", "TrailingJunk": "trailing_junk",
            "BadLabelType": "bad_label", "BadPointer": "bad_pointer", "BadTSIG": "bad_tsig"}
"""dnspython's exception for a query it cannot read -> ``dns_drop_<reason>``."""


@dataclass(frozen=True, slots=True)
class Zone:
    """What the answerer knows from one netmap (built per netmap, like `NameTable`)."""

    names: NameTable
    local: tuple[dns.name.Name, ...] = ()
    """Zones answered here only: the base domain and split-DNS routes without resolvers."""
    forward: bool = False
    """``dns_forward``: names outside the local zones go to the netmap's resolvers."""

    @classmethod
    def from_netmap(cls, netmap: Netmap, names: NameTable | None = None, *, forward: bool = False) -> Zone:
        names = names if names is not None else NameTable.from_netmap(netmap)
        suffixes = [names.domain or ""]
        routes = netmap.dns.routes if netmap.dns else None
        suffixes += [suffix for suffix, resolvers in (routes or {}).items() if not resolvers]
        local: list[dns.name.Name] = []
        for suffix in suffixes:
            try:
                name = dns.name.from_text(suffix.rstrip(".") + ".") if suffix.strip(".") else None
            except dns.exception.DNSException:
                continue
            if name is not None and name not in local:
                local.append(name)
        return cls(names=names, local=tuple(local), forward=forward)


@dataclass(frozen=True, slots=True)
class Outcome:
    wire: bytes | None
    """The reply to send (None: send nothing)."""
    counter: str
    """What happened: ``dns_noerror``, ``dns_drop_short``, ``dns_forward``, ..."""
    forward: dns.message.Message | None = None
    """The query to forward; reply with `relay` once the forwarder called back."""


def answer(wire: bytes, zone: Zone, *, udp: bool) -> Outcome:
    """The outcome of one query (see the module docstring)."""
    if len(wire) > MAX_QUERY:
        return Outcome(None, "dns_drop_too_big")
    try:
        query = dns.message.from_wire(wire)
    except dns.message.ShortHeader:
        return Outcome(None, "dns_drop_short")
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever dnspython raises is a drop
        return _unreadable(wire, exc, udp)
    if query.flags & dns.flags.QR:
        return Outcome(None, "dns_drop_response")
    if query.opcode() != dns.opcode.QUERY:
        return _error(query, dns.rcode.NOTIMP, "opcode", udp)
    if len(query.question) != 1:
        return _error(query, dns.rcode.FORMERR, "qdcount", udp)
    if query.edns > 0:
        return _error(query, dns.rcode.BADVERS, "badvers", udp)
    q = query.question[0]
    if q.rdclass != dns.rdataclass.IN or (dns.rdatatype.is_metatype(q.rdtype) and q.rdtype != dns.rdatatype.ANY):
        return _reply(query, dns.rcode.REFUSED, zone, udp)
    return _answer_question(query, q.name, q.rdtype, zone, udp)


def relay(query: dns.message.Message, upstream: dns.message.Message | None, *, udp: bool) -> Outcome:
    """The reply to a forwarded ``query`` from the resolver's answer (None: SERVFAIL)."""
    resp = dns.message.make_response(query, recursion_available=True, our_payload=EDNS_PAYLOAD)
    if upstream is None:
        resp.set_rcode(dns.rcode.SERVFAIL)
        return Outcome(_encode(resp, query, udp), "dns_forward_servfail")
    rcode = upstream.rcode()
    if rcode > 15 and resp.edns < 0:  # an extended rcode the client cannot receive
        rcode = dns.rcode.SERVFAIL
    resp.set_rcode(rcode)
    resp.flags |= upstream.flags & (dns.flags.AD | dns.flags.CD)  # not AA: we are not authoritative for it
    resp.answer, resp.authority = list(upstream.answer), list(upstream.authority)
    resp.additional = list(upstream.additional)
    return Outcome(_encode(resp, query, udp), f"dns_forward_{_rcode_name(rcode)}")


# -- local answers -----------------------------------------------------------------------------


def _answer_question(query: dns.message.Message, qname: dns.name.Name, qtype: int, zone: Zone,
                     udp: bool) -> Outcome:
    names = zone.names
    if qname.is_subdomain(IN_ADDR) or qname.is_subdomain(IP6):
        ip = _reverse_address(qname)
        host = names.reverse(ip) if ip is not None else None
        target = _absolute(host) if host is not None else None
        if target is not None:
            rrsets = [dns.rrset.from_rdata_list(qname, TTL, [_ptr(target)])] if qtype in (
                dns.rdatatype.PTR, dns.rdatatype.ANY) else []
            return _reply(query, dns.rcode.NOERROR, zone, udp, rrsets)
        if ip is not None and in_tailnet(ip):
            return _reply(query, dns.rcode.NXDOMAIN, zone, udp, authoritative=True)
        if ip is None and _PARTIAL.fullmatch(qname.to_text()) and _is_local(qname, zone):
            return _reply(query, dns.rcode.NOERROR, zone, udp)  # a partial reverse name: may have children
    elif (text := _text(qname)) is not None:
        if addrs := names.lookup_name(text):
            return _reply(query, dns.rcode.NOERROR, zone, udp, _address_rrsets(qname, qtype, addrs))
        if _is_local(qname, zone) and (names.has_names_under(text) or any(qname == z for z in zone.local)):
            return _reply(query, dns.rcode.NOERROR, zone, udp)  # exists, without records
    if _is_local(qname, zone):
        return _reply(query, dns.rcode.NXDOMAIN, zone, udp, authoritative=True)
    if zone.forward:
        return Outcome(None, "dns_forward", forward=query)
    return _reply(query, dns.rcode.REFUSED, zone, udp)


def _address_rrsets(qname: dns.name.Name, qtype: int, addrs: Iterable[str]) -> list[dns.rrset.RRset]:
    rrsets = []
    for rdtype, version in _ADDRESS_TYPES.items():
        if qtype in (rdtype, dns.rdatatype.ANY):
            texts = [a for a in addrs if ipaddress.ip_address(a).version == version]
            if texts:
                rrsets.append(dns.rrset.from_text_list(qname, TTL, dns.rdataclass.IN, rdtype, texts))
    return rrsets


def _ptr(target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.PTR, target.to_text())


def _is_local(qname: dns.name.Name, zone: Zone) -> bool:
    return any(qname.is_subdomain(z) for z in zone.local)


def _text(qname: dns.name.Name) -> str | None:
    """The name as `NameTable` keys are written (labels joined by dots), or None when a
    label cannot be one (a dot inside a label, bytes that are not UTF-8)."""
    try:
        labels = [label.decode() for label in qname.relativize(dns.name.root).labels]
    except UnicodeDecodeError:
        return None
    return None if any("." in label for label in labels) else ".".join(labels)


_NIBBLES = re.compile(r"([0-9a-f]\.){32}ip6\.arpa\.", re.IGNORECASE)
_OCTETS = re.compile(r"([0-9]{1,3}\.){4}in-addr\.arpa\.", re.IGNORECASE)
_PARTIAL = re.compile(r"((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){0,3}in-addr\.arpa\.|([0-9a-f]\.){0,31}ip6\.arpa\.",
                      re.IGNORECASE)
"""A reverse name above full addresses (``64.100.in-addr.arpa.``): a parent, never NXDOMAIN."""


def _reverse_address(qname: dns.name.Name) -> str | None:
    """The address a full reverse name stands for (None: partial, or not a reverse name)."""
    text = qname.to_text()
    if not (_NIBBLES.fullmatch(text) or _OCTETS.fullmatch(text)):
        return None
    try:
        return str(ipaddress.ip_address(dns.reversename.to_address(qname.canonicalize())))
    except (dns.exception.DNSException, ValueError):
        return None


def _absolute(host: str) -> dns.name.Name | None:
    try:
        return dns.name.from_text(host.rstrip(".") + ".")
    except dns.exception.DNSException:
        return None


# -- replies ------------------------------------------------------------------------------------


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode, zone: Zone, udp: bool,
           answer_rrsets: Iterable[dns.rrset.RRset] = (), *, authoritative: bool | None = None) -> Outcome:
    resp = dns.message.make_response(query, recursion_available=zone.forward, our_payload=EDNS_PAYLOAD)
    resp.set_rcode(rcode)
    if authoritative if authoritative is not None else rcode == dns.rcode.NOERROR:
        resp.flags |= dns.flags.AA
    resp.answer.extend(answer_rrsets)
    return Outcome(_encode(resp, query, udp), f"dns_{_rcode_name(rcode)}")


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode, reason: str, udp: bool) -> Outcome:
    single = len(query.question) == 1
    mode = dns.message.CopyMode.QUESTION if single else dns.message.CopyMode.NOTHING
    resp = dns.message.make_response(query, our_payload=EDNS_PAYLOAD, copy_mode=mode)
    if rcode > 15 and resp.edns < 0:
        resp.use_edns(0, 0, EDNS_PAYLOAD)
    resp.set_rcode(rcode)
    return Outcome(_encode(resp, query, udp), f"dns_drop_{reason}")


def _unreadable(wire: bytes, exc: Exception, udp: bool) -> Outcome:
    """A query dnspython cannot read whole: FORMERR if its header and question can be."""
    reason = _REASONS.get(type(exc).__name__, "form_error")
    try:
        head = dns.message.from_wire(wire, question_only=True, ignore_trailing=True)
    except Exception:  # noqa: BLE001 - as above
        return Outcome(None, "dns_drop_malformed")
    if head.flags & dns.flags.QR:
        return Outcome(None, "dns_drop_response")
    return _error(head, dns.rcode.NOTAUTH if reason == "tsig" else dns.rcode.FORMERR, reason, udp)


def _encode(resp: dns.message.Message, query: dns.message.Message, udp: bool) -> bytes:
    limit = 65535
    if udp:
        limit = max(512, min(query.payload, EDNS_PAYLOAD)) if query.edns >= 0 else 512
    return resp.to_wire(max_size=limit, prefer_truncation=True)


def _rcode_name(rcode: dns.rcode.Rcode) -> str:
    return dns.rcode.to_text(rcode).lower()
