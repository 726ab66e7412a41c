"""Fuzz target of the netmap's packet filter, fed the way the proxy is: MapResponse JSON
-> ``decode_map_response`` -> ``NetmapBuilder`` (PacketFilter and PacketFilters merged,
CapGrant dropped) -> the control PUB codec -> ``PacketFilter`` -> ``allows()``.

Contract (services/proxy/filter.py): the tailcfg decoder raises BadControlMessage only;
building a PacketFilter from any decoded filter never raises; every entry it cannot read
is in ``bad_entries`` with a one-line reason and a cut-short entry; ``allows()`` returns a
bool for every probe packet. The outcome is the decoder's rejection, else the first bad
entry's reason, else None (accepted).
"""

from __future__ import annotations

import json

from sunbeam.services.proxy.filter import ICMP4, ICMP6, TCP, UDP, PacketFilter
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.netmap import NetmapBuilder
from sunbeam.shared.proto import tailcfg

from .harness import Target, check_reason

PROBES = [
    ("100.64.0.1", "100.64.0.3", 22, TCP), ("100.64.0.15", "100.64.0.3", 8080, TCP),
    ("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::3", 443, TCP), ("100.64.0.1", "fd7a:115c:a1e0::3", 53, UDP),
    ("0.0.0.0", "255.255.255.255", 65535, ICMP4), ("::", "::ffff:100.64.0.3", 0, ICMP6),
    ("fe80::1%eth0", "100.64.0.3", 22, TCP), ("10.1.2.3", "10.1.2.4", 22, 132),
]


def _ports(first: int, last: int) -> dict:
    return {"First": first, "Last": last}


def _seeds() -> list[bytes]:
    rules = [
        [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": _ports(0, 65535)}]}],  # Headscale's allow-all
        [{"SrcIPs": ["100.64.0.1", "100.64.0.10-100.64.0.20", "fd7a:115c:a1e0::/48", "cap:x"],
          "DstPorts": [{"IP": "100.64.0.3/32", "Ports": _ports(22, 22)},
                       {"IP": "fd7a:115c:a1e0::3", "Ports": _ports(8000, 8999)}]},
         {"SrcIPs": ["100.64.0.0/10"], "DstPorts": [{"IP": "*", "Ports": _ports(53, 53)}], "IPProto": [17]}],
        [{"SrcIPs": ["2eff::1-2eff::0800", "0.0.0.0/0", "::/0"],
          "DstPorts": [{"IP": "100.64.0.0-100.64.0.9", "Ports": _ports(1, 65535)}], "IPProto": [6, 1, 58]}],
        [{"SrcIPs": ["1.2.3.4-1.2.3.9", "::1-::9"], "DstPorts": [{"IP": "::1-::9", "Ports": _ports(9, 9)}]}],
        [{"SrcIPs": ["100.64.0.1-fd7a:115c:a1e0::1"], "DstPorts": [{"IP": "*", "Ports": _ports(0, 65535)}]}],  # issue 15
        [],
    ]
    out = [json.dumps({"PacketFilter": r}).encode() for r in rules]
    out.append(json.dumps({"PacketFilters": {"base": rules[1], "extra": rules[2]}}).encode())
    return out


def _packet_filter():
    def run(data: bytes):
        try:
            resp = tailcfg.decode_map_response(data)
        except tailcfg.BadControlMessage as exc:
            return check_reason(str(exc))
        builder = NetmapBuilder()
        builder.apply(resp, now=1_800_000_000.0)
        snap = CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=1, netmap=builder.snapshot())))
        assert isinstance(snap, NetmapSnapshot)
        f = PacketFilter(snap.netmap.packet_filter)
        for bad in f.bad_entries:
            assert isinstance(bad.entry, str) and len(bad.entry) <= 64 + 3, bad
            check_reason(bad.reason, one_line=True)
        for probe in PROBES:
            assert type(f.allows(*probe)) is bool, probe
        return "bad entry: " + check_reason(f.bad_entries[0].reason) if f.bad_entries else None
    return run


_TOKENS = (b'"*"', b'"-"', b"-", b"/", b"/0", b"/32", b"/128", b'"cap:', b"::", b"::1", b".", b"%eth0",
           b"fd7a:115c:a1e0::", b"100.64.0.", b"1.2.3.4", b"255", b"65535", b"65536", b"-1", b"\\u00a0", b" ", b"autogroup:internet",
           b'"SrcIPs":', b'"DstPorts":', b'"IP":', b'"Ports":', b'"First":', b'"Last":', b'"IPProto":', b'"Bits":',
           b'"SrcBits":', b'"PacketFilter":', b'"PacketFilters":', b"null", b"[", b"]", b"{", b"}", b",")

TARGETS = [
    Target("packet_filter", _packet_filter, _seeds,
           "decode_map_response -> NetmapBuilder -> PacketFilter (services/proxy/filter.py) .allows",
           max_len=2048, tokens=_TOKENS),
]
