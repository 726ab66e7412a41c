"""The JSON wire types of the control protocol (ts:tailcfg/tailcfg.go, tailcfg/derpmap.go).

Only the fields sunbeam sends or reads are declared; unknown fields are ignored on decode,
and fields at their default (None, False, 0, "") are omitted on encode, like Go's
``omitempty``/``omitzero``. Python names are snake_case; the JSON names are Go's field
names (``node_key`` <-> ``NodeKey``, ``home_derp`` <-> ``HomeDERP``, ``allowed_ips`` <->
``AllowedIPs``), produced by `_go_name`; the one exception is DERPMap's
``"omitDefaultRegions"``.

Wire conventions (Go's encoding/json of the tailcfg types):

- Keys are text: ``"nodekey:<64 hex>"``, ``"discokey:<64 hex>"``, ``"mkey:<64 hex>"``.
  They stay strings here; `sunbeam.shared.netmap` validates them.
- Prefixes (``Addresses``, ``AllowedIPs``) are ``"100.64.0.1/32"``; endpoints are
  ``"1.2.3.4:41641"`` / ``"[fd00::1]:41641"``.
- Times are RFC 3339 strings, kept as ``str``: Go writes nanoseconds and any zone offset
  (``"2024-05-01T12:00:00.123456789+02:00"``); ``"0001-01-01T00:00:00Z"`` is the zero
  time (e.g. a ``KeyExpiry`` of a key that never expires).
- ``nil`` versus empty matters: ``"PacketFilter": null`` (or absent) = unchanged but
  ``[]`` = deny all; ``"AllowedIPs": null`` = same as ``Addresses`` (capver >= 112).
  Optional lists are therefore ``list | None`` with default None.
- ``RawMessage`` values (capability-map arguments) are arbitrary JSON: ``Any``.
- Integers are bounded to int64 (`I64`) so that whatever reaches the netmap can be
  re-encoded as msgpack; a bigger number is a malformed message.

`decode_map_response` / `decode_register_response` raise `BadControlMessage` and nothing
else for input that is not a valid message: the caller counts it as a drop.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = [
    "BadControlMessage",
    "CapGrant",
    "DERPHomeParams",
    "DERPMap",
    "DERPNode",
    "DERPRegion",
    "DNSConfig",
    "DNSRecord",
    "Debug",
    "FilterRule",
    "Hostinfo",
    "I64",
    "Login",
    "MapRequest",
    "MapResponse",
    "NetInfo",
    "NetPortRange",
    "Node",
    "PeerChange",
    "PingRequest",
    "PortRange",
    "RegisterRequest",
    "RegisterResponse",
    "RegisterResponseAuth",
    "Resolver",
    "User",
    "UserProfile",
    "ZERO_TIME",
    "decode_map_response",
    "decode_register_response",
    "encode_json",
]

I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
U16 = Annotated[int, msgspec.Meta(ge=0, le=65535)]
CapMap = dict[str, list[Any] | None]
"""``NodeCapMap``: capability name -> list of JSON arguments (``null`` = no arguments)."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero ``time.Time`` as encoding/json writes it."""

_ACRONYMS = {
    "id": "ID", "ip": "IP", "ips": "IPs", "ipv4": "IPv4", "ipv6": "IPv6", "derp": "DERP",
    "dns": "DNS", "os": "OS", "ipn": "IPN", "url": "URL", "stun": "STUN", "udp": "UDP",
    "icmpv4": "ICMPv4", "upnp": "UPnP", "pmp": "PMP", "pcp": "PCP",
}  # fmt: skip


def _go_name(name: str) -> str:
    """``"peers_changed_patch"`` -> ``"PeersChangedPatch"``, ``"home_derp"`` -> ``"HomeDERP"``."""
    return "".join(_ACRONYMS.get(p, p[:1].upper() + p[1:]) for p in name.split("_"))


class BadControlMessage(ValueError):
    """A control response body is not a valid message (a counted drop)."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename=_go_name):
    pass


# --- Hostinfo ---------------------------------------------------------------------------


class NetInfo(_Wire, frozen=True):
    """The host's network state; ``PreferredDERP`` becomes our ``HomeDERP`` at Headscale."""

    preferred_derp: I64 = 0
    mapping_varies_by_dest_ip: bool | None = None
    working_ipv6: bool | None = None
    os_has_ipv6: bool | None = None
    working_udp: bool | None = None
    working_icmpv4: bool | None = None
    have_port_map: bool = False
    upnp: bool | None = None
    pmp: bool | None = None
    pcp: bool | None = None
    link_type: str | None = None
    derp_latency: dict[str, float] | None = None
    firewall_mode: str | None = None


class Hostinfo(_Wire, frozen=True):
    """A summary of a host (ours in requests; peers' in ``Node.Hostinfo``)."""

    ipn_version: str | None = None
    frontend_log_id: str | None = None
    backend_log_id: str | None = None
    os: str | None = None
    os_version: str | None = None
    hostname: str | None = None
    machine: str | None = None
    go_arch: str | None = None
    go_version: str | None = None
    app: str | None = None
    userspace: bool | None = None
    no_logs_no_support: bool = False
    routable_ips: list[str] | None = None
    request_tags: list[str] | None = None
    net_info: NetInfo | None = None


# --- /machine/register ------------------------------------------------------------------


class RegisterResponseAuth(_Wire, frozen=True):
    auth_key: str | None = None


class RegisterRequest(_Wire, frozen=True):
    """``POST /machine/register``. A past ``Expiry`` with the current key = log out."""

    version: I64
    node_key: str
    old_node_key: str | None = None
    auth: RegisterResponseAuth | None = None
    expiry: str | None = None
    followup: str | None = None
    hostinfo: Hostinfo | None = None
    ephemeral: bool = False
    tailnet: str | None = None


class User(_Wire, frozen=True):
    id: I64 = 0
    display_name: str = ""
    profile_pic_url: str | None = None
    created: str | None = None


class Login(_Wire, frozen=True):
    id: I64 = 0
    provider: str = ""
    login_name: str = ""
    display_name: str = ""
    profile_pic_url: str | None = None


class RegisterResponse(_Wire, frozen=True):
    """If ``Error`` is set the other fields are meaningless; ``AuthURL`` = pending."""

    user: User | None = None
    login: Login | None = None
    node_key_expired: bool = False
    machine_authorized: bool = False
    auth_url: str = ""
    error: str = ""


# --- /machine/map request ---------------------------------------------------------------


class MapRequest(_Wire, frozen=True):
    """``POST /machine/map``. ``Stream: true`` for the netmap long poll; ``Stream: false,
    OmitPeers: true`` is a "lite" endpoint update answered by an empty 200."""

    version: I64
    node_key: str
    disco_key: str | None = None
    compress: str | None = None
    """``"zstd"`` or absent (plain JSON frames)."""
    keep_alive: bool = False
    stream: bool = False
    hostinfo: Hostinfo | None = None
    endpoints: list[str] | None = None
    endpoint_types: list[I64] | None = None
    """Parallel to ``Endpoints``: 1 local, 2 STUN, 3 port-mapped, 4 STUN4LocalPort."""
    read_only: bool = False
    omit_peers: bool = False
    debug_flags: list[str] | None = None


# --- MapResponse parts ------------------------------------------------------------------


class Node(_Wire, frozen=True):
    """A device (``MapResponse.Node`` is us; ``Peers``/``PeersChanged`` are the others)."""

    id: I64
    stable_id: str = ""
    name: str = ""
    """FQDN with a trailing dot (the MagicDNS name)."""
    user: I64 = 0
    sharer: I64 = 0
    key: str = ""
    key_expiry: str | None = None
    machine: str | None = None
    disco_key: str | None = None
    addresses: list[str] | None = None
    allowed_ips: list[str] | None = None
    """``null`` = same as Addresses (capver >= 112)."""
    endpoints: list[str] | None = None
    legacy_derp: str | None = msgspec.field(default=None, name="DERP")
    """Deprecated ``"127.3.3.40:<region>"``; used only when ``HomeDERP`` is 0."""
    home_derp: I64 = 0
    hostinfo: Hostinfo | None = None
    created: str | None = None
    cap: I64 = 0
    tags: list[str] | None = None
    primary_routes: list[str] | None = None
    last_seen: str | None = None
    online: bool | None = None
    """None = unknown (or not allowed to know)."""
    machine_authorized: bool = False
    capabilities: list[str] | None = None
    """Deprecated form of ``CapMap`` (keys without arguments)."""
    cap_map: CapMap | None = None
    expired: bool = False
    is_wireguard_only: bool = msgspec.field(default=False, name="IsWireGuardOnly")
    is_jailed: bool = False


class PeerChange(_Wire, frozen=True):
    """``PeersChangedPatch`` entry: only the fields present change (0/None = unchanged)."""

    node_id: I64
    derp_region: I64 = 0
    cap: I64 = 0
    cap_map: CapMap | None = None
    endpoints: list[str] | None = None
    key: str | None = None
    disco_key: str | None = None
    online: bool | None = None
    last_seen: str | None = None
    key_expiry: str | None = None


class DERPNode(_Wire, frozen=True):
    name: str = ""
    region_id: I64 = 0
    host_name: str = ""
    cert_name: str | None = None
    ipv4: str | None = None
    """Forced IPv4 (no DNS); ``"none"`` disables IPv4."""
    ipv6: str | None = None
    stun_port: I64 = 0
    """0 = 3478; -1 = no STUN."""
    stun_only: bool = False
    derp_port: I64 = 0
    """0 = 443."""
    insecure_for_tests: bool = False
    stun_test_ip: str | None = None
    can_port80: bool = False


class DERPRegion(_Wire, frozen=True):
    region_id: I64 = 0
    region_code: str = ""
    region_name: str = ""
    latitude: float = 0.0
    longitude: float = 0.0
    avoid: bool = False
    no_measure_no_home: bool = False
    nodes: list[DERPNode] | None = None


class DERPHomeParams(_Wire, frozen=True):
    region_score: dict[I64, float] | None = None


class DERPMap(_Wire, frozen=True):
    """Regions keyed by region ID (JSON object keys are decimal strings)."""

    home_params: DERPHomeParams | None = None
    regions: dict[I64, DERPRegion | None] | None = None
    """A ``null`` region has been seen from Headscale: the netmap drops it."""
    omit_default_regions: bool = msgspec.field(default=False, name="omitDefaultRegions")


class PortRange(msgspec.Struct, frozen=True, kw_only=True, rename=_go_name):
    """Inclusive; Go always writes both fields (``{"First":0,"Last":65535}`` = any)."""

    first: U16 = 0
    last: U16 = 0


class NetPortRange(_Wire, frozen=True):
    ip: str = ""
    """An IP, a CIDR, a range ``"a-b"`` or ``"*"`` (same forms as SrcIPs)."""
    bits: I64 | None = None
    ports: PortRange = PortRange()


class CapGrant(_Wire, frozen=True):
    dsts: list[str] | None = None
    caps: list[str] | None = None
    cap_map: CapMap | None = None


class FilterRule(_Wire, frozen=True):
    """One packet-filter rule: sources x destinations, for ``IPProto`` (empty = TCP, UDP,
    ICMP). SrcIPs forms: IP, CIDR, ``"a-b"`` range, ``"*"``, ``"cap:<name>"``."""

    src_ips: list[str] | None = None
    src_bits: list[I64] | None = None
    dst_ports: list[NetPortRange] | None = None
    ip_proto: list[I64] | None = None
    cap_grant: list[CapGrant] | None = None


class Resolver(_Wire, frozen=True):
    addr: str = ""
    """An IP, ``"ip:port"``, or a DoH/DoT URL."""
    bootstrap_resolution: list[str] | None = None
    use_with_exit_node: bool = False


class DNSRecord(_Wire, frozen=True):
    name: str = ""
    type: str = ""
    value: str = ""


class DNSConfig(_Wire, frozen=True):
    """DNS settings, passed through to the proxy's resolver (a nil response field =
    unchanged)."""

    resolvers: list[Resolver] | None = None
    routes: dict[str, list[Resolver] | None] | None = None
    """Split DNS: suffix -> resolvers (``null`` = answer locally, do not forward)."""
    fallback_resolvers: list[Resolver] | None = None
    domains: list[str] | None = None
    proxied: bool = False
    nameservers: list[str] | None = None
    cert_domains: list[str] | None = None
    extra_records: list[DNSRecord] | None = None
    exit_node_filtered_set: list[str] | None = None


class UserProfile(_Wire, frozen=True):
    id: I64 = 0
    login_name: str = ""
    display_name: str = ""
    profile_pic_url: str | None = None
    groups: list[str] | None = None


class PingRequest(_Wire, frozen=True):
    """Control asks us to prove liveness: HTTP-request ``URL`` (over Noise if
    ``URLIsNoise``); ``Types`` like ``"disco,TSMP"`` asks to ping ``IP`` instead."""

    url: str = ""
    url_is_noise: bool = False
    log: bool = False
    types: str | None = None
    ip: str | None = None


class Debug(_Wire, frozen=True):
    disable_log_tail: bool = False


class MapResponse(_Wire, frozen=True):
    """One frame of the map long poll. nil/absent fields mean "unchanged" (see
    `sunbeam.shared.netmap.NetmapBuilder` for the exact semantics of each)."""

    keep_alive: bool = False
    """Only a keep-alive: every field except PingRequest and ControlTime is ignored."""
    ping_request: PingRequest | None = None
    node: Node | None = None
    derp_map: DERPMap | None = None
    peers: list[Node] | None = None
    peers_changed: list[Node] | None = None
    peers_removed: list[I64] | None = None
    peers_changed_patch: list[PeerChange] | None = None
    peer_seen_change: dict[I64, bool] | None = None
    online_change: dict[I64, bool] | None = None
    dns_config: DNSConfig | None = None
    domain: str = ""
    collect_services: bool | None = None
    packet_filter: list[FilterRule] | None = None
    packet_filters: dict[str, list[FilterRule] | None] | None = None
    user_profiles: list[UserProfile] | None = None
    control_time: str | None = None
    health: list[str] | None = None
    debug: Debug | None = None


# --- encode / decode --------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()
_MAP_RESPONSE_DECODER = msgspec.json.Decoder(MapResponse)
_REGISTER_RESPONSE_DECODER = msgspec.json.Decoder(RegisterResponse)


def encode_json(obj: _Wire) -> bytes:
    """The JSON body of a request (or, in tests, of a response)."""
    return _ENCODER.encode(obj)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes | bytearray | memoryview) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:  # includes ValidationError
        raise BadControlMessage(str(exc)) from None
    except UnicodeDecodeError as exc:  # escapes msgspec unwrapped (msgspec/msgspec#714)
        raise BadControlMessage(f"invalid UTF-8 in a string: {exc.reason}") from None
    except RecursionError:  # deeply nested JSON inside an Any-typed value
        raise BadControlMessage("JSON nested too deeply") from None


def decode_map_response(body: bytes | bytearray | memoryview) -> MapResponse:
    """Decode one (decompressed) map frame body; `BadControlMessage` if malformed."""
    return _decode(_MAP_RESPONSE_DECODER, body)


def decode_register_response(body: bytes | bytearray | memoryview) -> RegisterResponse:
    """Decode a ``/machine/register`` response body; `BadControlMessage` if malformed."""
    return _decode(_REGISTER_RESPONSE_DECODER, body)
