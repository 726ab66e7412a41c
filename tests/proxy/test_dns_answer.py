"""The dns listener's answerer (services/proxy/dnsanswer.py), sans-IO: golden queries built
by dnspython against a netmap built here, every reply parsed back by dnspython."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import dns.tsigkeyring
import dns.update
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sunbeam.services.proxy.dnsanswer import (
    EDNS_PAYLOAD,
    MAX_QUERY,
    TTL,
    Zone,
    answer,
    relay,
)
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.proto.tailcfg import DNSConfig, DNSRecord, Resolver

from .test_names import NETMAP

# as Headscale sends it: the base domain and its reverse zones routed "here" (empty lists)
DNS = DNSConfig(domains=["tailnet.test", "corp.example"],
                routes={"64.100.in-addr.arpa.": [], "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.": [],
                        "split.example": [Resolver(addr="10.0.0.53")]},
                resolvers=[Resolver(addr="203.0.113.53")],
                extra_records=[*NETMAP.dns.extra_records,
                               DNSRecord(name="grafana.example.org", type="A", value="100.64.0.60"),
                               DNSRecord(name="x.sub.tailnet.test", type="A", value="100.64.0.61")])
MAP = Netmap(self_node=NETMAP.self_node, peers=NETMAP.peers, domain="tailnet.test", dns=DNS)
ZONE = Zone.from_netmap(MAP)
FORWARDING = Zone.from_netmap(MAP, forward=True)


def ask(name, rdtype="A", zone=ZONE, *, udp=True, **kw) -> tuple[dns.message.Message, dns.message.Message, str]:
    query = dns.message.make_query(name, rdtype, **kw)
    out = answer(query.to_wire(), zone, udp=udp)
    assert out.wire is not None and out.forward is None, out
    reply = dns.message.from_wire(out.wire)
    assert query.is_response(reply)
    return query, reply, out.counter


def values(reply: dns.message.Message) -> set[str]:
    return {r.to_text() for rrset in reply.answer for r in rrset}


@pytest.mark.parametrize(("name", "rdtype", "want"), [
    ("peer-1", "A", {"100.64.0.1"}),                        # short name
    ("peer-1", "AAAA", {"fd7a:115c:a1e0::1"}),
    ("peer-1.tailnet.test.", "A", {"100.64.0.1"}),          # MagicDNS FQDN
    ("peer-1.tailnet.test", "AAAA", {"fd7a:115c:a1e0::1"}),  # no trailing dot: the same
    ("PeEr-1.TAILNET.test", "A", {"100.64.0.1"}),            # case-insensitive
    ("peer-1.corp.example", "A", {"100.64.0.1"}),           # another search domain
    ("peer-2", "A", {"100.64.0.2"}),                        # v6 listed first: A is still v4
    ("peer-2", "AAAA", {"fd7a:115c:a1e0::2"}),
    ("peer-2", "ANY", {"100.64.0.2", "fd7a:115c:a1e0::2"}),
    ("peer-1-1", "A", {"100.64.0.5"}),
    ("my-laptop", "A", {"100.64.0.9"}),                     # our own node, by OS hostname
    ("me.tailnet.test", "AAAA", {"fd7a:115c:a1e0::9"}),     # and by name
    (r"build\032box", "A", {"100.64.0.2"}),                 # an OS hostname with a space
    ("v6only", "AAAA", {"fd7a:115c:a1e0::4"}),
    ("db.tailnet.test", "A", {"100.64.0.50"}),              # ExtraRecords
    ("db", "AAAA", {"fd7a:115c:a1e0::50"}),
    ("grafana.example.org", "A", {"100.64.0.60"}),          # ExtraRecords outside the domain
    ("x.sub.tailnet.test", "A", {"100.64.0.61"}),
])
def test_tailnet_names_answer_their_addresses(name, rdtype, want):
    query, reply, counter = ask(name, rdtype)
    assert reply.rcode() == dns.rcode.NOERROR and counter == "dns_noerror"
    assert values(reply) == want
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert reply.question == query.question
    for rrset in reply.answer:
        assert rrset.ttl == TTL
        assert rrset.name.to_text() == query.question[0].name.to_text()  # the case asked


def test_the_question_is_copied_as_asked():
    _, reply, _ = ask("PEER-1.Tailnet.Test.", "A", id=4321)
    assert reply.id == 4321
    assert reply.question[0].name.to_text() == "PEER-1.Tailnet.Test."  # its case too (0x20)
    assert reply.answer[0].name.to_text() == "PEER-1.Tailnet.Test."
    assert reply.flags & dns.flags.RD  # copied
    _, reply, _ = ask("peer-1", "A", flags=0)
    assert not reply.flags & dns.flags.RD


@pytest.mark.parametrize(("name", "rdtype"), [
    ("v6only", "A"),              # exists, no address of that family
    ("peer-1", "MX"),             # exists, other types
    ("peer-1", "TXT"),
    ("db", "PTR"),
    ("tailnet.test", "A"),        # the base domain: parent of every name
    ("sub.tailnet.test", "A"),    # a parent of an ExtraRecords name only
    ("1.0.64.100.in-addr.arpa", "A"),
])
def test_existing_name_without_that_type_is_nodata(name, rdtype):
    _, reply, counter = ask(name, rdtype)
    assert (reply.rcode(), reply.answer, counter) == (dns.rcode.NOERROR, [], "dns_noerror")
    assert reply.flags & dns.flags.AA


@pytest.mark.parametrize("name", ["nosuch.tailnet.test", "deep.nosuch.tailnet.test", "noaddr.tailnet.test",
                                  "peer-1.tailnet.test.tailnet.test", "bad.tailnet.test", "junk.tailnet.test"])
def test_missing_names_in_the_domain_are_nxdomain(name):
    for zone in (ZONE, FORWARDING):  # never forwarded
        _, reply, counter = ask(name, "A", zone)
        assert (reply.rcode(), counter) == (dns.rcode.NXDOMAIN, "dns_nxdomain")
        assert reply.flags & dns.flags.AA and not reply.answer


@pytest.mark.parametrize(("name", "rdtype"), [
    ("example.com", "A"), ("nosuch", "A"), ("peer-1.other.test", "A"), ("100.64.0.1", "A"), (".", "NS"),
    ("nosuch.corp.example", "A"), ("8.8.8.8.in-addr.arpa", "PTR"), ("1.1.1.1.ip6.arpa", "PTR"),
    ("www.split.example", "AAAA"),
    # parents of ExtraRecords names outside the local zones are not ours to answer
    ("example.org", "A"), ("org", "DS"), ("test", "NS"),
])
def test_other_names_are_refused_or_forwarded(name, rdtype):
    _, reply, counter = ask(name, rdtype)
    assert (reply.rcode(), counter, reply.answer) == (dns.rcode.REFUSED, "dns_refused", [])
    assert not reply.flags & (dns.flags.AA | dns.flags.RA)
    query = dns.message.make_query(name, rdtype)
    out = answer(query.to_wire(), FORWARDING, udp=True)
    assert (out.wire, out.counter) == (None, "dns_forward")
    assert out.forward is not None and out.forward.question == query.question and out.forward.id == query.id


@pytest.mark.parametrize(("ip", "want"), [
    ("100.64.0.1", "peer-1.tailnet.test."),
    ("fd7a:115c:a1e0::1", "peer-1.tailnet.test."),
    ("100.64.0.9", "me.tailnet.test."),             # our own node
    ("fd7a:115c:a1e0::4", "v6only.tailnet.test."),
    ("100.64.0.50", "db.tailnet.test."),            # no node has it: the ExtraRecords name
])
def test_ptr_of_tailnet_addresses(ip, want):
    rev = dns.reversename.from_address(ip)
    for name in (rev, dns.name.from_text(rev.to_text().upper())):  # nibbles in upper case too
        _, reply, counter = ask(name, "PTR")
        assert (reply.rcode(), values(reply), counter) == (dns.rcode.NOERROR, {want}, "dns_noerror")
        assert reply.answer[0].ttl == TTL and reply.flags & dns.flags.AA


def test_ptr_misses():
    for ip in ("100.64.0.77", "fd7a:115c:a1e0::77", "100.127.255.255"):  # tailnet addresses no one has
        _, reply, _ = ask(dns.reversename.from_address(ip), "PTR")
        assert reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA
    _, reply, _ = ask("64.100.in-addr.arpa", "PTR")  # a partial name in a local zone: it has children
    assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
    _, reply, _ = ask("0.64.100.in-addr.arpa", "PTR")
    assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
    _, reply, _ = ask("255.64.100.in-addr.arpa", "PTR")
    assert (reply.rcode(), reply.answer) == (dns.rcode.NOERROR, [])
    for name in ("999.0.64.100.in-addr.arpa", "x.64.100.in-addr.arpa"):  # no address, below a local zone
        _, reply, _ = ask(name, "PTR")
        assert reply.rcode() == dns.rcode.NXDOMAIN
    _, reply, _ = ask(dns.reversename.from_address("192.0.2.1"), "PTR")
    assert reply.rcode() == dns.rcode.REFUSED


def test_forwarding_sets_ra_on_local_answers():
    _, reply, _ = ask("peer-1", "A", FORWARDING)
    assert reply.flags & dns.flags.RA and reply.flags & dns.flags.AA


@pytest.mark.parametrize(("kw", "rcode"), [
    ({"rdclass": "CH"}, dns.rcode.REFUSED),  # version.bind-style queries
    ({"rdtype": "AXFR"}, dns.rcode.REFUSED),
    ({"rdtype": "IXFR"}, dns.rcode.REFUSED),
])
def test_other_classes_and_meta_types_are_refused(kw, rcode):
    query = dns.message.make_query("peer-1.tailnet.test", kw.pop("rdtype", "A"), **kw)
    out = answer(query.to_wire(), FORWARDING, udp=False)
    reply = dns.message.from_wire(out.wire)
    assert reply.rcode() == rcode and out.forward is None


def test_edns_is_mirrored_and_udp_replies_fit():
    _, reply, _ = ask("peer-1", "A", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == EDNS_PAYLOAD
    _, reply, _ = ask("peer-1", "A")
    assert reply.edns == -1


def _upstream_for(query: dns.message.Message, n: int, rcode=dns.rcode.NOERROR) -> dns.message.Message:
    up = dns.message.make_response(dns.message.make_query(query.question[0].name, query.question[0].rdtype))
    up.flags |= dns.flags.RA | dns.flags.AA  # the resolver may be authoritative; we are not
    up.set_rcode(rcode)
    if n:
        up.answer.append(dns.rrset.from_text_list(query.question[0].name, 300, "IN", "A",
                                                  [f"203.0.113.{i}" for i in range(1, n + 1)]))
    return up


def test_relay_copies_the_resolvers_answer_under_the_clients_id():
    query = dns.message.make_query("www.example.com", "A", id=777)
    out = relay(query, _upstream_for(query, 2), udp=True)
    reply = dns.message.from_wire(out.wire)
    assert query.is_response(reply) and out.counter == "dns_forward_noerror"
    assert values(reply) == {"203.0.113.1", "203.0.113.2"} and reply.answer[0].ttl == 300
    assert reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA
    out = relay(query, _upstream_for(query, 0, dns.rcode.NXDOMAIN), udp=True)
    assert dns.message.from_wire(out.wire).rcode() == dns.rcode.NXDOMAIN and out.counter == "dns_forward_nxdomain"
    out = relay(query, None, udp=True)
    assert dns.message.from_wire(out.wire).rcode() == dns.rcode.SERVFAIL and out.counter == "dns_forward_servfail"


def test_relay_truncates_for_udp_only():
    query = dns.message.make_query("big.example.com", "A")  # no EDNS: 512 bytes over UDP
    up = _upstream_for(query, 100)
    small = dns.message.from_wire(relay(query, up, udp=True).wire)
    assert small.flags & dns.flags.TC and len(relay(query, up, udp=True).wire) <= 512
    full = dns.message.from_wire(relay(query, up, udp=False).wire)
    assert not full.flags & dns.flags.TC and len(values(full)) == 100
    edns = dns.message.make_query("big.example.com", "A", use_edns=0, payload=4096)
    assert len(relay(edns, up, udp=True).wire) <= EDNS_PAYLOAD


# -- malformed queries ----------------------------------------------------------------------------


def _query(**kw) -> dns.message.Message:
    return dns.message.make_query("peer-1.tailnet.test", "A", id=99, **kw)


def _tsig() -> bytes:
    q = _query()
    q.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"}), keyname="k.")
    return q.to_wire()


def _two_questions() -> bytes:
    q = _query()
    q.question.append(dns.message.make_query("peer-2", "A").question[0])
    return q.to_wire()


def _no_question() -> bytes:
    q = _query()
    q.question = []
    return q.to_wire()


def _opcode(op) -> bytes:
    q = _query()
    q.set_opcode(op)
    return q.to_wire()


def _update() -> bytes:
    q = dns.update.UpdateMessage("tailnet.test", id=99)
    q.add("peer-9", 60, "A", "100.64.0.99")
    return q.to_wire()


def _response() -> bytes:
    return dns.message.make_response(_query()).to_wire()


@pytest.mark.parametrize(("wire", "counter", "rcode"), [
    (b"", "dns_drop_short", None),
    (b"\x00" * 11, "dns_drop_short", None),
    (bytes(MAX_QUERY + 1), "dns_drop_too_big", None),
    (_response(), "dns_drop_response", None),                               # never answer a response
    (_response()[:-3], "dns_drop_malformed", None),
    (_query().to_wire()[:-2], "dns_drop_malformed", None),                  # question cut short
    (_query().to_wire() + b"junk", "dns_drop_trailing_junk", dns.rcode.FORMERR),
    (_query(use_edns=0).to_wire()[:-3], "dns_drop_form_error", dns.rcode.FORMERR),  # OPT cut short
    (_tsig(), "dns_drop_tsig", dns.rcode.NOTAUTH),
    (_two_questions(), "dns_drop_qdcount", dns.rcode.FORMERR),
    (_no_question(), "dns_drop_qdcount", dns.rcode.FORMERR),
    (_opcode(dns.opcode.NOTIFY), "dns_drop_opcode", dns.rcode.NOTIMP),
    (_update(), "dns_drop_opcode", dns.rcode.NOTIMP),
    (_opcode(dns.opcode.UPDATE), "dns_drop_malformed", None),  # an UPDATE whose zone is not SOA
    (_opcode(dns.opcode.IQUERY), "dns_drop_opcode", dns.rcode.NOTIMP),
    (_query(use_edns=1).to_wire(), "dns_drop_badvers", dns.rcode.BADVERS),
])
def test_malformed_queries_are_counted_and_dropped_or_refused(wire, counter, rcode):
    for udp in (True, False):
        out = answer(wire, FORWARDING, udp=udp)
        assert out.counter == counter and out.forward is None
        if rcode is None:
            assert out.wire is None
        else:
            reply = dns.message.from_wire(out.wire)
            assert reply.id == 99 and reply.flags & dns.flags.QR
            assert reply.rcode() == rcode and not reply.answer
            assert len(reply.question) <= 1


VALID = [dns.message.make_query(n, t, use_edns=e).to_wire()
         for n in ("peer-1", "peer-1.tailnet.test", "nosuch.tailnet.test", "example.com",
                   "1.0.64.100.in-addr.arpa", dns.reversename.from_address("fd7a:115c:a1e0::2"))
         for t in ("A", "AAAA", "PTR", "ANY") for e in (None, 0)]


def _check_survives(wire: bytes, zone: Zone = FORWARDING) -> None:
    for udp in (True, False):
        out = answer(wire, zone, udp=udp)
        assert out.counter.startswith("dns_")
        if out.wire is not None:
            reply = dns.message.from_wire(out.wire)
            assert reply.flags & dns.flags.QR and reply.id == int.from_bytes(wire[:2], "big")
            assert len(out.wire) <= (EDNS_PAYLOAD if udp else 65535)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes_never_raise(wire):
    _check_survives(wire)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1,
                                         max_size=6))
def test_mutated_queries_never_raise(base, edits):
    wire = bytearray(base)
    for pos, value in edits:
        wire[pos % len(wire)] = value
    _check_survives(bytes(wire))


def test_seeded_fuzz_counts_every_query():
    rnd = random.Random(18)
    counters: dict[str, int] = {}
    for i in range(5000):
        wire = bytearray(rnd.choice(VALID))
        for _ in range(rnd.randrange(1, 4)):
            wire[rnd.randrange(len(wire))] = rnd.getrandbits(8)
        if i % 3 == 0:
            wire = bytearray(rnd.randbytes(rnd.randrange(40)))
        out = answer(bytes(wire), ZONE, udp=True)
        counters[out.counter] = counters.get(out.counter, 0) + 1
    assert sum(counters.values()) == 5000
    drops = {k: v for k, v in counters.items() if k.startswith("dns_drop_")}
    assert drops.get("dns_drop_short", 0) > 100 and len(drops) >= 4, counters


def test_the_zone_is_our_nodes_magicdns_suffix_whatever_netmap_domain_says():
    # Headscale sends its server's host name as MapResponse.Domain, and no search domain here
    zone = Zone.from_netmap(Netmap(self_node=MAP.self_node, peers=MAP.peers, domain="127.0.0.1"))
    assert [z.to_text() for z in zone.local] == ["tailnet.test."]
    assert ask("nosuch.tailnet.test", "A", zone)[1].rcode() == dns.rcode.NXDOMAIN
    assert ask("nosuch.127.0.0.1", "A", zone)[1].rcode() == dns.rcode.REFUSED
    assert values(ask("peer-1.tailnet.test", "A", zone)[1]) == {"100.64.0.1"}


def test_zone_from_netmap():
    assert [z.to_text() for z in ZONE.local] == ["tailnet.test.", "64.100.in-addr.arpa.",
                                                 "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa."]
    assert Zone.from_netmap(Netmap()).local == ()
    assert not ZONE.forward and FORWARDING.forward
