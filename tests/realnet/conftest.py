"""Fixtures that bring up the real reference network (Headscale + tailscaled in a netns).

These tests never skip: without root or without the reference binaries they fail loudly,
because a green run that silently skipped the real network would prove nothing.
"""

from __future__ import annotations

import os

import pytest

from sunbeam.refnet import network


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("real-network tests need root (network namespaces); run them as root", pytrace=False)


def _network(prefix: str, derp_only: bool, tls: bool = False):
    _require_root()
    name = f"{prefix}-{os.getpid()}"
    info = network.up(2, name=name, derp_only=derp_only, tls=tls, log=lambda m: print(f"[refnet] {m}"))
    yield info
    network.down(name)


@pytest.fixture(scope="session")
def refnet():
    """Two tailscaled peers, direct paths allowed."""
    yield from _network("sbtest", derp_only=False)


@pytest.fixture(scope="session")
def refnet_derp():
    """Two tailscaled peers that may only talk through the embedded DERP server."""
    yield from _network("sbderp", derp_only=True)


@pytest.fixture(scope="session")
def refnet_tls():
    """Headscale over HTTPS with a throwaway CA (``info["ca_file"]``), DERP over TLS on the
    same port; two tailscaled peers that trust the CA and may only talk through DERP."""
    yield from _network("sbtls", derp_only=True, tls=True)


@pytest.fixture(scope="session")
def refnet_hosts():
    """Two tailscaled peers in namespace A, made for a second host (``up(..., hosts=True)``,
    see sunbeam.refnet.topology): Headscale on 10.77.0.1:8080 (also 10.77.0.11), direct paths
    and DERP both allowed. Attach the host with `split_host` / `nat_host`."""
    _require_root()
    name = f"sbhost-{os.getpid()}"
    info = network.up(2, name=name, derp_only=False, hosts=True, log=lambda m: print(f"[refnet] {m}"))
    yield info
    network.down(name)


@pytest.fixture(scope="session")
def refnet_gateway():
    """One tailscaled peer in A, and a real tailscaled "gateway" in its own namespace that
    advertises 192.168.77.0/24 and an exit node, both approved; behind it a LAN host and an
    "internet" host nothing in A reaches without the tunnel (sunbeam.refnet.gateway)."""
    from sunbeam.refnet import gateway

    _require_root()
    name = f"sbgw-{os.getpid()}"
    info = network.up(1, name=name, derp_only=False, hosts=True, log=lambda m: print(f"[refnet] {m}"))
    try:
        gateway.attach(info, log=lambda m: print(f"[refnet] {m}"))
        yield info
    finally:
        network.down(name)


def _attached(info: dict, kind: str):
    from sunbeam.refnet import topology

    host = topology.attach(info, kind)
    try:
        yield host
    finally:
        topology.detach(info)


@pytest.fixture
def split_host(refnet_hosts):
    """Namespace B on the same link as A: B is 10.77.0.2, control http://10.77.0.11:8080."""
    yield from _attached(refnet_hosts, "split")


@pytest.fixture
def nat_host(refnet_hosts):
    """Namespace B (10.88.0.2) behind router R, which masquerades it as 10.77.0.3 toward A."""
    yield from _attached(refnet_hosts, "nat")
