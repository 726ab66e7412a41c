"""The control service's request bodies and how it reads answers (no network)."""

from __future__ import annotations

import json

import pytest

from sunbeam.services.control.calls import (
    Identity,
    interpret_register,
    lite_update_request,
    map_stream_request,
    register_request,
)
from sunbeam.services.control.serverkey import ServerKeyError, parse_key_response
from sunbeam.services.control.state import State, check_transition
from sunbeam.shared.keys import KeyPair, NodeKeys


@pytest.fixture()
def me():
    keys = NodeKeys(*(KeyPair.from_private(bytes([i]) * 32) for i in (1, 2, 3)))
    return Identity(keys=keys, capability_version=130, hostname="laptop", ephemeral=True, preferred_derp=999)


def test_register_request_carries_node_key_hostinfo_and_auth(me):
    body = json.loads(register_request(me, "hskey-auth-x"))
    assert body["Version"] == 130
    assert body["NodeKey"] == me.keys.node_public_text
    assert body["Auth"] == {"AuthKey": "hskey-auth-x"}
    assert body["Ephemeral"] is True
    assert body["Hostinfo"]["Hostname"] == "laptop" and body["Hostinfo"]["OS"] == "linux"
    assert body["Hostinfo"]["NetInfo"]["PreferredDERP"] == 999
    assert "Auth" not in json.loads(register_request(me, None))


def test_lite_update_and_stream_requests(me):
    lite = json.loads(lite_update_request(me))
    assert lite["OmitPeers"] is True and "Stream" not in lite  # Stream false is omitted, as Go does
    assert lite["DiscoKey"] == me.keys.disco_public_text  # the bug the original client had
    stream = json.loads(map_stream_request(me))
    assert stream["Stream"] is True and stream["Compress"] == "zstd" and stream["KeepAlive"] is True
    assert stream["DiscoKey"] == me.keys.disco_public_text and "OmitPeers" not in stream


@pytest.mark.parametrize("status,body,sent,expect", [
    (200, b'{"MachineAuthorized":true,"Login":{"LoginName":"alice"}}', True, "authorized"),
    (200, b'{"MachineAuthorized":true}', False, "authorized"),
    (401, b"invalid pre auth key\n", True, "error:auth key rejected by the control server (HTTP 401: invalid pre auth key)"),
    (401, b"node exists with a different machine key", False, "needs_key"),
    (200, b'{"AuthURL":"http://x/register/abc"}', True, "error:the server wants an interactive login"),
    (200, b'{"Error":"key expired"}', True, "error:auth key rejected: key expired"),
    (200, b'{"NodeKeyExpired":true}', False, "needs_key"),
    (500, b"internal server error", True, "error:registration failed (HTTP 500: internal server error)"),
    (200, b"\xff not json", True, "error:malformed register response"),
])
def test_interpret_register(status, body, sent, expect):
    out = interpret_register(status, body, sent_auth_key=sent)
    if expect == "authorized":
        assert out.authorized and not out.error
    elif expect == "needs_key":
        assert out.needs_login and not out.error and not out.authorized
    else:
        assert out.error and out.error.startswith(expect.split(":", 1)[1]), out.error


def test_server_key_parsing():
    key = "mkey:" + "ab" * 32
    assert parse_key_response(json.dumps({"publicKey": key, "legacyPublicKey": key}).encode()) == bytes.fromhex("ab" * 32)
    assert parse_key_response(json.dumps({"PublicKey": key}).encode()) == bytes.fromhex("ab" * 32)
    for bad in (b"<html>", b"[]", b'{"publicKey": "mkey:zz"}', b'{"other": 1}', b"\xff"):
        with pytest.raises(ServerKeyError) as err:
            parse_key_response(bad)
        assert not err.value.permanent


def test_state_machine_transitions():
    check_transition(State.STARTING, State.REGISTERING)
    check_transition(State.RUNNING, State.RECONNECTING)
    check_transition(State.RECONNECTING, State.REGISTERING)
    with pytest.raises(AssertionError):
        check_transition(State.ERROR, State.RUNNING)  # an Error waits for the user
    with pytest.raises(AssertionError):
        check_transition(State.STOPPED, State.STARTING)
