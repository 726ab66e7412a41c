"""``sunbeam-ctl status``: restart counts from supervisord's log, the join of supervisord's
table with the services' answers, and the text and JSON built from real Structs."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import msgspec
from sunbeam.services.control.publication import Publication
from sunbeam.shared.config.model import Address, Context, Listener
from sunbeam.ctl.status import (
    ProcInfo,
    count_spawns,
    format_duration,
    format_service,
    identity,
    is_healthy,
    log_lines_newest_first,
    service_names,
    service_rows,
    status_document,
    status_lines,
)
from sunbeam.shared.messages.ctl import CTL_REPLY_CODEC, ServiceHealth, StatusReply
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, ControlStatus
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.runtime.log import get_logger
from sunbeam.shared.runtime.secret import Secret

NOW = 1_718_000_000.0
K1, K2 = ("nodekey:" + c * 64 for c in "12")

LOG_RUN_1 = """\
2024-06-10 08:00:00,001 INFO supervisord started with pid 100
2024-06-10 08:00:01,002 INFO spawned: 'control' with pid 101
2024-06-10 08:00:01,003 INFO spawned: 'wg-0' with pid 102
2024-06-10 08:00:05,004 WARN exited: wg-0 (terminated by SIGKILL; not expected)
2024-06-10 08:00:05,005 INFO spawned: 'wg-0' with pid 103
"""
LOG_RUN_2 = """\
2024-06-10 09:00:00,001 INFO supervisord started with pid 200
2024-06-10 09:00:01,002 INFO spawned: 'control' with pid 201
2024-06-10 09:00:01,003 INFO spawned: 'wg-0' with pid 202
2024-06-10 09:00:01,004 INFO spawned: 'wg-1' with pid 203
2024-06-10 09:00:02,005 INFO success: wg-1 entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)
2024-06-10 09:00:09,006 WARN exited: wg-1 (exit status 1; not expected)
2024-06-10 09:00:09,007 INFO spawned: 'wg-1' with pid 204
2024-06-10 09:00:12,008 WARN exited: wg-1 (exit status 1; not expected)
2024-06-10 09:00:12,009 INFO spawned: 'wg-1' with pid 205
"""


def newest_first(text: str) -> list[str]:
    return list(reversed(text.splitlines()))


# -- restart counts -------------------------------------------------------------------------------

def test_spawns_count_only_the_current_run():
    spawns = count_spawns(newest_first(LOG_RUN_1 + LOG_RUN_2), supervisord=200)
    assert spawns == {"control": 1, "wg-0": 1, "wg-1": 3}


def test_a_supervisord_that_has_not_logged_yet_inherits_nothing():
    # pid 300 runs, but the newest start line is the previous run's (pid 200)
    assert count_spawns(newest_first(LOG_RUN_1 + LOG_RUN_2), supervisord=300) == {}


def test_without_a_start_line_the_count_is_a_lower_bound():
    tail = "\n".join(LOG_RUN_2.splitlines()[5:])  # rotated away: only the last spawns remain
    assert count_spawns(newest_first(tail), supervisord=200) == {"wg-1": 2}


def test_rotated_backups_are_read_back_to_the_start_line(tmp_path: Path):
    lines = LOG_RUN_2.splitlines(keepends=True)
    (tmp_path / "supervisord.log.2").write_text(LOG_RUN_1)
    (tmp_path / "supervisord.log.1").write_text("".join(lines[:5]))  # the start line is in here
    (tmp_path / "supervisord.log").write_text("".join(lines[5:]))
    assert count_spawns(log_lines_newest_first(tmp_path), supervisord=200) == {"control": 1, "wg-0": 1, "wg-1": 3}


def test_no_log_no_spawns(tmp_path: Path):
    assert count_spawns(log_lines_newest_first(tmp_path), supervisord=None) == {}


# -- the join -------------------------------------------------------------------------------------

def health(service: str, pid: int, *, state: str = "running", age: float = 192.0,
           counters: dict[str, int] | None = None) -> ServiceHealth:
    return ServiceHealth(service=service, pid=pid, state=state, started_at=NOW - age, counters=counters or {})


def proc(name: str, statename: str, pid: int = 0, *, age: int = 192, exitstatus: int = 0,
         spawnerr: str = "") -> ProcInfo:
    return ProcInfo(name=name, statename=statename, pid=pid, start=int(NOW) - age, exitstatus=exitstatus,
                    spawnerr=spawnerr)


def test_service_names_in_pipeline_order():
    table = {n: proc(n, "RUNNING") for n in ("wg-10", "proxy", "wg-2", "control", "udp", "derp")}
    assert service_names(table, ["wg-0", "control", "extra"]) == [
        "control", "derp", "udp", "proxy", "wg-0", "wg-2", "wg-10", "extra"]
    assert service_names(None, []) == []


def test_every_supervised_service_is_a_row_whatever_its_state():
    table = {
        "control": proc("control", "RUNNING", 101),
        "derp": proc("derp", "STOPPED", exitstatus=0),
        "udp": proc("udp", "RUNNING", 103, age=30),  # alive, its ctl socket silent (SIGSTOP, stuck loop)
        "wg-0": proc("wg-0", "BACKOFF", spawnerr="Exited too quickly (process log may have details)"),
        "wg-1": proc("wg-1", "STARTING", 205, age=0),  # just respawned, already answers
        "wg-2": proc("wg-2", "EXITED", exitstatus=1),
        "wg-3": proc("wg-3", "FATAL", spawnerr="Exited too quickly (process log may have details)"),
    }
    answers = {"control": health("control", 101, counters={"ctl_bad_request": 2, "udp_drop_full": 3, "sent": 9}),
               "wg-1": health("wg-1", 205, age=0.5)}
    spawns = {"control": 1, "derp": 1, "udp": 1, "wg-0": 4, "wg-1": 2, "wg-2": 1, "wg-3": 3}
    rows = {r.service: r for r in service_rows(service_names(table, ["wg-0", "udp"]), table, answers,
                                               silent=["udp"], stale=["wg-0"], spawns=spawns, now=NOW)}
    assert list(rows) == ["control", "derp", "udp", "wg-0", "wg-1", "wg-2", "wg-3"]
    c = rows["control"]
    assert (c.state, c.healthy, c.pid, c.uptime, c.restarts, c.drops) == ("running", True, 101, 192.0, 0, 5)
    d = rows["derp"]
    assert (d.state, d.healthy, d.pid, d.uptime, d.exitstatus, d.drops) == ("stopped", False, None, None, 0, None)
    u = rows["udp"]
    assert (u.state, u.healthy, u.pid, u.uptime, u.restarts) == ("not answering", False, 103, 30.0, 0)
    w0 = rows["wg-0"]  # the BACKOFF state says more than its stale socket file
    assert (w0.state, w0.healthy, w0.pid, w0.restarts) == ("backoff", False, None, 3)
    assert w0.spawnerr == table["wg-0"].spawnerr
    w1 = rows["wg-1"]  # its own answer wins over supervisord's startsecs wait
    assert (w1.state, w1.healthy, w1.pid, w1.uptime, w1.restarts) == ("running", True, 205, 0.5, 1)
    assert (rows["wg-2"].state, rows["wg-2"].exitstatus) == ("exited", 1)
    assert (rows["wg-3"].state, rows["wg-3"].restarts) == ("fatal", 2)


def test_started_by_hand_the_sockets_are_the_list_and_nobody_counts_restarts():
    answers = {"control": health("control", 11), "derp": health("derp", 12, state="stopping")}
    rows = service_rows(["control", "derp", "udp", "wg-0"], None, answers, silent=["udp"], stale=["wg-0"],
                        spawns={}, now=NOW)
    assert [(r.service, r.state, r.healthy, r.restarts, r.supervisor) for r in rows] == [
        ("control", "running", True, None, None), ("derp", "stopping", False, None, None),
        ("udp", "not answering", False, None, None), ("wg-0", "stale socket", False, None, None)]
    assert rows[2].uptime is None and rows[3].pid is None


def test_healthy_needs_control_running_and_every_row_healthy():
    control = ControlStatus(state="Running", node_id=3, addresses=("100.64.0.3/32",), peers=2, home_derp=999)
    table = {"control": proc("control", "RUNNING", 101), "wg-0": proc("wg-0", "RUNNING", 102)}
    up = {"control": health("control", 101), "wg-0": health("wg-0", 102)}
    rows = service_rows(["control", "wg-0"], table, up, [], [], {}, NOW)
    assert is_healthy(control, rows, [])
    assert not is_healthy(control, rows, ["wg-1"])
    assert not is_healthy(ControlStatus(state="Reconnecting"), rows, [])
    assert not is_healthy(None, rows, [])
    down = service_rows(["control", "wg-0"], {**table, "wg-0": proc("wg-0", "BACKOFF")}, {"control": up["control"]},
                        [], [], {}, NOW)
    assert not is_healthy(control, down, [])
    assert not is_healthy(control, [], [])


# -- text -----------------------------------------------------------------------------------------

def test_format_duration():
    assert [format_duration(s) for s in (0, 42.9, 60, 192, 3599, 3600, 18180, 86400, 187200, -5)] == [
        "0s", "42s", "1m00s", "3m12s", "59m59s", "1h00m", "5h03m", "1d00h", "2d04h", "0s"]


def test_service_lines():
    table = {"control": proc("control", "RUNNING", 4100),
             "wg-1": proc("wg-1", "BACKOFF", spawnerr="Exited too quickly (process log may have details)"),
             "wg-2": proc("wg-2", "EXITED", exitstatus=1)}
    rows = service_rows(["control", "wg-1", "wg-2"], table, {"control": health("control", 4100)}, [], [],
                        {"control": 1, "wg-1": 4, "wg-2": 1}, NOW)
    assert [format_service(r) for r in rows] == [
        "  control    pid 4100     running         up 3m12s     restarts 0    drops 0",
        ("  wg-1       pid -        backoff         -            restarts 3    drops -  "
         "(Exited too quickly (process log may have details))"),
        "  wg-2       pid -        exited          -            restarts 0    drops -  (exit status 1)",
    ]


def test_status_lines_running_lists_every_service():
    control = ControlStatus(state="Running", node_id=3, addresses=("100.64.0.3/32", "fd7a:115c:a1e0::3/128"),
                            peers=2, home_derp=999, hostname="laptop", name="laptop.example.com.",
                            domain="example.com")
    table = {"control": proc("control", "RUNNING", 4100), "wg-0": proc("wg-0", "FATAL")}
    rows = service_rows(["control", "wg-0"], table, {"control": health("control", 4100)}, [], [],
                        {"control": 1, "wg-0": 3}, NOW)
    lines = status_lines(control, rows)
    assert lines[:6] == ["VPN: running", "addresses: 100.64.0.3, fd7a:115c:a1e0::3", "peers: 2",
                         "derp home: region 999", "magicdns: laptop.example.com", "services:"]
    assert lines[6].startswith("  control    pid 4100     running ")
    assert lines[7].startswith("  wg-0       pid -        fatal ") and "restarts 2" in lines[7]


def test_status_lines_nothing_running_is_one_line():
    assert status_lines(None, []) == ["VPN: not running"]


def test_status_lines_supervisord_up_but_every_service_down():
    rows = service_rows(["control"], {"control": proc("control", "BACKOFF", exitstatus=2)}, {}, [], ["control"],
                        {"control": 2}, NOW)
    assert status_lines(None, rows) == [
        "VPN: not connected (control service not running)", "services:",
        "  control    pid -        backoff         -            restarts 1    drops -  (exit status 2)"]


def test_status_lines_reconnecting_says_why():
    lines = status_lines(ControlStatus(state="Reconnecting", reason="control server 127.0.0.1:9 unreachable"),
                         service_rows(["control"], None, {"control": health("control", 5)}, [], [], {}, NOW))
    assert lines[:2] == ["VPN: reconnecting (control server 127.0.0.1:9 unreachable)", "addresses: none yet"]


# -- JSON -----------------------------------------------------------------------------------------

def context(**kw) -> Context:
    base = {"name": "default", "control_url": "https://hs.example.com", "auth_key": Secret("hskey-auth-x"),
            "hostname": "laptop-configured", "state_dir": Path("/s"), "runtime_dir": Path("/r")}
    return Context(**{**base, **kw})


def test_identity():
    control = ControlStatus(state="Running", hostname="laptop", name="laptop.tail.example.com.", domain="example.com")
    assert identity(control, context()) == {"hostname": "laptop", "magicdns_name": "laptop.tail.example.com",
                                            "tailnet_domain": "tail.example.com",
                                            "control_url": "https://hs.example.com"}
    # no netmap yet: the configured hostname; no MagicDNS name: the netmap's domain
    assert identity(ControlStatus(state="Registering", domain="example.com"), context()) == {
        "hostname": "laptop-configured", "magicdns_name": None, "tailnet_domain": "example.com",
        "control_url": "https://hs.example.com"}
    assert identity(None, None) == {"hostname": None, "magicdns_name": None, "tailnet_domain": None,
                                    "control_url": None}


def test_status_document_holds_old_keys_and_the_new_ones():
    control = ControlStatus(state="Running", node_id=3, addresses=("100.64.0.3/32",), peers=2, home_derp=999,
                            hostname="laptop", name="laptop.example.com.", domain="example.com")
    netmap = Netmap(
        self_node=SelfNode(id=3, key=K1, name="laptop.example.com.", hostname="laptop", addresses=("100.64.0.3/32",)),
        peers=(Peer(id=7, key=K2, name="zeta.example.com.", hostname="zeta", online=False,
                    addresses=("100.64.0.7/32", "fd7a:115c:a1e0::7/128")),
               Peer(id=5, key="nodekey:" + "5" * 64, name="alpha.example.com.", hostname="Alpha", online=True,
                    addresses=("100.64.0.5/32",))),
        domain="example.com")
    ctx = context(listeners=(Listener(kind="socks5", listen=Address(host="127.0.0.1", port=1080)),
                             Listener(kind="forward", listen=Address(host="::1", port=8080),
                                      target=Address(host="zeta", port=80)),
                             Listener(kind="inbound", port=22, target=Address(host="127.0.0.1", port=22))))
    healths = [health("control", 101)]
    table = {"control": proc("control", "RUNNING", 101), "wg-0": proc("wg-0", "EXITED", exitstatus=1)}
    rows = service_rows(["control", "wg-0"], table, {"control": healths[0]}, [], ["wg-0"],
                        {"control": 1, "wg-0": 2}, NOW)
    doc = status_document(control=control, healths=healths, rows=rows, not_answering=[], stale=["wg-0"], ctx=ctx,
                          netmap=netmap)
    doc = json.loads(json.dumps(doc))  # what the command prints
    assert doc["running"] is True and doc["healthy"] is False
    assert doc["control"]["state"] == "Running" and doc["control"]["peers"] == 2
    assert [s["service"] for s in doc["services"]] == ["control"] and doc["stale"] == ["wg-0"]
    assert doc["not_answering"] == []
    assert doc["processes"][1] == {"service": "wg-0", "state": "exited", "healthy": False, "pid": None,
                                   "started_at": None, "uptime": None, "restarts": 1, "drops": None,
                                   "supervisor": "EXITED", "exitstatus": 1, "spawnerr": ""}
    assert doc["processes"][0]["uptime"] == 192.0 and doc["processes"][0]["restarts"] == 0
    assert (doc["hostname"], doc["magicdns_name"], doc["tailnet_domain"], doc["control_url"]) == (
        "laptop", "laptop.example.com", "example.com", "https://hs.example.com")
    assert doc["listeners"] == [
        {"kind": "socks5", "listen": "127.0.0.1:1080", "port": None, "target": None},
        {"kind": "forward", "listen": "[::1]:8080", "port": None, "target": "zeta:80"},
        {"kind": "inbound", "listen": None, "port": 22, "target": "127.0.0.1:22"}]
    assert doc["version"] == importlib.metadata.version("sunbeam")
    assert doc["peers"] == [
        {"name": "Alpha", "magicdns_name": "alpha.example.com", "id": 5, "addresses": ["100.64.0.5"], "online": True},
        {"name": "zeta", "magicdns_name": "zeta.example.com", "id": 7, "addresses": ["100.64.0.7", "fd7a:115c:a1e0::7"],
         "online": False}]
    assert doc["peers_detail"] == "sunbeam-ctl peers --json"


def test_status_document_without_netmap_or_context():
    doc = status_document(control=None, healths=[], rows=[], not_answering=[], stale=[], ctx=None, netmap=None)
    assert doc["running"] is False and doc["healthy"] is False and doc["processes"] == []
    assert doc["peers"] is None and doc["listeners"] is None and doc["control_url"] is None


# -- the wire: added fields stay compatible ------------------------------------------------------

def test_control_status_new_fields_round_trip_and_old_frames_decode():
    status = ControlStatus(state="Running", node_id=3, hostname="laptop", name="laptop.example.com.",
                           domain="example.com")
    reply = StatusReply(health=health("control", 1), control=status)
    assert CTL_REPLY_CODEC.decode(CTL_REPLY_CODEC.encode(reply)) == reply
    # a control service from before these fields: the map lacks them, the defaults fill in
    old = msgspec.msgpack.encode({"t": "ControlStatus", "state": "Running", "node_id": 3, "peers": 1})
    decoded = CONTROL_EVENT_CODEC.decode(old)
    assert isinstance(decoded, ControlStatus)
    assert (decoded.hostname, decoded.name, decoded.domain, decoded.peers) == ("", "", "", 1)


class _Publisher:
    snapshot = None

    def __init__(self) -> None:
        self.statuses: list[ControlStatus] = []

    def publish_status(self, status: ControlStatus) -> None:
        self.statuses.append(status)


def test_publication_status_carries_our_names_from_the_netmap():
    pub = Publication(_Publisher(), get_logger("test"))  # type: ignore[arg-type]
    assert (pub.status().hostname, pub.status().name, pub.status().domain) == ("", "", "")
    pub.netmap = Netmap(self_node=SelfNode(id=3, key=K1, name="laptop.example.com.", hostname="laptop",
                                           addresses=("100.64.0.3/32",)),
                        peers=(Peer(id=7, key=K2),), domain="example.com")
    status = pub.status()
    assert (status.hostname, status.name, status.domain, status.node_id, status.peers) == (
        "laptop", "laptop.example.com.", "example.com", 3, 1)
