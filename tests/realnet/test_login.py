"""Interactive login, logout and key expiry against the real Headscale and tailscaled
(issue 17 items 2-4): the URL Headscale gives, the admin's ``headscale nodes register``,
Running; Ctrl-C while waiting; logout seen by the server and by a real peer; an expired
node key and its recovery without restarting a service."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time

import pytest
from sunbeam.ctl.daemon import running

from .sunbeam_node import SunbeamNode, until_ok, wait_for

pytestmark = pytest.mark.realnet

URL_BLOCK = re.compile(r"To authenticate, visit:\n\n\t(\S+)\n")


class Lines:
    """A running ``sunbeam-ctl`` whose output is read line by line with timeouts."""

    def __init__(self, node: SunbeamNode, *args: str) -> None:
        # SIGINT as at a terminal (coreutils env resets it): a suite started in the background
        # of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and the ctl would then
        # ignore our Ctrl-C too (two fresh-clone runs started that way hung here)
        self.proc = subprocess.Popen(node.refnet["exec_prefix"] + ["env", "--default-signal=INT", "sunbeam-ctl", *args],
                                     env=node.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search("".join(self.seen))
            if m:
                return m
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
        m = pattern.search("".join(self.seen))
        assert m, f"{pattern.pattern!r} not printed within {timeout}s:\n{''.join(self.seen)}"
        return m

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # evidence for a hang: what it printed, and where it and its children sit
            ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etime,args", "--ppid", str(self.proc.pid),
                                 "-p", str(self.proc.pid)], check=False, capture_output=True, text=True).stdout
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sunbeam-ctl did not exit within {timeout}s; it printed:\n{''.join(self.seen)}"
                                 f"\nprocesses:\n{ps}") from None
        while (line := self.lines.get(timeout=5)) is not None:
            self.seen.append(line)
        return code, "".join(self.seen)


def hs(refnet: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(refnet["headscale_cli"] + list(args), capture_output=True, text=True, timeout=60,
                          check=False)


def hs_node(refnet: dict, hostname: str) -> dict | None:
    out = hs(refnet, "nodes", "list", "-o", "json")
    assert out.returncode == 0, out.stderr
    return next((n for n in json.loads(out.stdout) if n["given_name"] == hostname), None)


def admin_registers(refnet: dict, url: str) -> None:
    """What the admin does with the URL: ``headscale auth register --auth-id <id> --user U``
    (0.29's name for the deprecated ``nodes register --user U --key <id>``; U: the user's name)."""
    assert url.startswith(f"{refnet['control_url']}/register/"), url
    auth_id = url.rsplit("/", 1)[1]
    res = hs(refnet, "auth", "register", "--auth-id", auth_id, "--user", "refnet")
    assert res.returncode == 0, res.stdout + res.stderr


def expired_at_server(node: dict) -> bool:
    expiry = node.get("expiry") or {}
    seconds = expiry.get("seconds") if isinstance(expiry, dict) else None
    return seconds is not None and 0 < int(seconds) <= time.time()


def peer_view(peer: dict, hostname: str) -> dict | None:
    out = subprocess.run(peer["tailscale_cli"] + ["status", "--json"], capture_output=True, text=True, timeout=30,
                         check=True)
    return next((p for p in (json.loads(out.stdout).get("Peer") or {}).values() if p["HostName"] == hostname), None)


def pids(node: SunbeamNode) -> dict[str, int]:
    return {s["service"]: s["pid"] for s in node.status().get("services", [])}


@pytest.fixture()
def make_node(refnet):
    """``make_node(hostname, key=...)``: a node of its own name (each test's nodes stay in
    Headscale's list); ``key=False``: its context has no auth key."""
    made: list[SunbeamNode] = []

    def make(hostname: str, *, key: bool) -> SunbeamNode:
        n = SunbeamNode(refnet, hostname=hostname)
        if not key:
            n.env.pop("SUNBEAM_AUTH_KEY")
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def test_interactive_login_then_reconnect_then_expiry_and_login_again(refnet, make_node):
    node = make_node("sb-login", key=False)
    login = Lines(node, "login")
    url = login.until(URL_BLOCK, 60).group(1)
    control = node.control()
    assert (control["state"], control["auth_url"]) == ("NeedsLogin", url)
    assert "not registered" in node.ctl("status").stdout
    assert hs_node(refnet, "sb-login") is None  # nothing registered before the admin acts
    time.sleep(2)  # the followup long poll waits for the admin, not for a timeout
    assert login.proc.poll() is None
    admin_registers(refnet, url)
    code, out = login.finish(60)
    assert code == 0, out + node.log()[-3000:]
    assert re.search(r"^Connected \(100\.64\.\d+\.\d+, fd7a:", out, re.MULTILINE), out
    registered = hs_node(refnet, "sb-login")
    assert registered is not None and registered["online"] is True
    first = node.control()
    assert first["state"] == "Running" and first["peers"] >= 2

    # keys and registration persist: the next connect needs no login
    assert node.ctl("stop").returncode == 0
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0 and "To authenticate" not in res.stdout, res.stdout + res.stderr
    assert node.control()["node_id"] == first["node_id"]

    # the admin expires the node: status says so, the peers go from our netmap, and a login
    # brings it back without restarting any service
    before = pids(node)
    assert hs(refnet, "nodes", "expire", "-i", str(registered["id"])).returncode == 0
    expired = node.wait_state("NeedsLogin", timeout=20)
    assert expired["reason"] == "needs login: node key expired" and expired["peers"] == 0
    assert "needs login: node key expired" in node.ctl("status").stdout
    stopped = node.ctl("ping", refnet["peers"][0]["name"], "-c", "1")  # data to peers stopped
    assert stopped.returncode == 1 and "no peer called" in stopped.stdout, stopped.stdout
    relogin = Lines(node, "login")
    url2 = relogin.until(URL_BLOCK, 30).group(1)
    assert url2 != url
    admin_registers(refnet, url2)
    code, out = relogin.finish(60)
    assert code == 0, out + node.log()[-3000:]
    back = node.wait_state("Running", timeout=20)
    assert back["node_id"] == first["node_id"] and back["peers"] >= 2
    assert pids(node) == before
    assert not expired_at_server(hs_node(refnet, "sb-login") or {})


def test_login_json_gives_the_url_and_ctrl_c_leaves_nothing_running_and_a_later_register_counts(refnet,
                                                                                                 make_node):
    node = make_node("sb-json", key=False)
    connect = Lines(node, "connect", "--json")
    m = connect.until(re.compile(r"^(\{.*\"AuthURL\".*\})$", re.MULTILINE), 60)
    line = json.loads(m.group(1))
    assert line["BackendState"] == "NeedsLogin"
    assert line["AuthURL"].startswith(f"{refnet['control_url']}/register/")
    connect.proc.send_signal(signal.SIGINT)
    code, out = connect.finish(60)
    assert code != 0, out
    assert running(node.rundir) is None, out  # no supervisord, no live service socket
    assert not list(node.rundir.glob("*.sock")), list(node.rundir.glob("*"))
    assert hs_node(refnet, "sb-json") is None
    # the admin registers the URL later: the next connect finds the node registered
    admin_registers(refnet, line["AuthURL"])
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0 and "To authenticate" not in res.stdout, res.stdout + res.stderr + node.log()[-2000:]
    assert (hs_node(refnet, "sb-json") or {}).get("online") is True


def test_logout_seen_by_server_and_real_peer_then_connect_needs_a_key(refnet, make_node):
    node = make_node("sb-logout", key=True)
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    peer = refnet["peers"][0]
    wait_for(lambda: (peer_view(peer, "sb-logout") or {}).get("Online"), 20, "a real peer sees us online")

    res = node.ctl("logout", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    assert "Logged out." in res.stdout and "Daemon acknowledged shutdown." in res.stdout
    assert running(node.rundir) is None
    at_server = hs_node(refnet, "sb-logout")
    assert at_server is not None and expired_at_server(at_server), at_server
    wait_for(lambda: not (hs_node(refnet, "sb-logout") or {}).get("online"), 20, "offline at the server")

    def peer_dropped_us():  # tailscaled 1.98 shows us Expired at once (and sends nothing to us)
        seen = peer_view(peer, "sb-logout")
        return seen is None or seen.get("Expired")

    wait_for(peer_dropped_us, 30, "the real peer shows us expired (or gone)")

    # without a key the next connect needs a login (Ctrl-C it) ...
    key = node.env.pop("SUNBEAM_AUTH_KEY")
    connect = Lines(node, "connect")
    connect.until(URL_BLOCK, 60)
    connect.proc.send_signal(signal.SIGINT)
    code, _out = connect.finish(60)
    assert code != 0 and running(node.rundir) is None
    # ... and with the (reusable) key it connects again, as the same node
    node.env["SUNBEAM_AUTH_KEY"] = key
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    assert node.control()["node_id"] == at_server["id"]
    assert not expired_at_server(hs_node(refnet, "sb-logout") or {})


def test_expiry_with_a_reusable_key_login_brings_it_back(refnet, make_node):
    node = make_node("sb-expiry", key=True)
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    before = pids(node)
    ours = hs_node(refnet, "sb-expiry")
    assert ours is not None
    assert hs(refnet, "nodes", "expire", "-i", str(ours["id"])).returncode == 0
    node.wait_state("NeedsLogin", timeout=20)
    time.sleep(2)
    assert node.control()["state"] == "NeedsLogin"  # no login on its own: the admin meant it
    res = node.ctl("login", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    assert "To authenticate" not in res.stdout  # the context's key did it
    assert node.control()["state"] == "Running" and pids(node) == before
    assert not expired_at_server(hs_node(refnet, "sb-expiry") or {})


def test_a_peer_whose_key_expired_is_shown_expired_and_not_sent_to(refnet, make_node):
    from sunbeam.refnet import network

    node = make_node("sb-peers", key=True)
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    entry = network.add_peer(refnet["name"], ephemeral=True, log=lambda m: None)
    name = entry["name"]

    def row():
        out = node.ctl("peers", "--json")
        return next((r for r in json.loads(out.stdout or "[]") if r["name"] == name), None)

    wait_for(row, 20, "the new peer in our netmap")
    ok = until_ok(lambda: node.ctl("ping", name, "-c", "1"), 30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    theirs = hs_node(refnet, name)
    assert theirs is not None
    assert hs(refnet, "nodes", "expire", "-i", str(theirs["id"])).returncode == 0
    gone = wait_for(lambda: (r := row()) and r["expired"] and r, 20, "the peer shown expired")
    assert gone["addresses"] == entry["ips"]  # still listed, as what it was
    table = node.ctl("peers").stdout
    assert re.search(rf"^{re.escape(name)}\s+\S+.*\bexpired\b", table, re.MULTILINE), table
    res = node.ctl("ping", name, "-c", "2")
    assert res.returncode == 1, res.stdout
    assert row()["tx_bytes"] == gone["tx_bytes"]  # nothing went to it
    assert node.control()["state"] == "Running"  # the other peers are not concerned
    subprocess.run(entry["tailscale_cli"] + ["logout"], capture_output=True, timeout=60, check=False)


def test_a_login_waiting_through_a_headscale_restart_gets_and_shows_a_new_url(refnet, make_node):
    from sunbeam.refnet import network

    node = make_node("sb-restart", key=False)
    login = Lines(node, "login")
    url = login.until(URL_BLOCK, 60).group(1)
    # Headscale keeps pending registrations in memory: after its restart our followup, sent
    # again on the new connection, is answered with a new URL, which is shown
    network.restart_headscale(refnet["name"], down_for=2.0)
    two = re.compile(URL_BLOCK.pattern + r"[\s\S]*" + URL_BLOCK.pattern)
    url2 = login.until(two, 60).group(2)
    assert url2 != url and node.control()["auth_url"] == url2
    assert url2 in node.ctl("status").stdout  # status shows where to log in
    admin_registers(refnet, url2)
    code, out = login.finish(60)
    assert code == 0, out + node.log()[-3000:]
    assert node.control()["state"] == "Running"


def test_expiry_with_a_spent_single_use_key_falls_back_to_an_interactive_login(refnet, make_node):
    out = hs(refnet, "preauthkeys", "create", "--user", str(refnet["user_id"]), "--expiration", "1h", "-o", "json")
    assert out.returncode == 0, out.stderr
    node = make_node("sb-oneoff", key=True)
    node.env["SUNBEAM_AUTH_KEY"] = json.loads(out.stdout)["key"]
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    ours = hs_node(refnet, "sb-oneoff")
    assert ours is not None
    assert hs(refnet, "nodes", "expire", "-i", str(ours["id"])).returncode == 0
    node.wait_state("NeedsLogin", timeout=20)
    login = Lines(node, "login")
    url = login.until(URL_BLOCK, 30).group(1)  # the key is spent: Headscale refuses it for an expired node
    reason = node.control()["reason"]
    assert reason.startswith("needs login: node key expired") and url in reason, reason
    admin_registers(refnet, url)
    code, text = login.finish(60)
    assert code == 0, text + node.log()[-3000:]
    assert node.control()["node_id"] == ours["id"]


def test_a_key_expiry_set_for_later_stops_the_node_when_it_passes(refnet, make_node):
    node = make_node("sb-later", key=True)
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    ours = hs_node(refnet, "sb-later")
    assert ours is not None
    when = time.time() + 6
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    assert hs(refnet, "nodes", "expire", "-i", str(ours["id"]), "--expiry", stamp).returncode == 0
    time.sleep(3)
    assert node.control()["state"] == "Running"  # not yet
    expired = node.wait_state("NeedsLogin", timeout=15)
    assert expired["reason"] == "needs login: node key expired" and expired["since"] < when + 3
    res = node.ctl("login", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr + node.log()[-2000:]
    assert node.control()["state"] == "Running"
