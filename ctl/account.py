"""`sunbeam-ctl login` and `sunbeam-ctl logout`.

login [--json] [--timeout S]
    Not running: ``connect`` (which shows the login URL when the node must log in, and
    waits for the admin). Running: a `LoginRequest` on the control service's account
    socket (services/control/account.py): with the context's auth key if it has one, else
    interactively; the URL is printed as ``tailscale up`` prints it, and the command waits
    until the VPN is Running again (Ctrl-C stops waiting; the services keep running).
    ``--json``: one JSON object per line, ``{"BackendState": "NeedsLogin", "AuthURL": URL}``
    for a URL and ``{"BackendState": "Running", ...}`` (or ``"error"``) at the end.

logout
    A `LogoutRequest`: the control service tells the server (the node's key expires there;
    peers see it go), then every service stops, as for ``stop``. The keys stay, but the next
    ``connect`` needs the auth key or a login again.

Exit codes: 0 done; 1 not running, refused, or failed; 130 interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from ..shared.config import Context
from ..shared.messages.codec import BadMessage
from ..shared.messages.netmap import ControlStatus
from . import daemon

LOGIN_POLL = 0.1
LOGOUT_TIMEOUT = 20.0


def _ask(rundir: Path, request: Any, timeout: float) -> Any:
    """An `AccountReply`, or None when the control service did not answer."""
    from ..shared.channels import CONTROL_ACCOUNT
    from ..shared.messages.account import ACCOUNT_REPLY_CODEC, ACCOUNT_REQUEST_CODEC

    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    sock.connect(CONTROL_ACCOUNT.endpoint(rundir))
    try:
        sock.send(ACCOUNT_REQUEST_CODEC.encode(request))
        return ACCOUNT_REPLY_CODEC.decode(sock.recv())
    except (zmq.Again, BadMessage):
        return None
    finally:
        sock.close()


def _json_line(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _status_json(status: ControlStatus) -> dict[str, Any]:
    return {"BackendState": status.state, "addresses": [a.split("/")[0] for a in status.addresses],
            "peers": status.peers}


def login(ctx: Context, *, config: str | None, as_json: bool, timeout: float) -> int:
    rundir = ctx.runtime_dir
    say: Callable[[str], None] = (lambda _line: None) if as_json else print
    show_url: Callable[[str], None] = ((lambda url: _json_line({"BackendState": "NeedsLogin", "AuthURL": url}))
                                       if as_json else daemon.show_auth_url)
    done: Callable[[ControlStatus], None] = ((lambda st: _json_line(_status_json(st))) if as_json
                                             else (lambda st: print(daemon.connected_line(st))))
    if not rundir.is_dir() or daemon.running(rundir) is None:
        code = daemon.connect(ctx, config=config, foreground=False, timeout=timeout, say=say, on_auth_url=show_url,
                              on_connected=done)
        if code and as_json:
            _json_line({"BackendState": "Stopped", "error": "connect failed (run without --json for the cause)"})
        return code
    from ..shared.messages.account import LoginRequest

    reply = _ask(rundir, LoginRequest(), timeout=5.0)
    if reply is None or not reply.ok:
        why = reply.message if reply is not None else "the control service did not answer"
        _json_line({"error": why}) if as_json else print(f"sunbeam-ctl: login: {why}")
        return 1
    return _wait_running(rundir, timeout, say, show_url, done)


def _wait_running(rundir: Path, timeout: float, say: Callable[[str], None], show_url: Callable[[str], None],
                  done: Callable[[ControlStatus], None]) -> int:
    """Until Running; the timeout counts only while no login URL is pending."""
    deadline = time.monotonic() + timeout
    shown_url, shown_state = "", ""
    try:
        while time.monotonic() < deadline:
            status = daemon.control_status(rundir)
            if status is None:
                say("sunbeam-ctl: the control service does not answer")
                return 1
            if status.state == "Running":
                done(status)
                return 0
            if status.state == "Error":
                say(f"Login failed: {status.reason}")
                return 1
            if status.auth_url:
                if status.auth_url != shown_url:
                    shown_url = status.auth_url
                    show_url(shown_url)
                deadline = time.monotonic() + timeout
            elif status.state != shown_state:
                reason = f" ({status.reason})" if status.reason else ""
                say(f"  control: {status.state}{reason}")
            shown_state = status.state
            time.sleep(LOGIN_POLL)
    except KeyboardInterrupt:
        return 130
    say(f"not logged in within {timeout:g}s (control: {shown_state})")
    return 1


def logout(rundir: Path) -> int:
    from ..shared.messages.account import LogoutRequest

    if not rundir.is_dir() or daemon.running(rundir) is None:
        print("sunbeam-ctl: VPN: not running (start it with `sunbeam-ctl connect` to log out)")
        return 1
    reply = _ask(rundir, LogoutRequest(), timeout=LOGOUT_TIMEOUT)
    if reply is None or not reply.ok:
        print(f"sunbeam-ctl: {reply.message if reply is not None else 'the control service did not answer'}")
        return 1
    print("Logged out.")
    return daemon.stop(rundir)
