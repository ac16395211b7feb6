"""RFC 7541 (HPACK) on the server codec: every decoding error is a
connection error of type COMPRESSION_ERROR (RFC 9113 §4.3), the dynamic
table carries across header blocks, and never-indexed fields decode."""

from __future__ import annotations

import pytest
from hpack import Encoder

from expressgateway.codec.h2 import H2ConnectionError
from expressgateway.core.events import COMPRESSION_ERROR, RequestHead
from tests.unit.h2.helpers import BASIC, RawClient, goaway_of, only_head, server

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
