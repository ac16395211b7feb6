"""Map llhttp (httptools) parse errors to short metric slugs.

llhttp runs in strict mode and already rejects, among others: CL + TE,
duplicate ``Content-Length`` (even with equal values), a request TE whose
last coding is not ``chunked``, ``chunked`` applied twice, obs-fold, bare CR
or LF, NUL and other CTLs in values, invalid field names, unknown methods,
HTTP versions other than 0.9/1.0/1.1, and bad chunk sizes. Its messages are
stable strings; the slug is chosen by keyword.
"""

from __future__ import annotations

from httptools import (
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidStatusError,
    HttpParserInvalidURLError,
)


def parse_error_reason(exc: HttpParserError) -> str:
    """The slug for an llhttp error: ``smuggling_cl_te``,
    ``smuggling_duplicate_cl``, ``smuggling_bad_te``, ``bad_content_length``,
    ``bad_chunk``, ``bad_header``, ``bad_request_line``, ``bad_status_line``
    or ``bad_request``."""
    if isinstance(exc, HttpParserInvalidMethodError | HttpParserInvalidURLError):
        return "bad_request_line"
    if isinstance(exc, HttpParserInvalidStatusError):
        return "bad_status_line"
    msg = str(exc)
    if "Content-Length" in msg:
        if "Transfer-Encoding" in msg:
            return "smuggling_cl_te"
        if "Duplicate" in msg:
            return "smuggling_duplicate_cl"
        return "bad_content_length"
    if "Transfer-Encoding" in msg:
        return "smuggling_bad_te"
    low = msg.lower()
    if "chunk" in low:
        return "bad_chunk"
    if "header" in low:
        return "bad_header"
    if any(
        k in low for k in ("version", "http/", "method", "url", "start line", "source", "space")
    ):
        return "bad_request_line"
    return "bad_request"
