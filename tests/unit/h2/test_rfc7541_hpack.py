"""RFC 7541 (HPACK) on the server codec: every decoding error is a
connection error of type COMPRESSION_ERROR (RFC 9113 §4.3), the dynamic
table carries across header blocks, and never-indexed fields decode."""

from __future__ import annotations

import h2.events
import pytest
from hpack import Encoder

from expressgateway.codec.h2 import H2ConnectionError, StreamRejected
from expressgateway.core.events import COMPRESSION_ERROR, RequestHead, ResponseHead
from tests.unit.h2.helpers import (
    BASIC,
    RawClient,
    ServerPair,
    goaway_of,
    of_type,
    only_head,
    server,
)

# a block that starts with the four pseudo-headers from the static table
_PSEUDO = b"\x82\x87\x84"  # :method GET, :scheme https, :path /


def authority() -> bytes:
    # literal without indexing, indexed name :authority (1), "example.com"
    return b"\x01\x0b" + b"example.com"


def compression_error(block: bytes) -> None:
    codec = server()
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(RawClient().raw_headers(1, block), 1.0)
    assert info.value.code == COMPRESSION_ERROR
    assert info.value.reason == "hpack_error"
    assert goaway_of(codec.data_to_send()).error_code == COMPRESSION_ERROR


def test_reference_block_decodes() -> None:
    codec = server()
    head = only_head(codec.feed(RawClient().raw_headers(1, _PSEUDO + authority()), 1.0))
    assert (head.method, head.path, head.authority) == (b"GET", b"/", b"example.com")


# -- §2.3.3 index address space ---------------------------------------------------


def test_index_beyond_the_tables() -> None:
    compression_error(_PSEUDO + b"\xbf\x20")  # index 95: no such entry


def test_index_zero() -> None:
    """§6.1: index 0 is not used."""
    compression_error(_PSEUDO + b"\x80")


def test_literal_with_indexed_name_beyond_the_tables() -> None:
    compression_error(_PSEUDO + b"\x0f\x50\x01a")


# -- §4.2 / §6.3 dynamic table size updates ---------------------------------------


def test_table_size_update_larger_than_the_setting() -> None:
    """We advertise SETTINGS_HEADER_TABLE_SIZE 4096."""
    compression_error(b"\x3f\xe2\x1f" + _PSEUDO + authority())  # 4097 (5-bit prefix)


def test_table_size_update_after_a_field() -> None:
    compression_error(_PSEUDO + b"\x20" + authority())


def test_table_size_update_at_the_start_is_fine() -> None:
    codec = server()
    head = only_head(codec.feed(RawClient().raw_headers(1, b"\x20" + _PSEUDO + authority()), 1.0))
    assert head.method == b"GET"


# -- §5.1 integers, §5.2 strings (Huffman) ------------------------------------------


def test_truncated_integer() -> None:
    compression_error(_PSEUDO + b"\xff")


def test_string_longer_than_the_block() -> None:
    compression_error(_PSEUDO + b"\x01\x7f\x10abc")


def test_huffman_string_with_eos() -> None:
    """§5.2: a decoder MUST treat an EOS symbol in a string as an error."""
    compression_error(_PSEUDO + b"\x01\x84\xff\xff\xff\xff")


def test_huffman_padding_longer_than_seven_bits() -> None:
    # "a" is 00011 (5 bits); then 11111111 of padding (more than 7 bits)
    compression_error(_PSEUDO + b"\x01\x82\x1f\xff")


def test_huffman_padding_not_made_of_eos_bits() -> None:
    # "a" (00011) followed by 000 instead of 111
    compression_error(_PSEUDO + b"\x01\x81\x18")


# -- state across blocks --------------------------------------------------------------


def test_dynamic_table_carries_across_requests() -> None:
    enc = Encoder()
    raw = RawClient()
    codec = server()
    fields = [*BASIC, (b"x-token", b"abcdef" * 10)]
    first = enc.encode(fields)
    second = enc.encode(fields)
    assert len(second) < len(first) // 4  # indexed the second time
    codec.feed(raw.raw_headers(1, first), 1.0)
    head = only_head(codec.feed(raw.raw_headers(3, second), 1.0))
    assert head.headers == [(b"x-token", b"abcdef" * 10)]


def test_never_indexed_fields_decode() -> None:
    enc = Encoder()
    block = enc.encode([*BASIC, (b"authorization", b"Bearer x", True)])
    head = only_head(server().feed(RawClient().raw_headers(1, block), 1.0))
    assert head.headers == [(b"authorization", b"Bearer x")]


def test_refused_streams_still_update_the_table() -> None:
    """A HEADERS block is decoded even for a stream that is refused, or the
    table would go out of sync (RFC 9113 §4.3)."""
    enc = Encoder()
    raw = RawClient()
    codec = server(max_concurrent_streams=1)
    fields = [*BASIC, (b"x-seen", b"once")]
    codec.feed(raw.raw_headers(1, enc.encode(fields), end_stream=False), 1.0)
    codec.feed(raw.raw_headers(3, enc.encode([*BASIC, (b"x-new", b"value")])), 1.0)
    codec.reset_stream(1)
    out = codec.feed(raw.raw_headers(5, enc.encode([*BASIC, (b"x-new", b"value")])), 1.0)
    assert isinstance(out[0][1], RequestHead)
    assert out[0][1].headers == [(b"x-new", b"value")]


# -- the codecs' HPACK memos: a repeat is cheap, never stale -------------------------


# literal with incremental indexing (§6.2.1), new name
def _insert(name: bytes, value: bytes) -> bytes:
    return b"\x40" + bytes([len(name)]) + name + bytes([len(value)]) + value


# table after this block: 62 x-a: 1, 63 :authority example.com
_FILL = _PSEUDO + b"\x41\x0bexample.com" + _insert(b"x-a", b"1")
# GET https, :path /1k as a literal without indexing (as nghttp2 sends it),
# then 63 (:authority) and 62 (x-a)
_REPEAT = b"\x82\x87\x04\x03/1k\xbf\xbe"


@pytest.mark.parametrize("block", [_REPEAT, _PSEUDO + b"\xbf\xbe"])
def test_a_repeated_block_follows_the_table(block: bytes) -> None:
    """The same octets of a block that leaves the table as it was decode to
    other fields once the dynamic table has changed (the decoder
    remembers repeats only while the table stays as it was)."""
    raw = RawClient()
    codec = server()
    codec.feed(raw.raw_headers(1, _FILL), 1.0)
    for sid in (3, 5):
        head = only_head(codec.feed(raw.raw_headers(sid, block), 1.0))
        assert (head.authority, head.headers) == (b"example.com", [(b"x-a", b"1")])
    # a new entry shifts the indices: 62 x-b: 2, 63 x-a: 1, 64 :authority
    codec.feed(raw.raw_headers(7, _PSEUDO + b"\xbf" + _insert(b"x-b", b"2")), 1.0)
    out = codec.feed(raw.raw_headers(9, block), 1.0)
    assert isinstance(out[0][1], StreamRejected)  # no authority any more
    assert out[0][1].error.reason == "bad_host"


def test_a_repeated_block_after_the_table_was_emptied() -> None:
    """Size updates to 0 and back (§4.2) empty the table without adding to
    it: a repeat that pointed into it is now a decoding error."""
    raw = RawClient()
    codec = server()
    codec.feed(raw.raw_headers(1, _FILL), 1.0)
    only_head(codec.feed(raw.raw_headers(3, _REPEAT), 1.0))
    codec.feed(raw.raw_headers(5, b"\x20\x3f\xe1\x1f" + _PSEUDO + authority()), 1.0)
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(raw.raw_headers(7, _REPEAT), 1.0)
    assert info.value.code == COMPRESSION_ERROR


def test_repeated_response_heads_stay_right_as_the_table_changes() -> None:
    """The encoder's remembered octets for indexed fields are dropped when
    a field enters the table: a real h2 client decodes every head right."""
    pair = ServerPair()
    heads = [
        [(b"server", b"nginx"), (b"etag", b'"1"')],
        [(b"server", b"nginx"), (b"etag", b'"1"')],
        [(b"x-new", b"v"), (b"server", b"nginx"), (b"etag", b'"1"')],
        [(b"server", b"nginx"), (b"etag", b'"1"')],
        [(b"etag", b'"2"'), (b"server", b"nginx")],
        [(b"server", b"nginx"), (b"etag", b'"1"'), (b"x-new", b"v")],
    ]
    for fields in heads:
        sid, _ = pair.request()
        pair.codec.send_response_head(sid, ResponseHead(204, list(fields), True))
        events = pair.to_client()
        got = [ev for ev in events if isinstance(ev, h2.events.ResponseReceived)]
        assert got[0].headers == [(b":status", b"204"), *fields]


def test_response_literals_are_not_huffman_coded() -> None:
    """RFC 7541 §5.2 leaves Huffman coding to the encoder; ours sends
    literals as they are (cheaper than hpack's per-octet coder)."""
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(204, [(b"x-plain", b"visible")], True))
    assert b"visible" in pair.codec.data_to_send()


def test_memos_keep_only_small_blocks() -> None:
    """A client sending distinct large requests cannot make the codec keep
    them: the decoder remembers blocks of up to 512 octets (16 at most),
    the request validator heads with up to 4 KiB of values."""
    pair = ServerPair()
    for i in range(40):
        fields = [*BASIC, *((b"x-f%d" % k, b"%d-" % i + b"v" * 300) for k in range(20))]
        pair.request(fields)
    codec = pair.codec
    assert not codec._validator._memo
    assert len(codec._conn.decoder._memo) <= 16


def test_the_encoder_remembers_few_whole_blocks_and_no_large_ones() -> None:
    """Whole response blocks are remembered (16 at most, 1 KiB each at
    most) once their fields are; a real client still decodes every head."""
    pair = ServerPair()
    small = [(b"server", b"nginx")]
    large = [(b"server", b"nginx"), (b"x-large", b"v" * 1100)]
    for i in range(40):
        for fields in ([*small, (b"x-i", b"%d" % i)], large):
            for _ in range(2):  # the second time its fields are remembered
                sid, _ = pair.request()
                pair.codec.send_response_head(sid, ResponseHead(204, list(fields), True))
                got = of_type(pair.to_client(), h2.events.ResponseReceived)
                assert got[0].headers == [(b":status", b"204"), *fields]
    blocks = pair.codec._conn.encoder._blocks
    assert 0 < len(blocks) <= 16
    assert all(len(block) <= 1024 for block in blocks.values())
