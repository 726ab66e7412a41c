"""What `sunbeam-ctl connect` imports before it starts supervisord (issue 20 item 4).

The ctl starts supervisord as soon as the config is read and the checks passed; zmq,
msgspec's message types, supervisor's XML-RPC client and the other commands' modules are
imported after, while supervisord starts. These tests fail when an import creeps back in
front of the spawn, or when a lazy export of ``sunbeam.shared.runtime`` stops resolving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from sunbeam.ctl import client
from sunbeam.shared import runtime
from sunbeam.shared.channels import CTL

# loaded by the time supervisord is spawned, each costs milliseconds the user waits for
NOT_BEFORE_SPAWN = ("zmq", "xmlrpc.client", "importlib.metadata", "sunbeam.shared.channels",
                    "sunbeam.shared.messages", "sunbeam.shared.runtime.loop", "sunbeam.shared.runtime.batching",
                    "sunbeam.ctl.account", "sunbeam.ctl.status", "sunbeam.ctl.peers", "sunbeam.ctl.lookup",
                    "sunbeam.ctl.exitnode", "sunbeam.ctl.watch", "dataclasses")

# connect with Popen replaced: print what is imported when supervisord would start, stop there
PROBE = textwrap.dedent("""
    import json, os, subprocess, sys
    def spawn(cmd, **kw):
        print(json.dumps({"cmd": cmd, "modules": sorted(sys.modules)}), flush=True)
        os._exit(0)
    subprocess.Popen = spawn
    from sunbeam.ctl.cli import main
    sys.exit(main(["--config", sys.argv[1], "connect"]))
""")


def test_the_ctl_socket_is_the_ctl_channel(tmp_path):
    assert client.CTL_NAME == CTL.name
    assert client.CTL_SUFFIX == CTL.name.format(service="") + ".sock"
    assert client.ctl_path(tmp_path, "control") == CTL.path(tmp_path, service="control")


def test_connect_spawns_supervisord_before_the_heavy_imports(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[contexts.t]\ncontrol_url = "http://127.0.0.1:9"\nauth_key = "k"\n'
                   f'runtime_dir = "{tmp_path / "run"}"\n')
    res = subprocess.run([sys.executable, "-c", PROBE, str(cfg)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert lines, res.stdout + res.stderr  # the probe saw the spawn
    seen = json.loads(lines[-1])
    assert "supervisor.supervisord" in seen["cmd"]
    early = [m for m in NOT_BEFORE_SPAWN if m in seen["modules"]]
    assert early == [], f"imported before supervisord starts: {early}"


def test_a_runtime_export_loads_only_its_module():
    code = ("import sys; from sunbeam.shared.runtime import Secret; "
            "print(sorted(m for m in ('zmq', 'msgspec', 'sunbeam.shared.runtime.loop') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res


@pytest.mark.parametrize("name", runtime.__all__)
def test_every_runtime_export_is_its_modules_object(name):
    import importlib

    value = getattr(runtime, name)
    module = importlib.import_module(f"sunbeam.shared.runtime.{runtime._WHERE[name]}")
    assert value is getattr(module, name)
    assert name in dir(runtime)


def test_runtime_exports_are_exactly_all():
    assert sorted(runtime._WHERE) == sorted(runtime.__all__)
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = runtime.NoSuchName
