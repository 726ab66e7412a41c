"""``sunbeam-ctl exit-node list`` (ctl/exitnode.py) on netmaps built here: the peers that
offer an exit node, the one the context's ``exit_node`` picks, its problem when it is not
usable, --json always JSON; and the per-peer route facts ``peers`` shows."""

from __future__ import annotations

import json

import pytest
from sunbeam.ctl import cli, exitnode
from sunbeam.ctl.exitnode import (
    exit_rows,
    format_exit_table,
    format_routes,
    route_facts,
)
from sunbeam.ctl.lookup import NO_NETMAP, NOT_RUNNING
from sunbeam.shared.netmap import Netmap, Peer
from sunbeam.shared.netmap.routes import choose_exit_node

from .ctlenv import env_only_context


def _peer(i: int, *extra: str, name: str, hostname: str | None = None, online: bool | None = True,
          expired: bool = False) -> Peer:
    own = (f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128")
    return Peer(id=i, key="nodekey:" + f"{i:02x}" * 32, name=f"{name}.tail.example.", hostname=hostname,
                addresses=own, allowed_ips=own + extra, online=online, expired=expired)


ROUTER = _peer(2, "192.168.77.0/24", "fd00:77::/64", name="router", hostname="router")
GATEWAY = _peer(3, "0.0.0.0/0", "::/0", name="gateway", hostname="gw-box")
BACKUP = _peer(4, "10.0.0.0/8", "0.0.0.0/0", "::/0", name="backup", online=False)
PLAIN = _peer(5, name="plain", hostname="plain")
NETMAP = Netmap(peers=(ROUTER, GATEWAY, BACKUP, PLAIN))


# -- the facts (pure) ----------------------------------------------------------------------------

def test_route_facts_offered_and_used():
    assert route_facts(PLAIN, accept_routes=True, exit_peer=GATEWAY) == {
        "subnet_routes": [], "offers_exit": False, "exit_node": False, "routes_in_use": []}
    assert route_facts(ROUTER, accept_routes=False, exit_peer=None) == {
        "subnet_routes": ["192.168.77.0/24", "fd00:77::/64"], "offers_exit": False, "exit_node": False,
        "routes_in_use": []}
    assert route_facts(ROUTER, accept_routes=True, exit_peer=None)["routes_in_use"] == ["192.168.77.0/24",
                                                                                         "fd00:77::/64"]
    assert route_facts(GATEWAY, accept_routes=True, exit_peer=GATEWAY) == {
        "subnet_routes": [], "offers_exit": True, "exit_node": True, "routes_in_use": ["0.0.0.0/0", "::/0"]}
    assert route_facts(BACKUP, accept_routes=True, exit_peer=GATEWAY)["routes_in_use"] == ["10.0.0.0/8"]


@pytest.mark.parametrize("peer, accept, exit_peer, cell", [
    (PLAIN, True, GATEWAY, "-"),
    (ROUTER, False, None, "192.168.77.0/24, fd00:77::/64 (not accepted)"),
    (ROUTER, True, None, "192.168.77.0/24, fd00:77::/64 (accepted)"),
    (GATEWAY, False, None, "exit node"),
    (GATEWAY, False, GATEWAY, "exit node (in use)"),
    (BACKUP, True, GATEWAY, "10.0.0.0/8 (accepted); exit node"),
    (BACKUP, False, BACKUP, "10.0.0.0/8 (not accepted); exit node (in use)"),
])
def test_format_routes(peer, accept, exit_peer, cell):
    assert format_routes(route_facts(peer, accept_routes=accept, exit_peer=exit_peer)) == cell


def test_exit_rows_sorted_with_the_one_in_use():
    rows = exit_rows(NETMAP, choose_exit_node(NETMAP, "gateway"))
    assert [(r["name"], r["ip"], r["online"], r["in_use"]) for r in rows] == [
        ("backup.tail.example", "100.64.0.4", False, False), ("gw-box", "100.64.0.3", True, True)]
    assert rows[1]["magicdns_name"] == "gateway.tail.example" and rows[1]["addresses"] == [
        "100.64.0.3", "fd7a:115c:a1e0::3"]
    lines = format_exit_table(rows).splitlines()
    assert [line.split() for line in lines] == [["IP", "NAME", "ONLINE", "IN", "USE"],
                                                 ["100.64.0.4", "backup.tail.example", "no", "-"],
                                                 ["100.64.0.3", "gw-box", "yes", "yes"]]
    assert lines[2].index("yes") == lines[0].index("ONLINE")
    assert exit_rows(Netmap(peers=(ROUTER, PLAIN)), choose_exit_node(None, None)) == []


# -- the command ---------------------------------------------------------------------------------

@pytest.fixture()
def running(monkeypatch, tmp_path):
    """Config from the environment only; the netmap `fetch_netmap` returns is ``state["netmap"]``."""
    env_only_context(monkeypatch, tmp_path)
    state: dict[str, Netmap | str] = {"netmap": NETMAP}
    monkeypatch.setattr(exitnode, "fetch_netmap", lambda rundir: state["netmap"])
    return state


def test_list_with_the_configured_exit_node_in_use(running, monkeypatch, capsys):
    monkeypatch.setenv("SUNBEAM_EXIT_NODE", "100.64.0.3")
    assert cli.main(["exit-node", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["100.64.0.3", "gw-box", "yes", "yes"]
    assert lines[3] == "in use: gw-box (100.64.0.3), exit_node = '100.64.0.3'"
    assert cli.main(["exit-node", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["configured"] == "100.64.0.3" and doc["in_use"] == "gateway.tail.example"
    assert doc["problem"] is None and doc["error"] is None
    assert [(r["id"], r["in_use"]) for r in doc["exit_nodes"]] == [(4, False), (3, True)]


def test_list_without_exit_node_configured(running, capsys):
    assert cli.main(["exit-node", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.rstrip().endswith("-") for line in lines[1:3])
    assert lines[3] == "no exit node in use (exit_node is not set in the context)"


@pytest.mark.parametrize("wanted, problem", [
    ("router", "exit node 'router' (router.tail.example) is not usable: it offers no exit route (or it is not approved)"),
    ("nosuch", "exit node 'nosuch' is not a peer of this tailnet"),
])
def test_list_says_why_the_configured_exit_node_is_not_usable(running, monkeypatch, capsys, wanted, problem):
    monkeypatch.setenv("SUNBEAM_EXIT_NODE", wanted)
    assert cli.main(["exit-node", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == problem and "yes  yes" not in "\n".join(lines)
    assert cli.main(["exit-node", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["problem"] == problem and doc["in_use"] is None and doc["configured"] == wanted


def test_list_when_no_peer_offers_one(running, capsys):
    running["netmap"] = Netmap(peers=(ROUTER, PLAIN))
    assert cli.main(["exit-node", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["no exit nodes: no peer offers one",
                                                    "no exit node in use (exit_node is not set in the context)"]
    assert cli.main(["exit-node", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit_nodes"] == []


@pytest.mark.parametrize("why", [NOT_RUNNING, NO_NETMAP])
def test_list_when_not_running(running, capsys, why):
    running["netmap"] = why
    assert cli.main(["exit-node", "list"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"sunbeam-ctl: {why}\n"
    assert cli.main(["exit-node", "list", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"exit_nodes": [], "configured": None, "in_use": None,
                                                   "problem": None, "error": why}


def test_exit_node_needs_an_action(running, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["exit-node"])
    assert exit_.value.code == 2 and "ACTION" in capsys.readouterr().err
