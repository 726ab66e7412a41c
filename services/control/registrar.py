"""The control client's registration, login and logout: sends what `LoginFlow` decides.

On each TS2021 connection `send_register` posts the RegisterRequest `LoginFlow` chooses
(calls.py names the kinds). An AuthURL puts the service in NeedsLogin with the URL and
follows it up on the same connection: a long poll with no idle limit but
``LOGIN_POLL_TIMEOUT`` (after which the connection is renewed and the same URL followed
again, so a server that vanished silently is noticed). Authorized: the ``registered``
marker in the state dir (so the next start RESUMEs without auth key or login) and the map
stream.

An own node the map shows expired (``headscale nodes expire``), or whose KeyExpiry passes
(a timer: the server need not say so), or a logout, ends the
connection, removes every peer from the published netmap (so the WireGuard workers stop
sending to them) and waits for ``sunbeam-ctl login`` (`AccountServer`). The node key
stays: WireGuard keeps its key, and login brings the node back without restarting a
service.

Owned by the control service's loop thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sunbeam.shared.messages.account import AccountReply, AccountRequest, LoginRequest
from sunbeam.shared.netmap import SelfNode
from sunbeam.shared.proto.tailcfg import MapResponse, decode_register_response

from . import calls
from .account import Respond
from .calls import Attempt
from .expiry import is_expired, key_expiry
from .login import KEY_EXPIRED, LOGGED_OUT, LoginFlow, Verdict
from .state import State

if TYPE_CHECKING:
    from .client import ControlClient

LOGIN_POLL_TIMEOUT = 600.0  # renew a followup long poll that long without an answer
LOGOUT_TIMEOUT = 10.0
FOLLOWUP_PAUSE = 1.0  # before following a URL that a followup answered with (a server's loop cannot spin us)
EXPIRY_RECHECK = 3600.0  # a key expiring later than this is looked at again then


class Registrar:
    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.marker = client.ctx.state_dir / "registered"
        self.flow = LoginFlow(registered=self.marker.exists(), has_auth_key=bool(client.ctx.auth_key.reveal()))
        self._logout_reply: Respond | None = None
        self._logout_timer: Any = None
        self._expiry_timer: Any = None

    @property
    def waiting_for_login(self) -> bool:
        """Nothing to send until ``sunbeam-ctl login``."""
        return self.flow.next_attempt() is None

    def wait_for_login(self, reason: str) -> None:
        """Close the connection, drop the peers, NeedsLogin without URL."""
        c = self.client
        self._cancel_expiry_timer()
        c.close_connection()
        self.clear_peers()
        c.pub.set_state(State.NEEDS_LOGIN, reason)

    def clear_peers(self) -> None:
        c = self.client
        ids = [p.id for p in c.builder.snapshot().peers]
        if ids:
            change = c.builder.apply(MapResponse(peers_removed=ids))
            if change is not None:
                c.pub.publish_change(change, c.builder)

    # -- register -------------------------------------------------------------------------

    def send_register(self) -> None:
        c = self.client
        attempt = self.flow.next_attempt()
        if attempt is None:
            return self.wait_for_login(self.flow.why)
        key = c.ctx.auth_key.reveal() if attempt is Attempt.AUTH_KEY else None
        followup = self.flow.auth_url if attempt is Attempt.INTERACTIVE else ""
        body = calls.register_request(c.me, key if isinstance(key, str) else None,
                                      interactive=attempt is Attempt.INTERACTIVE, followup=followup)
        if followup:
            # the URL in the reason too: `sunbeam-ctl status` shows it
            c.pub.set_state(State.NEEDS_LOGIN, f"{self.flow.why}; visit {self.flow.auth_url}",
                            auth_url=self.flow.auth_url)
            c.arm_idle(LOGIN_POLL_TIMEOUT, "no answer to the login's followup for too long")
        c.log.info("register", attempt=attempt.value, followup=bool(followup))
        c.call(calls.REGISTER_PATH, body, lambda status, data: self._on_registered(attempt, followup, status, data))

    def _on_registered(self, attempt: Attempt, followup: str, status: int, body: bytes) -> None:
        c = self.client
        outcome = calls.interpret_register(status, body, sent_auth_key=attempt is Attempt.AUTH_KEY,
                                           interactive=attempt is Attempt.INTERACTIVE)
        decision = self.flow.on_outcome(attempt, outcome)
        if not self.flow.registered:
            self.marker.unlink(missing_ok=True)
        if decision.verdict is Verdict.AUTHORIZED:
            self.marker.write_text("registered\n")
            c.log.info("registered", user=outcome.user, node_key=c.me.keys.node_public_text, attempt=attempt.value)
            return c.start_map()
        if decision.verdict is Verdict.ERROR:
            return c.fail_permanently(decision.reason)
        if decision.verdict is Verdict.WAIT:
            return self.wait_for_login(decision.reason)
        if decision.verdict is Verdict.SHOW_URL:
            c.log.info("login_url", url=self.flow.auth_url)
            if followup:  # the pending login is gone at the server: RESUME first (login.py), after a pause
                conn = c.conn
                c.loop.call_later(FOLLOWUP_PAUSE, lambda: self._follow_again(conn))
                return None
        else:
            c.log.info("register_again", attempt=attempt.value, reason=decision.reason)
        self.send_register()

    def _follow_again(self, conn: object) -> None:
        if self.client.conn is conn and conn is not None:
            self.send_register()
            self.client.flush()

    def on_own_node(self, node: SelfNode) -> bool:
        """The map's view of us changed: an expired node key stops everything until a
        login (True: the connection is closed); a key expiring later is watched."""
        self._cancel_expiry_timer()
        if self._logout_reply is not None:
            return False
        now = time.time()
        if is_expired(node, now):
            self.client.log.warning("key_expired", node_key=self.client.me.keys.node_public_text,
                                    key_expiry=node.key_expiry)
            self.flow.expired_while_running()
            self.wait_for_login(KEY_EXPIRED)
            return True
        when = key_expiry(node)
        if when is not None:
            self._expiry_timer = self.client.loop.call_later(min(when - now, EXPIRY_RECHECK), self._expiry_due)
        return False

    def _expiry_due(self) -> None:
        self._expiry_timer = None
        node = self.client.builder.snapshot().self_node
        if node is not None and self.client.pub.state is not State.ERROR:
            self.on_own_node(node)  # connected or not: an expired key needs a login either way

    def _cancel_expiry_timer(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    # -- the account socket ---------------------------------------------------------------

    def on_account(self, req: AccountRequest, respond: Respond) -> None:
        c = self.client
        state = c.pub.state
        if isinstance(req, LoginRequest):
            if state is State.RUNNING:
                return respond(AccountReply(ok=True, message="already logged in", state=state.value))
            if state is State.ERROR:
                return respond(AccountReply(ok=False, message=f"control error: {c.pub.reason}; run `sunbeam-ctl "
                                            "stop`, fix it, then `sunbeam-ctl login`", state=state.value))
            self.flow.login()
            if c.conn is None and c.sock is None and state is State.NEEDS_LOGIN:
                c.log.info("login_requested")
                c.loop.call_later(0, c.connect)
            return respond(AccountReply(ok=True, message=self.flow.auth_url or "logging in", state=state.value))
        # LogoutRequest
        if self._logout_reply is not None:
            return respond(AccountReply(ok=False, message="a logout is already under way", state=state.value))
        if state is State.NEEDS_LOGIN and c.conn is None:
            self.flow.on_logged_out()
            self.marker.unlink(missing_ok=True)
            c.pub.set_state(State.NEEDS_LOGIN, LOGGED_OUT)
            return respond(AccountReply(ok=True, message="not logged in at the server", state=state.value))
        if state is not State.RUNNING or c.conn is None:
            return respond(AccountReply(ok=False, message=f"not connected to the control server ({state.value}); "
                                        "cannot log out", state=state.value))
        self._logout_reply = respond
        c.log.info("logout")
        c.call(calls.REGISTER_PATH, calls.register_request(c.me, None, logout=True), self._on_logout)
        c.flush()
        self._logout_timer = c.loop.call_later(LOGOUT_TIMEOUT, lambda: self._logout_failed("no answer from the server"))

    def _on_logout(self, status: int, body: bytes) -> None:
        error = f"HTTP {status}" if status != 200 else ""
        if not error:
            try:
                error = decode_register_response(body).error
            except ValueError as exc:
                error = f"malformed answer: {exc}"
        if error:
            return self._logout_failed(error)
        respond = self._take_logout()
        self.flow.on_logged_out()
        self.marker.unlink(missing_ok=True)
        self.client.log.info("logged_out")
        self.wait_for_login(LOGGED_OUT)
        if respond is not None:
            respond(AccountReply(ok=True, message="logged out", state=State.NEEDS_LOGIN.value))

    def _logout_failed(self, why: str) -> None:
        respond = self._take_logout()
        if respond is not None:
            self.client.log.warning("logout_failed", reason=why)
            respond(AccountReply(ok=False, message=f"logout failed: {why}", state=self.client.pub.state.value))

    def connection_closed(self) -> None:
        if self._logout_reply is not None:
            self._logout_failed("the connection to the control server ended")

    def _take_logout(self) -> Respond | None:
        respond, self._logout_reply = self._logout_reply, None
        if self._logout_timer is not None:
            self._logout_timer.cancel()
            self._logout_timer = None
        return respond
