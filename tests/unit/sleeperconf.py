"""The smallest supervisord configuration the ctl's supervisord tests need: its socket and
files in one directory, one long-running program (``sleeper``)."""

from __future__ import annotations


def sleeper_conf(directory: str) -> str:
    """``directory``: a path, or supervisord's ``%(ENV_NAME)s`` form (expanded by supervisord)."""
    return f"""\
[supervisord]
nodaemon=true
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
childlogdir={directory}

[unix_http_server]
file={directory}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:sleeper]
command=sleep 60
startsecs=0
"""
