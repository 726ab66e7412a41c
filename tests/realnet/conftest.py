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


def _network(prefix: str, derp_only: bool):
    _require_root()
    name = f"{prefix}-{os.getpid()}"
    info = network.up(2, name=name, derp_only=derp_only, log=lambda m: print(f"[refnet] {m}"))
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
