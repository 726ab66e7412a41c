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

# connect with Popen replaced: print what is imported when supervisord's interpreter is
# started (held, heldsupervisord.py) and when it is let go (supervisord starts), stop there
PROBE = textwrap.dedent("""
    import json, os, subprocess, sys
    class Go:
        def write(self, line):
            print(json.dumps({"at": "release", "line": json.loads(line), "modules": sorted(sys.modules)}), flush=True)
            os._exit(0)
    class Held:
        stdin = Go()
    def spawn(cmd, **kw):
        print(json.dumps({"at": "spawn", "cmd": cmd, "modules": sorted(sys.modules)}), flush=True)
        return Held()
    subprocess.Popen = spawn
    from sunbeam.ctl.cli import main
    sys.exit(main(["--config", sys.argv[1], "connect"]))
""")


def test_the_ctl_socket_is_the_ctl_channel(tmp_path):
    assert client.CTL_NAME == CTL.name
    assert client.CTL_SUFFIX == CTL.name.format(service="") + ".sock"
    assert client.ctl_path(tmp_path, "control") == CTL.path(tmp_path, service="control")


def test_connect_starts_supervisord_before_the_heavy_imports(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[contexts.t]\ncontrol_url = "http://127.0.0.1:9"\nauth_key = "k"\n'
                   f'runtime_dir = "{tmp_path / "run"}"\n')
    res = subprocess.run([sys.executable, "-c", PROBE, str(cfg)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    seen = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [s["at"] for s in seen] == ["spawn", "release"], res.stdout + res.stderr
    spawn, release = seen
    # supervisord's interpreter starts before the config is even imported...
    assert spawn["cmd"][1:] == ["-m", "sunbeam.ctl.heldsupervisord"]
    assert "sunbeam.shared.config" not in spawn["modules"] and "msgspec" not in spawn["modules"]
    # ...and becomes supervisord once the checks passed, before the rest is imported
    assert release["line"]["conf"].endswith("supervisord.conf")
    assert release["line"]["env"]["SUNBEAM_RUNTIME_DIR"] == str(tmp_path / "run")
    assert "sunbeam.shared.runtime.portcheck" in release["modules"]  # the checks ran
    early = [m for m in NOT_BEFORE_SPAWN if m in release["modules"]]
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
