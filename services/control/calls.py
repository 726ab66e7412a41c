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

Registration outcomes: authorized; needs the auth key (re-register with it); or a
permanent error (rejected/expired key, node key expired, interactive login demanded):
the service shows the reason and does not retry on its own.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Identity:
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


def register_request(me: Identity, auth_key: str | None) -> bytes:
    return encode_json(RegisterRequest(
        version=me.capability_version, node_key=me.keys.node_public_text, hostinfo=me.hostinfo(),
        auth=RegisterResponseAuth(auth_key=auth_key) if auth_key else None, ephemeral=me.ephemeral,
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


@dataclass(frozen=True)
class RegisterOutcome:
    authorized: bool = False
    needs_auth_key: bool = False
    error: str | None = None
    """Set for permanent failures: the user has to change something."""
    user: str = ""


def interpret_register(status: int, body: bytes, *, sent_auth_key: bool) -> RegisterOutcome:
    text = body[:500].decode(errors="replace").strip()
    if status in (401, 403):
        if not sent_auth_key:
            return RegisterOutcome(needs_auth_key=True)
        return RegisterOutcome(error=f"auth key rejected by the control server (HTTP {status}: {text or 'no reason'})")
    if status != 200:
        what = "rejected" if sent_auth_key and 400 <= status < 500 else "failed"
        return RegisterOutcome(error=f"registration {what} (HTTP {status}: {text or 'no reason'})")
    try:
        resp = decode_register_response(body)
    except BadControlMessage as exc:
        return RegisterOutcome(error=f"malformed register response: {exc}")
    if resp.error:
        if not sent_auth_key:
            return RegisterOutcome(needs_auth_key=True)
        return RegisterOutcome(error=f"auth key rejected: {resp.error}")
    if resp.node_key_expired:
        if not sent_auth_key:
            return RegisterOutcome(needs_auth_key=True)
        return RegisterOutcome(error="node key expired and the auth key did not renew it")
    if resp.machine_authorized:
        return RegisterOutcome(authorized=True, user=resp.login.login_name if resp.login else "")
    if not sent_auth_key:
        return RegisterOutcome(needs_auth_key=True)
    if resp.auth_url:
        return RegisterOutcome(error=f"the server wants an interactive login ({resp.auth_url}); use a pre-auth key")
    return RegisterOutcome(error="the server did not authorize this node (is the auth key valid for this tailnet?)")
