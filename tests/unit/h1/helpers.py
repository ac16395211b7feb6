"""Helpers shared by the HTTP/1.1 codec tests (imported as a plain module)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from expressgateway.codec.h1 import H1ClientCodec, H1ServerCodec
from expressgateway.core.events import Body, Event, RequestHead


def chunks(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """Split ``data`` into pieces of the given sizes (the rest last)."""
    out, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        out.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        out.append(data[pos:])
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def feed_all(codec: H1ServerCodec | H1ClientCodec, pieces: Sequence[bytes]) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events.extend(codec.feed(piece))
    return events


def coalesce(events: Iterable[Event]) -> list[Event]:
    """Merge consecutive ``Body`` events so different chunkings compare equal;
    an empty non-final ``Body`` disappears."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, Body):
            if out and isinstance(out[-1], Body) and not out[-1].end_stream:
                prev = out.pop()
                ev = Body(prev.data + ev.data, ev.end_stream)
            if not ev.data and not ev.end_stream:
                continue
        out.append(ev)
    return out


def serve(data: bytes, **kw: object) -> tuple[H1ServerCodec, list[Event]]:
    codec = H1ServerCodec(**kw)  # type: ignore[arg-type]
    return codec, codec.feed(data)


def only_head(events: Sequence[Event]) -> RequestHead:
    assert isinstance(events[0], RequestHead), events
    return events[0]


def request(
    method: str = "GET",
    target: str = "/",
    headers: Sequence[tuple[str, str]] = (("Host", "example.com"),),
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {target} {version}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
