"""A tiny authoritative DNS server for the reference network's "internet" (dnspython).

Runs in the gateway's LAN namespace (gateway.py) at 203.0.113.53, the resolver Headscale
hands out: names answered here are reachable only through the exit node, so a test that
resolves one through sunbeam proves the query went through the tunnel.

    python -m sunbeam.refnet.dnsserver --bind 203.0.113.53 --record www.internet.test=203.0.113.10

UDP and TCP on port 53. Each ``--record NAME=IP`` adds an A or AAAA record (TTL 60); other
names under a record's parent get NXDOMAIN, anything else REFUSED. Malformed queries are
ignored. Every query is logged to stdout (``query <name> <type> -> <rcode>``), so a
test can see that a query arrived.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import socketserver
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

RECORDS: dict[tuple[str, int], list[str]] = {}
ZONES: set[str] = set()


def answer(wire: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR or len(query.question) != 1:
        return None
    reply = dns.message.make_response(query)
    q = query.question[0]
    name = q.name.to_text().lower()
    ips = RECORDS.get((name, q.rdtype), [])
    if ips:
        reply.answer.append(dns.rrset.from_text_list(q.name, 60, dns.rdataclass.IN, q.rdtype, ips))
        reply.flags |= dns.flags.AA
    elif any(n == name for n, _ in RECORDS):
        reply.flags |= dns.flags.AA  # the name exists, not with that type
    elif any(name == z or name.endswith("." + z) for z in ZONES):
        reply.set_rcode(dns.rcode.NXDOMAIN)
    else:
        reply.set_rcode(dns.rcode.REFUSED)
    print(f"query {name} {dns.rdatatype.to_text(q.rdtype)} -> {dns.rcode.to_text(reply.rcode())}", flush=True)
    return reply.to_wire()


class Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        if (out := answer(data)) is not None:
            sock.sendto(out, self.client_address)


class Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        f = self.request.makefile("rb")
        while len(head := f.read(2)) == 2:
            data = f.read(struct.unpack("!H", head)[0])
            if (out := answer(data)) is None:
                return
            self.request.sendall(struct.pack("!H", len(out)) + out)


class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def add_record(spec: str) -> None:
    name, _, ip = spec.partition("=")
    addr = ipaddress.ip_address(ip)
    fqdn = name.lower().rstrip(".") + "."
    RECORDS.setdefault((fqdn, dns.rdatatype.A if addr.version == 4 else dns.rdatatype.AAAA), []).append(str(addr))
    ZONES.add(fqdn.split(".", 1)[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", required=True, help="address to serve on (port 53)")
    ap.add_argument("--record", action="append", default=[], help="NAME=IP (A or AAAA); repeatable")
    args = ap.parse_args(argv)
    for spec in args.record:
        add_record(spec)
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    ThreadingUdp.address_family = ThreadingTcp.address_family = family
    udp = ThreadingUdp((args.bind, 53), Udp)
    tcp = ThreadingTcp((args.bind, 53), Tcp)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    print(f"dnsserver on {args.bind}:53 with {len(RECORDS)} names", flush=True)
    tcp.serve_forever()


if __name__ == "__main__":
    main()
