"""RFC 9114 §5.2 (connection shutdown) and §4.1.1 (request rejection).

Server side: after ``max_requests`` requests the codec sends GOAWAY naming
the next client stream; streams at or after that id are reset with
H3_REQUEST_REJECTED (0x10b: not processed, safe to retry), the ones below
it are still served. Client side: a GOAWAY from the backend turns the
streams at or after its id into ``Reset(REFUSED_STREAM)`` and the
connection takes no new streams. GOAWAY frames are read off the wire of
the control stream."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from expressgateway.codec.h2.events import GoAwayReceived
from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    REFUSED_STREAM,
    Body,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
)
from tests.unit.h3.helpers import (
    GET,
    H3_REQUEST_REJECTED,
    POST,
    Cert,
    ClientPair,
    CodecPair,
    Output,
    ServerPair,
    goaway_frame,
)

REQ = RequestHead(b"GET", b"https", b"example.com", b"/", [], True)
REFUSED = Reset(REFUSED_STREAM, Source.UPSTREAM, "refused_stream")


def heads(out: Output) -> list[int]:
    return [sid for sid, ev in out if isinstance(ev, RequestHead)]


# -- server: max_requests ----------------------------------------------------------------


def test_max_requests_sends_goaway_naming_the_next_stream(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(max_requests=2)
    a, out = pair.request(GET)
    assert heads(out) == [a] and pair.client.control.goaways() == []
    b, out = pair.request(GET)
    assert heads(out) == [b]
    assert pair.codec.goaway_at == b + 4
    assert pair.client.control.goaways() == [b + 4]


def test_streams_after_the_goaway_id_are_rejected(make_pair: Callable[..., ServerPair]) -> None:
    pair = make_pair(max_requests=2)
    a, _ = pair.request(GET)
    b, _ = pair.request(GET)
    c, out = pair.request(GET)
    assert out == []  # not processed: nothing for the shell
    assert pair.client.streams[c].reset == H3_REQUEST_REJECTED
    assert pair.codec.rejected_after_goaway == 1
    assert pair.client.terminated is None
    # the streams below the GOAWAY id are still answered
    for sid in (a, b):
        pair.codec.send_response_head(sid, ResponseHead(200, [], False, 2))
        pair.codec.send_body(sid, b"ok", True)
    pair.pump()
    for sid in (a, b):
        log = pair.client.streams[sid]
        assert (log.data, log.ended, log.reset) == (b"ok", True, None)
    assert pair.codec.open_streams() == 0


def test_a_burst_past_max_requests_in_one_flight(make_pair: Callable[..., ServerPair]) -> None:
    pair = make_pair(max_requests=1)
    h3 = pair.client.h3
    sids = []
    for _ in range(3):
        sids.append(pair.client.new_stream())
        h3.send_headers(sids[-1], GET, end_stream=True)
    out = pair.pump()
    assert heads(out) == [0] and len(out) == 1
    assert pair.client.control.goaways() == [4]
    assert [pair.client.log(s).reset for s in sids] == [
        None,
        H3_REQUEST_REJECTED,
        H3_REQUEST_REJECTED,
    ]
    assert pair.codec.rejected_after_goaway == 2


def test_rejected_upload_is_stopped_and_its_body_dropped(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(max_requests=1)
    pair.request(GET)
    sid, out = pair.request(POST, b"b" * 5000, end=False)
    assert out == []
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (H3_REQUEST_REJECTED, H3_REQUEST_REJECTED)
    assert pair.client.terminated is None


def test_goaway_by_the_shell_names_the_next_stream_once(pair: ServerPair) -> None:
    pair.request(GET)
    pair.request(GET)
    pair.codec.goaway()
    pair.codec.goaway(100)  # a second GOAWAY may not raise the id: not sent
    pair.pump()
    assert pair.client.control.goaways() == [8]
    sid, out = pair.request(GET)
    assert sid == 8 and out == []
    assert pair.client.streams[sid].reset == H3_REQUEST_REJECTED


def test_goaway_before_any_request_refuses_them_all(pair: ServerPair) -> None:
    pair.codec.goaway()
    pair.pump()
    assert pair.client.control.goaways() == [0]
    sid, out = pair.request(GET)
    assert out == [] and pair.client.streams[sid].reset == H3_REQUEST_REJECTED


# -- client codec: a GOAWAY from the backend -----------------------------------------------


def test_backend_goaway_refuses_streams_at_and_after_its_id(client_pair: ClientPair) -> None:
    sids = [client_pair.codec.send_request(REQ) for _ in range(3)]
    assert sids == [0, 4, 8]
    client_pair.pump()
    server = client_pair.server
    server.raw(server.h3._local_control_stream_id, goaway_frame(4))  # type: ignore[arg-type]
    out = client_pair.pump()
    assert out == [(0, GoAwayReceived(0, 4)), (4, REFUSED), (8, REFUSED)]
    assert not client_pair.codec.can_open_stream()
    with pytest.raises(UpstreamError) as err:
        client_pair.codec.send_request(REQ)
    assert err.value.retry is Retry.YES
    # stream 0, below the id, completes
    out = client_pair.respond(0, [(b":status", b"200")], b"fine")
    assert out == [(0, ResponseHead(200, [], False, None)), (0, Body(b"fine", True))]


def test_gateway_to_gateway_max_requests(h3_cert: Cert) -> None:
    """The backend is an H3ServerCodec with max_requests=1: the second request,
    sent in the same flight, is rejected (retry safe) and the client codec
    stops using the connection."""
    pair = CodecPair(h3_cert, max_requests=1)
    a = pair.client.send_request(REQ)
    b = pair.client.send_request(REQ)
    out = pair.pump()
    assert heads(pair.server_out) == [a]
    refused = [(sid, ev) for sid, ev in out if isinstance(ev, Reset)]
    assert refused and all(sid == b and ev.code == REFUSED_STREAM for sid, ev in refused), refused
    assert any(isinstance(ev, GoAwayReceived) for _, ev in out), out
    assert not pair.client.can_open_stream()


def test_server_rejection_is_refused_stream_for_the_client(client_pair: ClientPair) -> None:
    """H3_REQUEST_REJECTED (§4.1.1): not processed, safe to retry."""
    sid = client_pair.codec.send_request(REQ)
    client_pair.pump()
    client_pair.server.quic.reset_stream(sid, H3_REQUEST_REJECTED)
    out = client_pair.pump()
    assert out == [(sid, Reset(REFUSED_STREAM, Source.UPSTREAM, "upstream_reset"))]
    assert client_pair.codec.open_streams() == 0
