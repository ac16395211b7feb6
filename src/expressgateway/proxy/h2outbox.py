"""What an HTTP/2 stream could not send yet because the peer's flow-control
window was closed: the rest of one body piece (at most what the other side
read before it was paused) and the trailers behind it. Shared by the HTTP/2
front (toward clients) and back (toward backends)."""

from __future__ import annotations

from typing import Protocol

from expressgateway.core.events import Headers


class _Sender(Protocol):
    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> int: ...

    def send_trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None: ...


class Outbox:
    __slots__ = ("data", "end", "trailers")

    def __init__(self) -> None:
        self.data = b""
        self.end = False
        self.trailers: Headers | None = None

    def __bool__(self) -> bool:
        return bool(self.data)

    def send_body(self, codec: _Sender, sid: int, data: bytes, end_stream: bool) -> bool:
        """Send what the window allows; False when something had to wait
        (the caller then pauses its source until :meth:`window_opened`)."""
        if self.data:
            self.data += data
            self.end = end_stream
            return False
        sent = codec.send_body(sid, data, end_stream)
        if sent < len(data):
            self.data = data[sent:]
            self.end = end_stream
            return False
        return True

    def send_trailers(self, codec: _Sender, sid: int, headers: Headers) -> None:
        if self.data:
            self.trailers = headers
        else:
            codec.send_trailers(sid, headers)

    def window_opened(self, codec: _Sender, sid: int) -> bool:
        """Send what waited; True once nothing is left (resume the source)."""
        if not self.data:
            return True
        data, self.data = self.data, b""
        sent = codec.send_body(sid, data, self.end and self.trailers is None)
        if sent < len(data):
            self.data = data[sent:]
            return False
        if self.trailers is not None:
            trailers, self.trailers = self.trailers, None
            codec.send_trailers(sid, trailers)
        return True

    def clear(self) -> None:
        self.data = b""
        self.trailers = None
