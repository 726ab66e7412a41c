"""The control service's account socket (``control-account``): ``sunbeam-ctl login`` and
``sunbeam-ctl logout``. One frame each way, msgpack maps tagged by ``"t"``:

    request          reply
    --------------   -------------------------------------------------------------
    `LoginRequest`   `AccountReply` at once: ok (a login started, or one is pending:
                     its URL follows in ``ControlStatus.auth_url``), or ok with
                     state Running (already logged in)
    `LogoutRequest`  `AccountReply` when the server answered the logout (ok), or at
                     once when there is no connection to send it on (not ok)
"""

from __future__ import annotations

import msgspec

from .codec import Codec

__all__ = ["ACCOUNT_REPLY_CODEC", "ACCOUNT_REQUEST_CODEC", "AccountReply", "AccountRequest", "LoginRequest",
           "LogoutRequest"]


class LoginRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    """Log in: with the context's auth key if it has one, else interactively."""


class LogoutRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    """Log the node out at the server (its key expires there)."""


class AccountReply(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    ok: bool
    message: str = ""
    """One line for the user."""
    state: str = ""
    """The control state after the request."""


AccountRequest = LoginRequest | LogoutRequest
ACCOUNT_REQUEST_CODEC: Codec[AccountRequest] = Codec(AccountRequest)
ACCOUNT_REPLY_CODEC: Codec[AccountReply] = Codec(AccountReply)
