"""Expired peers stay listed but unreachable (services/control/expiry.py)."""

from __future__ import annotations

from sunbeam.services.control.expiry import flag, flag_change, flag_netmap, is_expired
from sunbeam.ctl.peers import format_table, peer_rows
from sunbeam.shared.netmap import Netmap, NetmapChange, Peer

NOW = 1_800_000_000.0
KEY = "nodekey:" + "ab" * 32


def peer(**kw) -> Peer:
    base = {"id": 7, "key": KEY, "hostname": "gone", "addresses": ("100.64.0.7/32",),
            "allowed_ips": ("100.64.0.7/32",), "endpoints": ("10.0.0.7:41641",), "home_derp": 999, "online": True}
    return Peer(**{**base, **kw})


def test_marked_by_the_server_or_by_a_passed_key_expiry():
    assert is_expired(peer(expired=True), NOW)
    assert is_expired(peer(key_expiry="2027-01-15T08:00:00Z"), NOW)  # 1_800_000_000 is 2027-01-15T08:00Z
    assert not is_expired(peer(key_expiry="2030-01-01T00:00:00Z"), NOW)
    assert not is_expired(peer(), NOW) and not is_expired(peer(key_expiry="not a time"), NOW)


def test_flagged_peer_keeps_its_addresses_but_nothing_routes_to_it():
    out = flag(peer(expired=True), NOW)
    assert out.expired and out.addresses == ("100.64.0.7/32",)
    assert (out.allowed_ips, out.endpoints, out.home_derp) == ((), (), 0)
    assert flag(out, NOW) is out
    live = peer()
    assert flag(live, NOW) is live
    nm = Netmap(peers=(live, peer(id=8, key_expiry="2000-01-01T00:00:00Z")))
    assert [p.expired for p in flag_netmap(nm, NOW).peers] == [False, True]
    change = flag_change(NetmapChange(upserted=(peer(expired=True),)), NOW)
    assert change.upserted[0].allowed_ips == ()
    table = format_table(peer_rows(flag_netmap(Netmap(peers=(peer(expired=True),)), NOW), [], NOW), NOW)
    assert table.splitlines()[1].split()[:3] == ["gone", "100.64.0.7", "expired"]
