"""`sunbeam-ctl` on a new user's unhappy paths: no config, a closed pipe, unknown names,
exposed listeners, another user's runtime directory; and --version / supervisord-conf."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sunbeam.shared.config import load_config
from sunbeam.ctl import cli
from sunbeam.ctl.daemon import exposed_listeners
from sunbeam.ctl.output import ReaderGone
from sunbeam.ctl.peers import close_matches, find_peer
from sunbeam.shared.netmap import Netmap, Peer


@pytest.fixture()
def no_config(tmp_path, monkeypatch):
    """A user with no config file anywhere and a private runtime base."""
    for var in [v for v in os.environ if v.startswith("SUNBEAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return tmp_path


def _env_of(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    return env


# -- no config: the commands that only look say "not running" -----------------------------------

def test_status_without_config_says_not_running(no_config, capsys):
    assert cli.main(["status"]) == 1
    out = capsys.readouterr()
    assert out.out.strip() == "VPN: not running" and "config error" not in out.err


def test_status_json_without_config_is_json(no_config, capsys):
    assert cli.main(["status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["running"] is False


def test_stop_without_config_has_nothing_to_stop(no_config, capsys):
    assert cli.main(["stop"]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_peers_json_without_config_prints_json(no_config, capsys):
    assert cli.main(["peers", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out) == [] and "not running" in out.err


def test_ping_without_config_says_not_running(no_config, capsys):
    assert cli.main(["ping", "peer-1"]) == 1
    assert "VPN: not running" in capsys.readouterr().out


def test_connect_without_config_is_a_config_error(no_config, capsys):
    assert cli.main(["connect"]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and err.count("\n") == 1


def test_a_broken_config_is_still_a_config_error(no_config, capsys):
    cfg = no_config / "cfg" / "sunbeam"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text("[contexts.home\n")
    assert cli.main(["status"]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_permission_denied_is_one_line():
    """Run as an unprivileged user against a runtime dir only root may enter."""
    if os.geteuid() != 0:
        pytest.fail("this test switches to an unprivileged uid and needs root", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="sb-perm-"))  # /tmp: nobody can reach it (pytest's tmp_path is 0700)
    try:
        os.chmod(base, 0o755)
        private = base / "rootonly"
        (private / "run").mkdir(mode=0o700, parents=True)
        os.chmod(private, 0o700)
        # import first: root's Python installation may not be readable by nobody
        # (the config and `status` are imported when the command runs, shutil by argparse's
        # formatter: import them too)
        code = ("import os, sys, shutil, supervisor.xmlrpc, sunbeam.shared.config, sunbeam.ctl.status; "
                "from sunbeam.ctl.cli import main; "
                "os.setgid(65534); os.setuid(65534); sys.exit(main(['status']))")
        env = _env_of(base / "home") | {"SUNBEAM_RUNTIME_DIR": str(private / "run"), "SUNBEAM_CONTROL_URL": "http://x"}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(base)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "permission denied" in res.stderr and "runtime_dir" in res.stderr


def test_an_unreadable_home_is_a_config_error_not_a_traceback(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test switches to an unprivileged uid and needs root", pytrace=False)
    # import first: root's Python installation may not be readable by nobody (argparse's
    # formatter imports shutil when the parser is built; a site hook may have loaded it already)
    code = ("import os, sys, shutil, sunbeam.shared.config; from sunbeam.ctl.cli import main; "
            "os.setgid(65534); os.setuid(65534); sys.exit(main(['status']))")
    res = subprocess.run([sys.executable, "-c", code], env=_env_of(tmp_path / "home"), capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    assert "cannot look for the config file: Permission denied" in res.stderr


# -- output to a reader that went away -----------------------------------------------------------

def test_reader_gone_keeps_going_silently():
    r, w = os.pipe()
    os.close(r)  # nobody reads: every write is EPIPE
    stream = os.fdopen(w, "w")
    out = ReaderGone(stream)
    assert out.write("first line\n") == len("first line\n")
    assert out.gone
    out.write("more\n")
    out.flush()
    stream.close()  # the descriptor now leads to /dev/null: closing flushes without error


@pytest.mark.parametrize("args", [["--help"], ["status"], ["status", "--json"], ["supervisord-conf"]])
def test_closed_stdout_gives_no_traceback_and_the_same_exit_code(tmp_path, args):
    env = _env_of(tmp_path)
    expected = subprocess.run([sys.executable, "-m", "sunbeam.ctl.cli", *args], env=env,
                              capture_output=True, timeout=30).returncode
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([sys.executable, "-m", "sunbeam.ctl.cli", *args], env=env, stdout=w,
                             stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(w)
    assert res.returncode == expected
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr and "Exception ignored" not in res.stderr


# -- small things a new user notices --------------------------------------------------------------

def test_version_and_supervisord_conf(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("sunbeam ")
    assert cli.main(["supervisord-conf"]) == 0
    conf = Path(capsys.readouterr().out.strip())
    assert conf.is_absolute() and conf.is_file() and "[program:control]" in conf.read_text()


def test_every_option_has_help():
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if a.dest == "cmd")
    for name, sub in [("sunbeam-ctl", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"


def test_a_listener_other_machines_can_reach_is_warned_about(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[contexts.t]\ncontrol_url = "http://127.0.0.1:8080"\nauth_key = "k"\n'
                   '[[contexts.t.listeners]]\nkind = "socks5"\nlisten = "0.0.0.0:1080"\n'
                   '[[contexts.t.listeners]]\nkind = "http"\nlisten = "127.0.0.1:3128"\n'
                   '[[contexts.t.listeners]]\nkind = "forward"\nlisten = "[::]:8080"\ntarget = "peer:80"\n'
                   '[[contexts.t.listeners]]\nkind = "forward"\nlisten = "[::1]:8081"\ntarget = "peer:80"\n')
    warnings = exposed_listeners(load_config(cfg, env={}))
    assert len(warnings) == 2
    assert "socks5 listener on 0.0.0.0:1080" in warnings[0] and "[::]:8080" in warnings[1]


# -- ping: an unknown name ------------------------------------------------------------------------

def _peer(n: int, host: str) -> Peer:
    return Peer(id=n, key=f"nodekey:{n:064x}", hostname=host, name=f"{host}.tail.example.",
                addresses=(f"100.64.0.{n}/32",))


NETMAP = Netmap(peers=(_peer(1, "laptop"), _peer(2, "build-server"), _peer(3, "build-box")))


@pytest.mark.parametrize("typed, suggested", [
    ("latpop", ["laptop"]),
    ("build", ["build-box", "build-server"]),
    ("Build-Servr", ["build-server"]),
    ("laptp", ["laptop"]),
    ("100.64.0.4", ["100.64.0.1", "100.64.0.2", "100.64.0.3"]),
    ("printer", []),
])
def test_close_matches(typed, suggested):
    assert find_peer(NETMAP, typed) is None
    assert sorted(close_matches(NETMAP, typed)) == sorted(suggested)


def test_connect_forgets_exactly_the_last_runs_counts(tmp_path):
    from sunbeam.services.wg.statsfile import STATS_GLOB
    from sunbeam.ctl.daemon import PER_RUN_FILES, forget_last_run

    assert STATS_GLOB in PER_RUN_FILES
    keep = ["wg-0-ctl.sock", "wg-0.log", "control.log", "supervisord.out"]
    gone = ["wg-0.stats", "wg-1.stats", "wg-1.stats.tmp"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    forget_last_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
