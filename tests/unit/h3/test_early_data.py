"""RFC 8470 / RFC 9001 §4.6: requests in 0-RTT (early data).

A second connection resumes the first one's session and sends its requests
with the ClientHello, before the handshake completes. Early data can be
replayed, so only safe methods are served from it; anything else is
refused with 425 Too Early (the client may retry after the handshake)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from expressgateway.codec.h2.events import StreamRejected
from expressgateway.core.events import RequestHead
from tests.unit.h3.helpers import GET, POST, ServerPair


@pytest.fixture()
def resumed(make_pair: Callable[..., ServerPair]) -> Callable[..., ServerPair]:
    """``resumed(requests)``: a connection resuming an earlier session whose
    ``requests`` (header lists, each ending its stream) go out as 0-RTT."""
    tickets: dict[bytes, Any] = {}
    server_kw = {
        "session_ticket_handler": lambda t: tickets.__setitem__(t.ticket, t),
        "session_ticket_fetcher": tickets.pop,
    }
    received: list[Any] = []
    make_pair(server_kw=server_kw, client_kw={"session_ticket_handler": received.append})
    assert received, "no session ticket"

    def make(requests: Sequence[list[tuple[bytes, bytes]]], **codec_kw: Any) -> ServerPair:
        def early(pair: ServerPair) -> None:
            for fields in requests:
                sid = pair.client.new_stream()
                pair.client.h3.send_headers(sid, fields, end_stream=True)

        pair = make_pair(
            server_kw=server_kw,
            client_conf={"session_ticket": received[-1]},
            before_flight=early,
            handshake=False,
            **codec_kw,
        )
        pair.pump()
        assert pair.client.quic.tls.session_resumed
        assert pair.client.quic.tls.early_data_accepted
        return pair

    return make


def test_unsafe_method_in_early_data_is_425(resumed: Callable[..., ServerPair]) -> None:
    pair = resumed([POST])
    assert len(pair.out) == 1
    sid, ev = pair.out[0]
    assert isinstance(ev, StreamRejected)
    assert (ev.error.status, ev.error.reason) == (425, "too_early")
    assert pair.codec.handshake_done
    pair.codec.send_local_reply(sid, 425)
    pair.pump()
    log = pair.client.streams[sid]
    assert dict(log.headers[0])[b":status"] == b"425" and log.ended


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS"])
def test_safe_methods_are_served_from_early_data(
    resumed: Callable[..., ServerPair], method: bytes
) -> None:
    pair = resumed([[(b":method", method), *GET[1:]]])
    assert [(s, type(ev)) for s, ev in pair.out] == [(0, RequestHead)]
    assert pair.out[0][1].method == method


def test_early_and_late_requests_on_one_connection(resumed: Callable[..., ServerPair]) -> None:
    pair = resumed([GET, [(b":method", b"DELETE"), *GET[1:]]])
    kinds = {sid: type(ev) for sid, ev in pair.out}
    assert kinds == {0: RequestHead, 4: StreamRejected}
    # after the handshake the same method is fine
    _, out = pair.request(POST, b"late")
    assert isinstance(out[0][1], RequestHead) and out[0][1].method == b"POST"
