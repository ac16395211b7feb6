"""TLS contexts from config, with the stdlib ``ssl`` module.

Server side: TLS 1.2 and 1.3 (1.3 only with ``[runtime.tls].tls13_only``),
ECDHE + AEAD suites only, ALPN from config, certificate and key checked to
match at load. Client side (to TLS backends): verification on by default,
CA bundle from config, SNI from the backend's host or ``tls_verify_hostname``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

# ECDHE key exchange with AEAD ciphers only, for TLS 1.2 (1.3 suites are all AEAD).
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


class TlsConfigError(Exception):
    """A certificate or key could not be used; the message says which and why."""


def _explain(exc: ssl.SSLError) -> str:
    text = str(exc)
    if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
        return "private key does not match the certificate"
    if "PEM lib" in text or "NO_START_LINE" in text:
        return "not a PEM certificate/key"
    return text


def server_context(
    cert_path: str,
    key_path: str,
    *,
    alpn: Sequence[str] = (),
    tls13_only: bool = False,
    where: str = "tls",
) -> ssl.SSLContext:
    """A server context; raises :class:`TlsConfigError` naming ``where``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls13_only else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"{where}: cannot use cert_path={cert_path!r} key_path={key_path!r}: {_explain(exc)}"
        ) from exc
    except OSError as exc:
        raise TlsConfigError(f"{where}: cannot read certificate or key: {exc}") from exc
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(
    *,
    ca_path: str | None = None,
    verify: bool = True,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A client context for TLS to a backend."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca_path:
            ctx.load_verify_locations(cafile=ca_path)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class SniSelector:
    """An ``sni_callback`` that hands a handshake the context of the first
    certificate whose names match the client's SNI (exact, then ``*.``
    wildcard); the listener's own context serves every other name.
    ``remember`` also notes the name on the connection (for the 421 check)."""

    def __init__(self, remember: bool = False) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcards: list[tuple[str, ssl.SSLContext]] = []
        self.remember = remember

    def add(self, names: Sequence[str], ctx: ssl.SSLContext) -> None:
        for name in names:
            if name.startswith("*."):
                self.wildcards.append((name[1:], ctx))
            else:
                self.exact.setdefault(name, ctx)

    def __call__(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.remember:
            try:
                sslobj.eg_sni = name  # type: ignore[attr-defined]
            except AttributeError:
                pass
        if not name:
            return
        name = name.lower()
        ctx = self.exact.get(name)
        if ctx is None:
            for suffix, candidate in self.wildcards:
                if name.endswith(suffix) and len(name) > len(suffix):
                    ctx = candidate
                    break
        if ctx is not None:
            sslobj.context = ctx
