"""The two halves a :class:`~expressgateway.proxy.stream.Stream` bridges.

A *front* is the server side of one client stream (an HTTP/1.1 connection's
current request, or one HTTP/2 or HTTP/3 stream); a *back* is the client
side of one upstream exchange. Each protocol implements both once; the
stream never knows which protocol is on either side. Everything here is
synchronous: bytes go to transports, and backpressure is pause/resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from expressgateway.core.events import Headers, Informational, RequestHead, ResponseHead
from expressgateway.upstream.endpoint import Endpoint

if TYPE_CHECKING:
    from expressgateway.proxy.stream import Stream


class Front(Protocol):
    """Server side of a stream, as the bridge sees it."""

    def send_informational(self, info: Informational) -> None: ...

    def send_response_head(self, head: ResponseHead) -> None: ...

    def send_body(self, data: bytes, end_stream: bool) -> None: ...

    def send_trailers(self, headers: Headers) -> None: ...

    def local_reply(self, status: int, reason: str, extra: Headers = ...) -> None:
        """Answer from the gateway itself (only before a response head went out)."""

    def abort(self, reason: str) -> None:
        """End the client stream abnormally (after the head went out)."""

    def pause_request(self) -> None: ...

    def resume_request(self) -> None: ...

    def stream_done(self) -> None:
        """The exchange is over (response complete or aborted)."""

    def park_back(self, back: Back) -> None:
        """Keep a reusable upstream connection for this client's next request
        (a front that cannot keep one hands it to the pool)."""

    def take_parked(self, ep: Endpoint) -> Back | None:
        """The parked upstream connection, if it is alive and goes to ``ep``."""

    def flush(self) -> None:
        """Write out what this exchange queued toward the client."""


class Back(Protocol):
    """Client side of an upstream exchange, as the bridge sees it."""

    reused: bool

    def attach(self, stream: Stream) -> None:
        """This back now carries ``stream``'s exchange."""

    def send_request_head(self, head: RequestHead) -> None: ...

    def send_body(self, data: bytes, end_stream: bool) -> None: ...

    def send_trailers(self, headers: Headers) -> None: ...

    def pause_response(self) -> None: ...

    def resume_response(self) -> None: ...

    def abort(self) -> None: ...

    def finish(self, request_complete: bool) -> bool:
        """The exchange ended cleanly: True if the connection can carry another."""

    def release(self) -> None:
        """Offer the idle connection to the shared pool."""

    def alive(self) -> bool: ...

    def flush(self) -> None:
        """Write out what this exchange queued (one write per batch)."""
