"""The environment the lifecycle tests run sunbeam in: private runtime and state dirs, 2
WireGuard workers, and a control URL where nothing listens (127.0.0.1:9), so the services
run but the VPN never comes up."""

from __future__ import annotations

import os

import pytest


@pytest.fixture()
def env(tmp_path):
    rundir = tmp_path / "run"
    e = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    e.update(
        SUNBEAM_RUNTIME_DIR=str(rundir), SUNBEAM_WG_WORKERS="2", SUNBEAM_CONTROL_URL="http://127.0.0.1:9",
        SUNBEAM_AUTH_KEY="tskey-unit-test-secret", SUNBEAM_STATE_DIR=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
    )
    rundir.mkdir(mode=0o700)
    return e
