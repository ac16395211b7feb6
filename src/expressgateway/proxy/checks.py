"""Request checks every front applies before a request goes upstream."""

from __future__ import annotations

from expressgateway.core.errors import DownstreamError
from expressgateway.core.events import RequestHead


def sni_mismatch(head: RequestHead, sni: str | None) -> DownstreamError | None:
    """421 when a TLS client asked for one name (SNI) and then for another
    host in the request (RFC 9110 §15.5.20): the certificate it checked was
    not for that host."""
    if sni is None or not head.authority:
        return None
    authority = head.authority
    host = authority if authority.endswith(b"]") else authority.rsplit(b":", 1)[0]
    if host.strip(b"[]").lower().decode("latin-1") != sni.lower():
        return DownstreamError("sni_host_mismatch", status=421)
    return None


def is_grpc(head: RequestHead) -> bool:
    """``content-type: application/grpc`` or ``application/grpc+proto``...
    (not ``grpc-web``, which is plain HTTP)."""
    for name, value in head.headers:
        if name == b"content-type" and value[:16].lower() == b"application/grpc":
            return value[16:17] in (b"", b"+", b";")
    return False
