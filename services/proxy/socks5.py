"""SOCKS5 server side (RFC 1928), sans-IO: CONNECT, no authentication.

Wire layout (RFC 1928 sections 3-6; integers big-endian)::

    greeting   VER=5 | NMETHODS (1..255) | METHODS (NMETHODS bytes)
    selection  VER=5 | METHOD       0x00 no authentication (the only one we take);
                                    0xFF no acceptable method, then we close
    request    VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT (2)
               CMD   1 CONNECT; 2 BIND, 3 UDP ASSOCIATE and the rest: reply 0x07
               ATYP  1 IPv4 (4 bytes) | 3 domain (LEN 1..255, then LEN bytes) | 4 IPv6 (16)
    reply      VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT (2)
               REP   0 succeeded, 1 general failure, 2 not allowed by ruleset,
                     3 network unreachable, 4 host unreachable, 5 connection refused,
                     6 TTL expired, 7 command not supported, 8 address type not supported

Use: feed what the client sends to `Socks5Server.receive_data` and send
`data_to_send()` back after every call. A `ConnectRequest` event names the
destination; open the upstream connection, then `reply(code)`. After a success reply
send `leftover()` upstream (bytes the client sent after its request: early data) and
splice the two connections; the parser is done. A `ProtocolError` (its ``reason`` is
the counter name) ends the exchange: send `data_to_send()` (a failure reply when the
protocol has one) and close.

States: GREETING -> REQUEST -> PENDING (request parsed, waiting for `reply`) ->
ESTABLISHED, or CLOSED after an error or a failure reply. A client may pipeline the
greeting, request and early data in one write.

Bounds: the greeting is at most 257 bytes and the request at most 262, so no more than
that is ever buffered before the request completes (well under the 1 KiB budget). Early
data buffered while PENDING is capped at ``max_early_data`` (64 KiB by default;
beyond: ProtocolError ``early_data_overflow``): shells should stop reading the client
while a request is pending. Client bytes after a failure are ignored.

Errors are split as in h11: the peer's garbage is a `ProtocolError` event, never an
exception; calling the API out of order (our bug) raises `RuntimeError`.
"""

from __future__ import annotations

import enum
import ipaddress

import msgspec
from sunbeam.shared.netmap.names import is_valid_host

__all__ = [
    "AddressType",
    "ConnectRequest",
    "ProtocolError",
    "Reply",
    "Socks5Server",
    "State",
]

VERSION = 5
NO_AUTH = 0x00
NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 1
MAX_EARLY_DATA = 64 * 1024


class AddressType(enum.IntEnum):
    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


class Reply(enum.IntEnum):
    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class State(enum.Enum):
    GREETING = "greeting"
    REQUEST = "request"
    PENDING = "pending"
    ESTABLISHED = "established"
    CLOSED = "closed"


class ConnectRequest(msgspec.Struct, frozen=True):
    """The client asks to CONNECT to ``host``:``port``."""

    host: str
    """An IP literal (IPv6 without brackets) for ATYP 1/4; the name as sent for ATYP 3."""
    port: int
    """1..65535."""
    atyp: AddressType


class ProtocolError(msgspec.Struct, frozen=True):
    """The client broke the protocol; the exchange is over (send `data_to_send`, close)."""

    reason: str
    """A short counter name, e.g. ``bad_version``."""
    detail: str = ""


Event = ConnectRequest | ProtocolError

_ADDR_LEN = {AddressType.IPV4: 4, AddressType.IPV6: 16}


class _Fail(Exception):
    """Internal: the client broke the protocol (reason, reply bytes to send, detail)."""

    def __init__(self, reason: str, reply: bytes, detail: str = "") -> None:
        self.reason, self.reply, self.detail = reason, reply, detail


def encode_reply(code: int, bound_addr: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    """A reply message; ``bound_addr`` must be an IP literal and a port."""
    ip = ipaddress.ip_address(bound_addr[0])
    atyp = AddressType.IPV4 if ip.version == 4 else AddressType.IPV6
    return bytes([VERSION, Reply(code), 0, atyp]) + ip.packed + bound_addr[1].to_bytes(2, "big")


_GREETING_FAIL = bytes([VERSION, NO_ACCEPTABLE])


class Socks5Server:
    """One client connection's SOCKS5 handshake (server side)."""

    def __init__(self, *, max_early_data: int = MAX_EARLY_DATA) -> None:
        self.state = State.GREETING
        self.request: ConnectRequest | None = None
        self.eof_received = False
        """The client half-closed after its request (forward `leftover`, then shut down)."""
        self._max_early = max_early_data
        self._buf = bytearray()
        self._out = bytearray()

    def data_to_send(self) -> bytes:
        """Bytes for the client (method selection, replies); drained by the call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed client bytes (``b""`` = the client closed its side); returns events."""
        if self.state is State.ESTABLISHED:
            raise RuntimeError("the handshake is over: splice the connection, do not feed the parser")
        if self.state is State.CLOSED:
            return []
        if not data:
            if self.state is State.PENDING:
                self.eof_received = True
                return []
            return [self._error(_Fail("eof_before_request", b""))]
        self._buf += data
        if self.state is State.PENDING:
            if len(self._buf) > self._max_early:
                return [self._error(_Fail("early_data_overflow", encode_reply(Reply.GENERAL_FAILURE)))]
            return []
        try:
            if self.state is State.GREETING and self._parse_greeting():
                self.state = State.REQUEST
            if self.state is State.REQUEST and (request := self._parse_request()) is not None:
                self.state = State.PENDING
                self.request = request
                if len(self._buf) > self._max_early:
                    raise _Fail("early_data_overflow", encode_reply(Reply.GENERAL_FAILURE))
                return [request]
        except _Fail as fail:
            return [self._error(fail)]
        return []

    def reply(self, code: int, bound_addr: tuple[str, int] = ("0.0.0.0", 0)) -> None:
        """Answer the pending request: ``Reply.SUCCEEDED`` (0) or a failure (1..8)."""
        if self.state is not State.PENDING:
            raise RuntimeError(f"reply() in state {self.state.name}: no request is pending")
        self._out += encode_reply(code, bound_addr)
        if code == Reply.SUCCEEDED:
            self.state = State.ESTABLISHED
        else:
            self.state = State.CLOSED
            self._buf.clear()

    def leftover(self) -> bytes:
        """Early data: what the client sent after its request. Only after a success reply."""
        if self.state is not State.ESTABLISHED:
            raise RuntimeError(f"leftover() in state {self.state.name}: not established")
        out = bytes(self._buf)
        self._buf.clear()
        return out

    # --- parsing; each returns None until its message is complete -------------------

    def _error(self, fail: _Fail) -> ProtocolError:
        self.state = State.CLOSED
        self._buf.clear()
        self._out += fail.reply
        return ProtocolError(fail.reason, fail.detail)

    def _parse_greeting(self) -> bool:
        buf = self._buf
        if buf[0] != VERSION:
            raise _Fail("bad_version", _GREETING_FAIL, f"greeting version {buf[0]}")
        if len(buf) < 2:
            return False
        if buf[1] == 0:
            raise _Fail("no_methods", _GREETING_FAIL)
        end = 2 + buf[1]
        if len(buf) < end:
            return False
        methods = bytes(buf[2:end])
        del buf[:end]
        if NO_AUTH not in methods:
            raise _Fail("no_acceptable_method", _GREETING_FAIL, f"methods {methods.hex()}")
        self._out += bytes([VERSION, NO_AUTH])
        return True

    def _parse_request(self) -> ConnectRequest | None:
        buf = self._buf
        general = encode_reply(Reply.GENERAL_FAILURE)
        if not buf:
            return None
        if buf[0] != VERSION:
            raise _Fail("bad_request_version", general, f"request version {buf[0]}")
        if len(buf) >= 2 and buf[1] != CMD_CONNECT:
            raise _Fail("command_not_supported", encode_reply(Reply.COMMAND_NOT_SUPPORTED), f"cmd {buf[1]}")
        if len(buf) >= 3 and buf[2] != 0:
            raise _Fail("bad_reserved", general, f"rsv {buf[2]}")
        if len(buf) < 5:
            return None
        try:
            atyp = AddressType(buf[3])
        except ValueError:
            raise _Fail("address_type_not_supported", encode_reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED),
                        f"atyp {buf[3]}") from None
        if atyp is AddressType.DOMAIN:
            start, size = 5, buf[4]
            if size == 0:
                raise _Fail("empty_domain", general)
        else:
            start, size = 4, _ADDR_LEN[atyp]
        end = start + size + 2
        if len(buf) < end:
            return None
        raw, port = bytes(buf[start : start + size]), int.from_bytes(buf[end - 2 : end], "big")
        del buf[:end]
        if atyp is AddressType.DOMAIN:
            host = raw.decode("ascii", "replace")
            if not is_valid_host(host):
                raise _Fail("bad_domain", general, repr(raw[:64]))
        else:
            host = str(ipaddress.ip_address(raw))
        if port == 0:
            raise _Fail("zero_port", general)
        return ConnectRequest(host, port, atyp)
