"""TLS client contexts: who sunbeam trusts when the control URL is ``https://``.

Trusted: the system's store (``ssl.create_default_context()``: OpenSSL's default paths,
which honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``) plus the context's ``ca_file``
(``SUNBEAM_CA_FILE``) when set, e.g. the CA of a self-hosted Headscale. One context serves
every TLS connection of a service: the control service's ``/key`` fetch and TS2021
connection, and the derp service's region connections (SNI and verification against the
DERP node's HostName). A node the DERP map marks ``InsecureForTests`` is not verified
(`insecure_context`), as tailscaled does.

A certificate that does not verify is reported as one line naming the server and
OpenSSL's reason (`untrusted_reason`); where the issuer is unknown the line says how to
trust it.

``ssl`` is imported only when a context is built: a plain-HTTP deployment never loads it
(nor maps libssl/libcrypto, a few MB per process). Code that may run without TLS asks
`is_tls_socket`, `is_cert_error` and `would_block` instead of naming ``ssl`` classes: while
``ssl`` is not loaded no socket can be an SSLSocket and no SSLError can be raised.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl
    from typing import TypeGuard

CA_HINT = "set ca_file in the context, or SSL_CERT_FILE"
# OpenSSL's X509_V_ERR_* codes meaning "no trusted issuer": the CA is not in our store
UNKNOWN_ISSUER = frozenset({
    2,   # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
})


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system store (and SSL_CERT_FILE) plus ``ca_file``; hostnames checked.
    Raises OSError / ssl.SSLError if ``ca_file`` cannot be read or holds no certificate."""
    import ssl  # here, not at the top: only TLS users load it (see the module's docstring)

    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def insecure_context() -> ssl.SSLContext:
    """For a DERP node marked InsecureForTests: TLS without verifying the certificate."""
    import ssl  # here, not at the top: only TLS users load it (see the module's docstring)

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def untrusted_reason(server: str, exc: ssl.SSLCertVerificationError) -> str:
    """``TLS certificate of <server> not trusted: certificate verify failed: <why> (<hint>)``."""
    why = exc.verify_message or exc.reason or str(exc)
    hint = f" ({CA_HINT})" if exc.verify_code in UNKNOWN_ISSUER else ""
    return f"TLS certificate of {server} not trusted: certificate verify failed: {str(why).rstrip('.')}{hint}"


# Checks for code that runs with and without TLS. sys.modules, not an import: importing
# ssl here would load it (and libssl) in every plain-HTTP process; if it was never loaded,
# the answer is known without it.

def is_tls_socket(sock: Any) -> TypeGuard[ssl.SSLSocket]:
    """``isinstance(sock, ssl.SSLSocket)`` without importing ssl."""
    ssl_module = sys.modules.get("ssl")
    return ssl_module is not None and isinstance(sock, ssl_module.SSLSocket)


def is_cert_error(exc: BaseException | None) -> TypeGuard[ssl.SSLCertVerificationError]:
    """``isinstance(exc, ssl.SSLCertVerificationError)`` without importing ssl."""
    ssl_module = sys.modules.get("ssl")
    return ssl_module is not None and isinstance(exc, ssl_module.SSLCertVerificationError)


def would_block(*, want_write: bool = True) -> tuple[type[OSError], ...]:
    """For ``except would_block():`` around a non-blocking send or recv, TLS or not:
    BlockingIOError, plus SSLWantReadError and (unless ``want_write`` is False)
    SSLWantWriteError once ssl is loaded (a TLS socket raises them instead). The clause's
    expression is evaluated only when an exception reaches it."""
    ssl_module = sys.modules.get("ssl")
    if ssl_module is None:
        return (BlockingIOError,)
    if not want_write:
        return (BlockingIOError, ssl_module.SSLWantReadError)
    return (BlockingIOError, ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError)
