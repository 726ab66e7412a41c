"""ctl/routing.py: ``whois``, ``exit-node list`` and ``peers`` use the routing settings the
running proxy reports in its `StatusReply`, and the config's only when it does not answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq
from sunbeam.ctl import cli, exitnode
from sunbeam.ctl.client import ctl_path
from sunbeam.ctl.routing import proxy_routing, routes_in_use
from sunbeam.shared.config import load_config
from sunbeam.shared.messages.ctl import (
    CTL_REPLY_CODEC,
    CTL_REQUEST_CODEC,
    RoutingSettings,
    ServiceHealth,
    StatusReply,
    StatusRequest,
)

from .ctlenv import env_only_context
from .test_ctl_exitnode import NETMAP


class FakeProxy:
    """A REP socket at the proxy's ctl path answering every `StatusRequest` with ``routing``."""

    def __init__(self, rundir: Path, routing_: RoutingSettings | None) -> None:
        rundir.mkdir(parents=True, exist_ok=True)
        self.sock = zmq.Context.instance().socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"ipc://{ctl_path(rundir, 'proxy')}")
        self.routing = routing_
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        health = ServiceHealth(service="proxy", pid=1, state="running", started_at=0.0, counters={})
        while not self.stop.is_set():
            if self.sock.poll(20):
                assert isinstance(CTL_REQUEST_CODEC.decode(self.sock.recv()), StatusRequest)
                self.sock.send(CTL_REPLY_CODEC.encode(StatusReply(health=health, routing=self.routing)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture()
def ctx_env(monkeypatch, tmp_path):
    env_only_context(monkeypatch, tmp_path)
    monkeypatch.setenv("SUNBEAM_EXIT_NODE", "backup")
    monkeypatch.setenv("SUNBEAM_ACCEPT_ROUTES", "true")
    monkeypatch.setattr(exitnode, "fetch_netmap", lambda rundir: NETMAP)
    return tmp_path / "run"


def _ctx():
    return load_config(None, need_auth=False)


def test_without_a_running_proxy_the_config_is_used(ctx_env):
    assert proxy_routing(ctx_env) is None
    assert routes_in_use(ctx_env, _ctx()) == (True, "backup", None, None)
    assert routes_in_use(ctx_env, None) == (False, None, None, None)


def test_a_stale_proxy_socket_or_a_silent_proxy_falls_back_without_hanging(ctx_env, monkeypatch):
    ctx_env.mkdir(parents=True)
    left = socket.socket(socket.AF_UNIX)  # a socket file left by a killed run: nobody listens
    left.bind(str(ctl_path(ctx_env, "proxy")))
    left.close()
    assert proxy_routing(ctx_env) is None
    ctl_path(ctx_env, "proxy").unlink()
    silent = zmq.Context.instance().socket(zmq.REP)  # bound, never answers
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(f"ipc://{ctl_path(ctx_env, 'proxy')}")
    try:
        t0 = time.monotonic()
        assert proxy_routing(ctx_env, timeout=0.2) is None
        assert time.monotonic() - t0 < 2.0
    finally:
        silent.close()


def test_the_running_proxys_settings_win_and_the_difference_is_said(ctx_env):
    proxy = FakeProxy(ctx_env, RoutingSettings(accept_routes=True, exit_node="gateway"))
    try:
        used = routes_in_use(ctx_env, _ctx())
        assert (used.accept_routes, used.exit_node) == (True, "gateway")
        assert used.note == ("(the running proxy uses exit_node = 'gateway'; the config now says "
                             "exit_node = 'backup': restart to apply)")
        assert routes_in_use(ctx_env, None).note is None  # no config: nothing to compare with
    finally:
        proxy.close()


def test_an_older_proxy_without_routing_falls_back_to_the_config(ctx_env):
    proxy = FakeProxy(ctx_env, None)
    try:
        assert routes_in_use(ctx_env, _ctx()) == (True, "backup", None, None)
    finally:
        proxy.close()


def test_exit_node_list_reports_the_exit_node_in_use(ctx_env, capsys):
    proxy = FakeProxy(ctx_env, RoutingSettings(accept_routes=False, exit_node="100.64.0.3"))
    try:
        assert cli.main(["exit-node", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].split() == ["100.64.0.3", "gw-box", "yes", "yes"]
        assert lines[3] == "in use: gw-box (100.64.0.3), exit_node = '100.64.0.3'"
        assert lines[4] == ("(the running proxy uses exit_node = '100.64.0.3', accept_routes = false; the config "
                            "now says exit_node = 'backup', accept_routes = true: restart to apply)")
        assert cli.main(["exit-node", "list", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["configured"] == "backup" and doc["running_exit_node"] == "100.64.0.3"
        assert doc["in_use"] == "gateway.tail.example" and doc["problem"] is None
    finally:
        proxy.close()

