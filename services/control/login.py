"""Which RegisterRequest to send next, and what a register answer means (no I/O here).

`LoginFlow` decides, the client (client.py) sends and shows::

    start ──► RESUME (registered before) ──► authorized ──► map stream
      │          │ needs login (unknown node, key expired, logged out)
      ▼          ▼
    AUTH_KEY (the context has one) ───────► authorized
      │ (no key, or a re-login whose key the server refused)
      ▼
    RESUME once (even without the marker) ──► authorized, or Headscale's AuthURL for an
      │ unknown node key (followed as below), or NodeKeyExpired:
      ▼
    INTERACTIVE ──► AuthURL: NeedsLogin(auth_url), Followup=AuthURL (long poll) ──► authorized

The marker-less RESUME finds a node an admin registered while no followup waited (the
user pressed Ctrl-C at the URL and the admin registered it later, or the service
restarted): Headscale would answer an INTERACTIVE request with a new URL instead.

A followup answered with a new URL means Headscale no longer holds the pending login: it
restarted, the login expired, or an admin registered the node while no followup waited
(Headscale then forgets the login and answers the next followup with a new URL). So a
RESUME comes first: authorized if the admin did register us, else (an unknown node key)
Headscale answers it with a fresh URL, which is the one shown and followed.

While the node runs, an expired own node (`expired_while_running`) or a logout stops it
there: NeedsLogin without a URL, nothing sent, until ``sunbeam-ctl login`` (`login`). The
auth key is then used again (Headscale re-validates it for an expired node: a reusable,
unexpired key passes); if refused, the flow falls back to INTERACTIVE. At start (``sunbeam-ctl
connect``) a login is allowed at once: the user asked to connect.

Owned by the control service's loop thread.
"""

from __future__ import annotations

from enum import Enum

import msgspec

from .calls import Attempt, RegisterOutcome

NOT_REGISTERED = "needs login: this node is not registered"
KEY_EXPIRED = "needs login: node key expired"
LOGGED_OUT = "needs login: logged out"


class Verdict(str, Enum):
    AUTHORIZED = "authorized"  # start the map stream
    NEXT = "next"  # send `LoginFlow.next_attempt()` on this connection
    SHOW_URL = "show url"  # NeedsLogin with `LoginFlow.auth_url`, then send the followup
    WAIT = "wait"  # NeedsLogin without URL: close, send nothing until `login()`
    ERROR = "error"  # Error(reason): the user must change something


class Decision(msgspec.Struct, frozen=True):
    verdict: Verdict
    reason: str = ""


class LoginFlow:
    def __init__(self, *, registered: bool, has_auth_key: bool) -> None:
        self.registered = registered
        """The server knew us last time (the ``registered`` marker in the state dir)."""
        self.has_auth_key = has_auth_key
        self.may_login = True
        """A login may start without the user: false after our key expired or we logged out."""
        self.key_expired = False
        self.key_refused = False
        """A re-login's auth key was refused: go interactive."""
        self.logged_out = False
        self.auth_url = ""
        """The pending interactive login's URL ("" = none)."""
        self.verify_first = False
        """A followup came back with a new URL: RESUME before following it."""
        self.resume_refused = False
        """A RESUME said the server does not know us as a valid node."""
        self.why = NOT_REGISTERED if not registered else ""

    def next_attempt(self) -> Attempt | None:
        """The register request to send on a new connection; None: wait for `login`."""
        if self.verify_first:
            return Attempt.RESUME
        if self.auth_url:
            return Attempt.INTERACTIVE
        if self.registered and not self.key_expired:
            return Attempt.RESUME
        if not self.may_login:
            return None
        if self.has_auth_key and not self.key_refused:
            return Attempt.AUTH_KEY
        if not self.resume_refused and not self.key_expired and not self.logged_out:
            return Attempt.RESUME
        return Attempt.INTERACTIVE

    def on_outcome(self, attempt: Attempt, outcome: RegisterOutcome) -> Decision:
        if attempt is Attempt.RESUME:
            self.verify_first = False
        if outcome.authorized:
            self.registered, self.key_expired, self.key_refused, self.logged_out = True, False, False, False
            self.auth_url, self.why = "", ""
            return Decision(Verdict.AUTHORIZED)
        if outcome.auth_url and attempt is Attempt.RESUME and self.has_auth_key and not self.key_refused \
                and self.may_login:
            self.registered, self.resume_refused = False, True  # unknown to the server: the key, not a URL
            return Decision(Verdict.NEXT, self.why or NOT_REGISTERED)
        if outcome.auth_url:
            self.verify_first = attempt is Attempt.INTERACTIVE and bool(self.auth_url)
            self.auth_url = outcome.auth_url
            return Decision(Verdict.SHOW_URL, self.why or NOT_REGISTERED)
        if outcome.needs_login:
            self.registered, self.resume_refused = False, True
            if outcome.key_expired:
                self.key_expired = True
            self.why = KEY_EXPIRED if self.key_expired else self.why or NOT_REGISTERED
            return Decision(Verdict.NEXT if self.may_login else Verdict.WAIT, self.why)
        reason = outcome.error or "registration failed"
        if attempt is Attempt.AUTH_KEY and (self.key_expired or self.logged_out):
            self.key_refused = True  # a re-login: the user can still log in interactively
            return Decision(Verdict.NEXT, f"{self.why}; {reason}")
        if attempt is Attempt.INTERACTIVE:
            self.auth_url = ""  # the next login starts a new one
        return Decision(Verdict.ERROR, reason)

    def expired_while_running(self) -> None:
        self.key_expired, self.may_login, self.why = True, False, KEY_EXPIRED

    def on_logged_out(self) -> None:
        self.registered, self.logged_out, self.may_login, self.auth_url, self.why = False, True, False, "", LOGGED_OUT

    def login(self) -> None:
        """``sunbeam-ctl login``: a login may start now."""
        self.may_login = True
        self.key_refused = False
        self.resume_refused = False
