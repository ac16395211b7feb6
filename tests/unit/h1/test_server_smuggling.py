"""Request-smuggling and malformed-input corpus: each case is raw bytes, the
status and the reason slug the server codec must answer with. Every case is
also fed one byte at a time: fragmentation must not change the verdict."""

from dataclasses import dataclass

import pytest

from expressgateway.codec.h1 import H1ServerCodec
from expressgateway.core.errors import DownstreamError
from expressgateway.core.events import ResponseHead
from tests.unit.h1.helpers import bytewise


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    status: int
    reason: str
    strict_te: bool = False


H = b"Host: a\r\n"
CASES = [
    # framing conflicts (RFC 9112 §6.3)
    Case(
        "cl_and_te",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_cl_te",
    ),
    Case(
        "te_and_cl",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_cl_te",
    ),
    Case(
        "duplicate_cl_differing",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        "smuggling_duplicate_cl",
    ),
    Case(
        "duplicate_cl_equal",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
        "smuggling_duplicate_cl",
    ),
    Case(
        "cl_list",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
        400,
        "bad_content_length",
    ),
    Case(
        "cl_plus_sign",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
        400,
        "bad_content_length",
    ),
    Case(
        "cl_negative",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
        400,
        "bad_content_length",
    ),
    Case(
        "cl_hex",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello",
        400,
        "bad_content_length",
    ),
    Case(
        "cl_overflow",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
        400,
        "bad_content_length",
    ),
    Case(
        "te_not_final_chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_gzip_only",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_identity",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_xchunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_chunked_twice",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_two_fields",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_in_http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_bad_te",
    ),
    Case(
        "te_gzip_then_chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "unsupported_te",
    ),
    Case(
        "te_space_before_colon",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_header",
    ),
    Case(
        "te_obs_fold",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_header",
    ),
    Case(
        "te_vertical_tab",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_header",
    ),
    # strict_te: only an exact, single "chunked"
    Case(
        "strict_te_capitalised",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_bad_te",
        strict_te=True,
    ),
    Case(
        "strict_te_gzip_chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
        "smuggling_bad_te",
        strict_te=True,
    ),
    # chunk framing
    Case(
        "chunk_size_garbage",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n",
        400,
        "bad_chunk",
    ),
    Case(
        "chunk_size_overflow",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        400,
        "bad_chunk",
    ),
    Case(
        "chunk_bare_lf",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
        400,
        "bad_chunk",
    ),
    Case(
        "chunk_size_trailing_space",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        400,
        "bad_chunk",
    ),
    Case(
        "chunk_data_too_long",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
        400,
        "bad_chunk",
    ),
    Case(
        "trailer_content_length",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
        400,
        "bad_trailer",
    ),
    Case(
        "trailer_host",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n",
        400,
        "bad_trailer",
    ),
    # line and field syntax
    Case("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400, "bad_header"),
    Case("bare_lf_line_ends", b"GET / HTTP/1.1\nHost: a\n\n", 400, "bad_request_line"),
    Case("bare_lf_in_fields", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "bad_header"),
    Case("bare_cr", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, "bad_header"),
    Case("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400, "bad_header"),
    Case("del_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400, "bad_header"),
    Case("space_in_name", b"GET / HTTP/1.1\r\n" + H + b"X Y: b\r\n\r\n", 400, "bad_header"),
    Case("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"Host : b\r\n\r\n", 400, "bad_header"),
    Case("leading_space_field", b"GET / HTTP/1.1\r\n" + H + b" X: b\r\n\r\n", 400, "bad_header"),
    Case("colon_name", b"GET / HTTP/1.1\r\n" + H + b":path: /x\r\n\r\n", 400, "bad_header"),
    Case("bad_method", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("lowercase_method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("bad_version", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("http09", b"GET /\r\n\r\n", 400, "bad_request_line"),
    Case("http20_in_h1", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("target_not_origin_form", b"GET foo HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case("high_bit_target", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400, "bad_request_line"),
    Case(
        "tls_on_plain_port",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        400,
        "bad_request_line",
    ),
    # host confusion
    Case("host_comma_joined", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400, "bad_host"),
    Case("host_repeated", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_host"),
    Case("host_missing", b"GET / HTTP/1.1\r\n\r\n", 400, "bad_host"),
    Case("host_userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, "bad_host"),
    Case(
        "absolute_form_bad_authority",
        b"GET http://a,b/ HTTP/1.1\r\n" + H + b"\r\n",
        400,
        "bad_host",
    ),
    # header-name normalisation (auth bypass vs _/- folding backends)
    Case(
        "underscore_name",
        b"GET / HTTP/1.1\r\n" + H + b"X_Forwarded_For: 1.2.3.4\r\n\r\n",
        400,
        "header_underscore",
    ),
    # upgrade abuse
    Case(
        "ignored_upgrade_with_chunked_body",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Connection: upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_upgrade",
    ),
    Case(
        "websocket_with_body",
        b"GET / HTTP/1.1\r\n"
        + H
        + b"Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "bad_upgrade",
    ),
    Case("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405, "connect_unsupported"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_smuggling_corpus_is_rejected_with_status_and_reason(case: Case) -> None:
    codec = H1ServerCodec(strict_te=case.strict_te)
    with pytest.raises(DownstreamError) as exc:
        codec.feed(case.raw)
    assert (exc.value.status, exc.value.reason) == (case.status, case.reason)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_smuggling_corpus_verdict_survives_byte_by_byte_feeding(case: Case) -> None:
    codec = H1ServerCodec(strict_te=case.strict_te)
    with pytest.raises(DownstreamError) as exc:
        for piece in bytewise(case.raw):
            codec.feed(piece)
    assert (exc.value.status, exc.value.reason) == (case.status, case.reason)


def test_non_strict_te_accepts_capitalised_chunked() -> None:
    codec = H1ServerCodec()
    events = codec.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"
    )
    assert codec.request_complete and len(events) == 2


def test_strict_te_accepts_exact_chunked() -> None:
    codec = H1ServerCodec(strict_te=True)
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert codec.request_complete


def test_smuggled_request_in_a_content_length_body_stays_body() -> None:
    inner = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    codec = H1ServerCodec()
    events = codec.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner
    )
    assert events[-1].data == inner and codec.request_complete  # type: ignore[union-attr]
    codec.encode_response_head(ResponseHead(204, [], True), request_method=b"POST", keep_alive=True)
    assert codec.next_request() == []
