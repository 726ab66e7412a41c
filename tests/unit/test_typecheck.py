"""mypy over ``sunbeam.shared``, ``sunbeam.services`` and ``sunbeam.ctl``: no error (issue 19).

The folders install under the ``sunbeam.`` namespace through setuptools' package-dir
mapping, which mypy cannot follow through an editable install's import hook; so the test
lays out ``<tmp>/sunbeam/{shared,services,ctl}`` as symlinks to this checkout and points
MYPYPATH there, and relative and absolute imports resolve to the same modules. The
configuration ([tool.mypy] in pyproject.toml) checks untyped functions everywhere and the
TCP core with --strict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_shared_and_services_type_check_clean(tmp_path):
    pkg = tmp_path / "sunbeam"
    pkg.mkdir()
    for part in ("shared", "services", "ctl"):
        (pkg / part).symlink_to(ROOT / part)
    env = dict(os.environ, MYPYPATH=str(tmp_path))
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "-p", "sunbeam.shared", "-p", "sunbeam.services",
         "-p", "sunbeam.ctl"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    assert "Success: no issues found" in res.stdout
