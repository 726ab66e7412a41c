"""What the control service asks the server, and how it reads the answers (no I/O here).

The sequence on every connection (ts:control/tsp/{register,map}.go mirrored)::

    POST /machine/register   RegisterRequest: NodeKey, Hostinfo, Ephemeral, and
                             Auth.AuthKey unless this node registered before (then Auth
                             is omitted, which Headscale answers with the node's state)
    POST /machine/map        lite update: Stream false, OmitPeers true, DiscoKey,
                             Hostinfo (NetInfo.PreferredDERP), Endpoints -> empty 200.
                             Headscale stores the DiscoKey from this (the original client
                             skipped it and peers saw discokey:000...)
    POST /machine/map        Stream true, Compress zstd, KeepAlive true -> the map stream

RegisterRequest kinds (`Attempt`; ts:control/controlclient/direct.go doLogin, Headscale
hscontrol/auth.go handleRegister)::

    RESUME       Auth omitted: "I registered before". Headscale answers with the node's
                 state: authorized, or NodeKeyExpired (expired or logged out)
    AUTH_KEY     Auth.AuthKey: register (or re-register an expired node) with a pre-auth key
    INTERACTIVE  Auth {} (present, no key) -> AuthURL (".../register/<auth id>"); then the
                 same request with Followup=AuthURL, a long poll the server answers when an
                 admin ran ``headscale auth register --auth-id <id> --user U``. Auth is sent
                 (empty) rather than omitted because Headscale answers an Auth-less request
                 for a known but expired node key with NodeKeyExpired instead of a URL;
                 tailscale gets past that by making a new node key, which would mean
                 restarting our WireGuard workers, so we keep the node key and send Auth {}
    LOGOUT       Expiry in the past (tailscale sends time.Unix(123, 0)): Headscale expires
                 the node (deletes an ephemeral one)

Registration outcomes: authorized; needs a login (RESUME refused: the node is unknown,
expired or logged out); a login URL to show and follow; or a permanent error (rejected
key, an auth key answered with an AuthURL): the service shows the reason and does not
retry on its own.
"""

from __future__ import annotations

import platform
from enum import Enum

import msgspec
from sunbeam.shared.keys import NodeKeys
from sunbeam.shared.proto.tailcfg import (
    BadControlMessage,
    Hostinfo,
    MapRequest,
    NetInfo,
    RegisterRequest,
    RegisterResponseAuth,
    decode_register_response,
    encode_json,
)

VERSION = "0.1.0"
REGISTER_PATH = "/machine/register"
MAP_PATH = "/machine/map"
LOGOUT_EXPIRY = "1970-01-01T00:02:03Z"  # time.Unix(123, 0), what tailscale sends to log out


class Attempt(str, Enum):
    RESUME = "resume"
    AUTH_KEY = "auth key"
    INTERACTIVE = "interactive"
    LOGOUT = "logout"


class Identity(msgspec.Struct, frozen=True):
    """What we say about ourselves; fixed for a connection except ``preferred_derp``."""

    keys: NodeKeys
    capability_version: int
    hostname: str
    ephemeral: bool
    preferred_derp: int = 0
    endpoints: tuple[str, ...] = ()

    def hostinfo(self) -> Hostinfo:
        return Hostinfo(
            ipn_version=f"sunbeam-{VERSION}", os="linux", os_version=platform.release(), hostname=self.hostname,
            go_arch=platform.machine(), app="sunbeam", userspace=True, no_logs_no_support=True,
            net_info=NetInfo(preferred_derp=self.preferred_derp) if self.preferred_derp else None,
        )


def register_request(me: Identity, auth_key: str | None, *, interactive: bool = False, followup: str = "",
                     logout: bool = False) -> bytes:
    """RESUME (no key), AUTH_KEY (``auth_key``), INTERACTIVE (``interactive``, with the
    ``followup`` URL the server gave) or LOGOUT (``logout``)."""
    if auth_key:
        auth: RegisterResponseAuth | None = RegisterResponseAuth(auth_key=auth_key)
    else:
        auth = RegisterResponseAuth() if interactive else None
    return encode_json(RegisterRequest(
        version=me.capability_version, node_key=me.keys.node_public_text, hostinfo=me.hostinfo(),
        auth=auth, ephemeral=me.ephemeral, followup=followup or None,
        expiry=LOGOUT_EXPIRY if logout else None,
    ))


def lite_update_request(me: Identity) -> bytes:
    return encode_json(MapRequest(
        version=me.capability_version, node_key=me.keys.node_public_text, disco_key=me.keys.disco_public_text,
        hostinfo=me.hostinfo(), endpoints=list(me.endpoints) or None, stream=False, omit_peers=True,
        read_only=False,
    ))


def map_stream_request(me: Identity) -> bytes:
    return encode_json(MapRequest(
        version=me.capability_version, node_key=me.keys.node_public_text, disco_key=me.keys.disco_public_text,
        hostinfo=me.hostinfo(), endpoints=list(me.endpoints) or None, stream=True, keep_alive=True,
        compress="zstd",
    ))


class RegisterOutcome(msgspec.Struct, frozen=True):
    authorized: bool = False
    needs_login: bool = False
    """RESUME refused: the server does not know the node key, or it expired."""
    key_expired: bool = False
    auth_url: str = ""
    """INTERACTIVE: show this, then follow it up."""
    error: str | None = None
    """Set for permanent failures: the user has to change something."""
    user: str = ""


def interpret_register(status: int, body: bytes, *, sent_auth_key: bool, interactive: bool = False) -> RegisterOutcome:
    """What a /machine/register answer means for an AUTH_KEY (``sent_auth_key``),
    INTERACTIVE (``interactive``) or RESUME (neither) request."""
    text = body[:500].decode(errors="replace").strip()
    resume = not sent_auth_key and not interactive
    if status in (401, 403):
        if resume:
            return RegisterOutcome(needs_login=True)
        what = "auth key rejected by the control server" if sent_auth_key else "login refused by the control server"
        return RegisterOutcome(error=f"{what} (HTTP {status}: {text or 'no reason'})")
    if status != 200:
        what = "rejected" if sent_auth_key and 400 <= status < 500 else "failed"
        return RegisterOutcome(error=f"registration {what} (HTTP {status}: {text or 'no reason'})")
    try:
        resp = decode_register_response(body)
    except BadControlMessage as exc:
        return RegisterOutcome(error=f"malformed register response: {exc}")
    if resp.error:
        if resume:
            return RegisterOutcome(needs_login=True)
        if interactive:
            return RegisterOutcome(error=f"login failed: {resp.error}")
        return RegisterOutcome(error=f"auth key rejected: {resp.error}")
    if resp.node_key_expired:
        if sent_auth_key:
            return RegisterOutcome(error="node key expired and the auth key did not renew it")
        if interactive:
            return RegisterOutcome(error="node key expired and the login did not renew it")
        return RegisterOutcome(needs_login=True, key_expired=True)
    if resp.machine_authorized:
        return RegisterOutcome(authorized=True, user=resp.login.login_name if resp.login else "")
    if resp.auth_url:
        if sent_auth_key:
            return RegisterOutcome(error=f"the server wants an interactive login ({resp.auth_url}) and ignored the "
                                         "auth key; remove auth_key from the context and run `sunbeam-ctl login`")
        return RegisterOutcome(auth_url=resp.auth_url)
    if resume:
        return RegisterOutcome(needs_login=True)
    if interactive:
        return RegisterOutcome(error="the server neither authorized this node nor gave a login URL")
    return RegisterOutcome(error="the server did not authorize this node (is the auth key valid for this tailnet?)")
