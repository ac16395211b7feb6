"""Connection-level failures of the HTTP/2 codecs.

A *stream* problem never raises: the codec resets the stream and reports it
with an event (``Reset`` or :class:`~.events.StreamRejected`). A problem
that ends the whole connection raises :class:`H2ConnectionError` *after* the
codec has queued the GOAWAY: the shell flushes ``data_to_send()``, closes
the transport and aborts every stream it still has.
"""

from __future__ import annotations

from expressgateway.core.errors import ProxyError, Retry
from expressgateway.core.events import Source


class H2ConnectionError(ProxyError):
    """The HTTP/2 connection is over. ``code`` is the RFC 9113 §7 error code
    sent in the GOAWAY; ``reason`` is the metric slug (``"rapid_reset"``,
    ``"frame_too_large"``, ``"keepalive_timeout"``...). No local reply is
    possible (``status`` 0)."""

    status = 0

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        source: Source = Source.DOWNSTREAM,
        detail: str = "",
    ) -> None:
        super().__init__(reason, status=0, source=source, retry=Retry.NO, detail=detail)
        self.code = int(code)


class HeaderBlockError(Exception):
    """Raised from inside h2 by our HPACK decoder: a header block that cannot
    be decoded (COMPRESSION_ERROR, RFC 7541 §2.3.3 / RFC 9113 §4.3) or that
    decodes to more than the hard cap (an HPACK bomb: ENHANCE_YOUR_CALM).
    Deliberately not an h2 or hpack exception, so h2 lets it through and the
    codec sends the GOAWAY with the right code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class AbuseDetected(Exception):
    """Raised by :class:`~.abuse.AbuseGuard` when a limit is crossed; the
    codec turns it into GOAWAY ENHANCE_YOUR_CALM and an
    :class:`H2ConnectionError` with the same reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameError(Exception):
    """Raised by :class:`~.frames.FrameScanner` for a frame that breaks
    RFC 9113 framing rules (size, stream 0, header-block interleaving); the
    codec turns it into a GOAWAY with ``code``."""

    def __init__(self, code: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.code = code
        self.reason = reason
        self.detail = detail
