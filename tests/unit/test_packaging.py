"""The design card's layout installs under one namespace, `sunbeam.*`, and nothing else."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"ctl": "sunbeam.ctl", "shared": "sunbeam.shared", "services": "sunbeam.services", "refnet": "sunbeam.refnet"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for top, dotted in MAPPED.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([dotted, *rel.parts]))
    assert found == listed


def test_no_top_level_shared_or_services():
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {v: k for k, v in MAPPED.items()}
    for name in _pyproject()["tool"]["setuptools"]["packages"]:
        assert name.startswith("sunbeam.")


def test_console_scripts_resolve():
    scripts = _pyproject()["project"]["scripts"]
    assert {"sunbeam-ctl", "sunbeam-refnet", "sunbeam-control", "sunbeam-derp", "sunbeam-udp", "sunbeam-wg",
            "sunbeam-proxy"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_chosen_dependencies_declared():
    deps = " ".join(_pyproject()["project"]["dependencies"])
    for dep in ("pyzmq", "pynacl", "cryptography", "h2", "zstandard", "msgspec", "supervisor"):
        assert dep in deps


def test_the_wheel_carries_supervisord_conf(tmp_path):
    """`sunbeam-ctl connect` runs the package's supervisord.conf; a wheel must ship the
    top-level file's exact bytes (shared/supervisord.conf is a symlink to it)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from sunbeam.ctl.daemon import supervisord_conf

    assert supervisord_conf().read_bytes() == (ROOT / "supervisord.conf").read_bytes()
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    wheel = next(tmp_path.glob("sunbeam-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert z.read("sunbeam/shared/supervisord.conf") == (ROOT / "supervisord.conf").read_bytes()


def test_supervisord_conf_runs_services_with_its_own_python():
    """Each program runs `<python> -m sunbeam.services.<name>.main` through an absolute
    /bin/sh (nothing looked up on PATH), and each such module runs main() as __main__."""
    import configparser
    import shlex

    conf = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"))  # as supervisor reads it
    conf.read(ROOT / "supervisord.conf")
    programs = [s.removeprefix("program:") for s in conf.sections() if s.startswith("program:")]
    assert set(programs) == {"control", "derp", "udp", "wg", "proxy"}
    for name in programs:
        argv = shlex.split(conf.get(f"program:{name}", "command"))
        assert argv[:2] == ["/bin/sh", "-c"], argv
        wait, _, command = argv[2].rpartition("; exec ")  # all but control first wait for control's socket
        assert (wait == "") == (name == "control") and "control-ctl.sock" in (wait or "control-ctl.sock"), argv
        command = command if wait else argv[2].removeprefix("exec ")
        assert command.startswith('"${SUNBEAM_PYTHON:-') and "/proc/$PPID/cmdline" in command, argv
        assert f" -m sunbeam.services.{name}.main" in argv[2], argv
        source = (ROOT / "services" / name / "main.py").read_text()
        assert 'if __name__ == "__main__":' in source, f"services/{name}/main.py has no __main__ guard"
