"""The error model: every error says who caused it, whether a retry is safe,
and what to answer with (rule 4 of docs/architecture.md)."""

from __future__ import annotations

from enum import Enum

from expressgateway.core.events import Source


class Retry(Enum):
    """Whether the request that met this error may be sent again."""

    NO = "no"
    YES = "yes"
    #: only when the failure happened on a reused (pooled) connection: the
    #: peer may have closed it while idle, before seeing the request.
    IF_REUSED = "if_reused"


class ProxyError(Exception):
    """Base of every error the proxy turns into an answer.

    ``status`` is the HTTP status for a local reply (0 when none is possible,
    e.g. the response head already went out); ``reason`` is a short,
    metric-safe slug (``"header_too_large"``) that also labels the counter.
    """

    source: Source = Source.INTERNAL
    status: int = 500
    retry: Retry = Retry.NO

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        source: Source | None = None,
        retry: Retry | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        if status is not None:
            self.status = status
        if source is not None:
            self.source = source
        if retry is not None:
            self.retry = retry


class DownstreamError(ProxyError):
    """The client broke the protocol or a limit (4xx answers)."""

    source = Source.DOWNSTREAM
    status = 400


class UpstreamError(ProxyError):
    """The backend failed or broke the protocol (502 by default)."""

    source = Source.UPSTREAM
    status = 502
