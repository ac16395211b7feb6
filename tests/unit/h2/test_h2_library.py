"""What h2 (4.x) does on its own, pinned down: each behaviour here is one
the codecs work around (see the docstrings of expressgateway.codec.h2). If
one of these tests fails after an h2 upgrade, the workaround may no longer
be needed, or may need to change."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from tests.unit.h2.helpers import BASIC, RawClient, goaway, h2_client, settings


def bare_server(**config: object) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None, **config)  # type: ignore[arg-type]
    )
    conn.initiate_connection()
    conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings())
    conn.data_to_send()
    return conn


def test_h2_closes_the_connection_beyond_max_concurrent_streams() -> None:
    """RFC 9113 §5.1.2 wants a stream error; the codec refuses the stream
    with REFUSED_STREAM itself and keeps h2's own limit out of the way."""
    conn = bare_server()
    raw = RawClient()
    conn.local_settings.max_concurrent_streams = 1
    conn.local_settings.acknowledge()
    conn.receive_data(raw.headers(1, BASIC, end_stream=False))
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        conn.receive_data(raw.headers(3, BASIC, end_stream=False))


def test_h2_stops_everything_after_receiving_goaway() -> None:
    """A graceful GOAWAY (RFC 9113 §6.8) must let streams in flight finish;
    h2 refuses any further frame, so the codec takes GOAWAY out of the byte
    stream and handles it itself."""
    conn = bare_server()
    raw = RawClient()
    conn.receive_data(raw.headers(1, BASIC, end_stream=False))
    conn.receive_data(goaway(1))
    with pytest.raises(h2.exceptions.ProtocolError):
        conn.send_headers(1, [(b":status", b"200")])


def test_h2_cannot_send_after_its_own_goaway() -> None:
    """So our graceful GOAWAY frames are built with hyperframe and queued
    behind h2's output, leaving h2's state machine open."""
    conn = bare_server()
    conn.receive_data(RawClient().headers(1, BASIC, end_stream=False))
    conn.close_connection()
    with pytest.raises(h2.exceptions.ProtocolError):
        conn.send_headers(1, [(b":status", b"200")])


def test_h2_makes_a_content_length_mismatch_a_connection_error() -> None:
    """RFC 9113 §8.1.1 asks for a stream error: the codec hides
    content-length from h2 and checks it per stream."""
    conn = bare_server(validate_inbound_headers=False)
    raw = RawClient()
    conn.receive_data(raw.headers(1, [*BASIC, (b"content-length", b"5")], end_stream=False))
    from tests.unit.h2.helpers import data

    with pytest.raises(h2.exceptions.ProtocolError):
        conn.receive_data(data(1, b"abc", end_stream=True))


def test_h2_rejects_a_304_with_content_length() -> None:
    """A 304 may carry the length of the representation (RFC 9110 §8.6);
    h2 expects that many DATA octets when the stream ends with a DATA
    frame (as many servers end it)."""
    client = h2_client()
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.send_headers(1, BASIC, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(b":status", b"304"), (b"content-length", b"10")])
    server.send_data(1, b"", end_stream=True)
    with pytest.raises(h2.exceptions.ProtocolError):
        client.receive_data(server.data_to_send())


def test_h2_maps_hpack_errors_to_protocol_error() -> None:
    """RFC 9113 §4.3 names COMPRESSION_ERROR; the codec's decoder raises
    its own error so the GOAWAY carries the right code."""
    conn = bare_server()
    with pytest.raises(h2.exceptions.ProtocolError) as info:
        conn.receive_data(RawClient().raw_headers(1, b"\xff\xff\xff\xff"))
    assert info.value.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_h2_buffers_a_frame_before_checking_its_size() -> None:
    """h2 waits for the whole (up to 16 MiB) frame; the scanner refuses it
    from its 9-octet header."""
    conn = bare_server()
    header = bytes([0xFF, 0xFF, 0xFF, 0x0, 0x0, 0, 0, 0, 1])
    assert conn.receive_data(header + b"\0" * 100_000) == []


def test_h2_validation_makes_malformed_requests_connection_errors() -> None:
    """RFC 9113 §8.1.1: a stream error; so h2's inbound validation is off
    and the codec validates (faster, per stream)."""
    conn = bare_server()
    with pytest.raises(h2.exceptions.ProtocolError):
        conn.receive_data(RawClient().headers(1, [*BASIC, (b"connection", b"close")]))


def test_h2_does_not_count_resets_or_pings() -> None:
    """No rapid-reset or flood detection in h2 (ours: codec.h2.abuse)."""
    conn = bare_server()
    raw = RawClient()
    from tests.unit.h2.helpers import ping, rst

    wire = b"".join(
        raw.headers(1 + 2 * i, BASIC, end_stream=False) + rst(1 + 2 * i) for i in range(500)
    )
    events = conn.receive_data(wire + ping() * 500)
    assert sum(isinstance(e, h2.events.StreamReset) for e in events) == 500
