"""Register request kinds and the login flow's decisions (sans-IO; Headscale's answers as
hscontrol/auth.go gives them)."""

from __future__ import annotations

import json

import pytest
from sunbeam.services.control.calls import (
    Attempt,
    Identity,
    interpret_register,
    register_request,
)
from sunbeam.services.control.login import (
    KEY_EXPIRED,
    LOGGED_OUT,
    NOT_REGISTERED,
    LoginFlow,
    Verdict,
)
from sunbeam.services.control.state import State, check_transition
from sunbeam.shared.keys import KeyPair, NodeKeys

URL = "http://127.0.0.1:8080/register/AbCdEf123"
URL_ANSWER = json.dumps({"AuthURL": URL}).encode()
AUTHORIZED = b'{"MachineAuthorized":true,"User":{"ID":1},"Login":{"LoginName":"refnet"}}'


@pytest.fixture
def me() -> Identity:
    keys = NodeKeys(KeyPair.generate(), KeyPair.generate(), KeyPair.generate())
    return Identity(keys=keys, capability_version=106, hostname="sb", ephemeral=False)


def test_request_kinds(me):
    resume = json.loads(register_request(me, None))
    assert "Auth" not in resume and "Followup" not in resume and "Expiry" not in resume
    first = json.loads(register_request(me, None, interactive=True))
    assert first["Auth"] == {} and "Followup" not in first  # present but empty: see calls.py
    follow = json.loads(register_request(me, None, interactive=True, followup=URL))
    assert follow["Auth"] == {} and follow["Followup"] == URL and follow["NodeKey"] == me.keys.node_public_text
    out = json.loads(register_request(me, None, logout=True))
    assert out["Expiry"] == "1970-01-01T00:02:03Z" and "Auth" not in out


def answer(body: bytes, attempt: Attempt, status: int = 200):
    return interpret_register(status, body, sent_auth_key=attempt is Attempt.AUTH_KEY,
                              interactive=attempt is Attempt.INTERACTIVE)


def test_interactive_answers():
    assert answer(URL_ANSWER, Attempt.INTERACTIVE).auth_url == URL
    assert answer(AUTHORIZED, Attempt.INTERACTIVE).authorized
    assert answer(b'{"Error":"registration timed out"}', Attempt.INTERACTIVE).error == \
        "login failed: registration timed out"
    expired = answer(b'{"NodeKeyExpired":true,"MachineAuthorized":true}', Attempt.RESUME)
    assert expired.needs_login and expired.key_expired


def test_first_login_without_key_resumes_then_follows_the_url():
    flow = LoginFlow(registered=False, has_auth_key=False)
    assert flow.next_attempt() is Attempt.RESUME  # an admin may have registered us already
    d = flow.on_outcome(Attempt.RESUME, answer(URL_ANSWER, Attempt.RESUME))  # Headscale: unknown key
    assert d.verdict is Verdict.SHOW_URL and d.reason == NOT_REGISTERED and flow.auth_url == URL
    assert flow.next_attempt() is Attempt.INTERACTIVE  # the followup, on a new connection too
    d = flow.on_outcome(Attempt.INTERACTIVE, answer(AUTHORIZED, Attempt.INTERACTIVE))
    assert d.verdict is Verdict.AUTHORIZED and flow.registered and not flow.auth_url
    assert flow.next_attempt() is Attempt.RESUME  # the next start needs no login


def test_resume_refused_at_start_logs_in_with_the_key():
    flow = LoginFlow(registered=True, has_auth_key=True)
    assert flow.next_attempt() is Attempt.RESUME
    d = flow.on_outcome(Attempt.RESUME, answer(b'{"NodeKeyExpired":true}', Attempt.RESUME))
    assert d.verdict is Verdict.NEXT and d.reason == KEY_EXPIRED and not flow.registered
    assert flow.next_attempt() is Attempt.AUTH_KEY


def test_expiry_while_running_waits_for_login_then_uses_the_key_then_interactive():
    flow = LoginFlow(registered=True, has_auth_key=True)
    flow.on_outcome(Attempt.RESUME, answer(AUTHORIZED, Attempt.RESUME))
    flow.expired_while_running()
    assert flow.next_attempt() is None and flow.why == KEY_EXPIRED  # no login without the user
    flow.login()
    assert flow.next_attempt() is Attempt.AUTH_KEY
    d = flow.on_outcome(Attempt.AUTH_KEY, answer(b'{"Error":"authkey expired"}', Attempt.AUTH_KEY))
    assert d.verdict is Verdict.NEXT and "authkey expired" in d.reason  # a spent key: log in by hand
    assert flow.next_attempt() is Attempt.INTERACTIVE


def test_logout_waits_and_a_first_connect_with_a_bad_key_is_an_error():
    flow = LoginFlow(registered=True, has_auth_key=False)
    flow.on_logged_out()
    assert flow.next_attempt() is None and flow.why == LOGGED_OUT
    flow.login()
    assert flow.next_attempt() is Attempt.INTERACTIVE
    fresh = LoginFlow(registered=False, has_auth_key=True)
    d = fresh.on_outcome(Attempt.AUTH_KEY, answer(b"invalid pre auth key", Attempt.AUTH_KEY, status=401))
    assert d.verdict is Verdict.ERROR and "invalid pre auth key" in d.reason


def test_needs_login_transitions():
    for old, new in [(State.REGISTERING, State.NEEDS_LOGIN), (State.NEEDS_LOGIN, State.RUNNING),
                     (State.RUNNING, State.NEEDS_LOGIN), (State.NEEDS_LOGIN, State.REGISTERING),
                     (State.NEEDS_LOGIN, State.RECONNECTING), (State.NEEDS_LOGIN, State.STOPPED)]:
        check_transition(old, new)
    with pytest.raises(AssertionError):
        check_transition(State.ERROR, State.NEEDS_LOGIN)


def test_a_followup_answered_with_a_new_url_checks_first_whether_the_admin_registered_us():
    flow = LoginFlow(registered=False, has_auth_key=False)
    flow.on_outcome(Attempt.INTERACTIVE, answer(URL_ANSWER, Attempt.INTERACTIVE))
    url2 = URL + "2"
    d = flow.on_outcome(Attempt.INTERACTIVE, answer(json.dumps({"AuthURL": url2}).encode(), Attempt.INTERACTIVE))
    assert d.verdict is Verdict.SHOW_URL and flow.auth_url == url2
    assert flow.next_attempt() is Attempt.RESUME  # registered while no followup waited?
    assert flow.on_outcome(Attempt.RESUME, answer(AUTHORIZED, Attempt.RESUME)).verdict is Verdict.AUTHORIZED
    # not registered: Headscale answers the RESUME of an unknown key with a fresh URL, followed as usual
    flow = LoginFlow(registered=False, has_auth_key=False)
    flow.on_outcome(Attempt.INTERACTIVE, answer(URL_ANSWER, Attempt.INTERACTIVE))
    flow.on_outcome(Attempt.INTERACTIVE, answer(json.dumps({"AuthURL": url2}).encode(), Attempt.INTERACTIVE))
    url3 = URL + "3"
    d = flow.on_outcome(Attempt.RESUME, answer(json.dumps({"AuthURL": url3}).encode(), Attempt.RESUME))
    assert d.verdict is Verdict.SHOW_URL and flow.auth_url == url3 and flow.next_attempt() is Attempt.INTERACTIVE


def test_a_node_the_server_forgot_uses_the_key_not_the_url_headscale_offers():
    flow = LoginFlow(registered=True, has_auth_key=True)
    d = flow.on_outcome(Attempt.RESUME, answer(URL_ANSWER, Attempt.RESUME))
    assert d.verdict is Verdict.NEXT and not flow.auth_url and flow.next_attempt() is Attempt.AUTH_KEY


def test_without_key_a_resume_comes_once_then_interactive():
    flow = LoginFlow(registered=False, has_auth_key=False)
    d = flow.on_outcome(Attempt.RESUME, answer(b'{"NodeKeyExpired":true}', Attempt.RESUME))
    assert d.verdict is Verdict.NEXT and flow.next_attempt() is Attempt.INTERACTIVE
