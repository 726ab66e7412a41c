"""A context from the environment alone, for tests of sunbeam-ctl commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def env_only_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SUNBEAM_* from the caller, no config file; a control URL and dirs under ``tmp_path``."""
    for var in [v for v in os.environ if v.startswith("SUNBEAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("SUNBEAM_CONTROL_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SUNBEAM_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("SUNBEAM_STATE_DIR", str(tmp_path / "state"))
