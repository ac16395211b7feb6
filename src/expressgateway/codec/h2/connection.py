"""What the HTTP/2 server and client codecs share: h2 set-up, the inbound
pass (frame scanner, h2, event dispatch), flow control in both directions,
keep-alive PINGs, GOAWAY handling and connection errors.

Flow control is the gateway's backpressure (docs/architecture.md):

- inbound, credit is never returned on arrival. The shell calls
  ``ack_data(stream_id, n)`` once it has written ``n`` body bytes on (or
  dropped them); only then may a WINDOW_UPDATE go out (h2 batches them).
  Padding, DATA of streams the codec refused and the outstanding credit of a
  stream that ends or is reset are returned by the codec itself, so a
  forgotten ``ack_data`` can never wedge the connection window.
- outbound, ``send_body`` sends what the peer's windows and frame size allow
  and returns how many bytes it took. The shell keeps the rest (at most
  ``max_send_buf_size`` per stream: beyond that it pauses its source) and
  waits for a ``WindowOpened`` event for that stream, then calls
  ``send_body`` again. A stream that stays blocked for ``send_stall_timeout``
  is reset by ``check_timeouts`` (a zero-window stall), and an idle peer is
  PINGed every ``keep_alive_interval`` and dropped when the ACK does not come
  within ``keep_alive_timeout``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, ConnectionInputs, H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.events import PingAckReceived, RemoteSettingsChanged, TrailersReceived, WindowUpdated
from h2.exceptions import (
    FlowControlError,
    FrameDataMissingError,
    FrameTooLargeError,
    InvalidSettingsValueError,
    ProtocolError,
    StreamClosedError,
    StreamIDTooLowError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from h2.stream import StreamInputs
from h2.utilities import authority_from_headers, is_informational_response
from hpack import Decoder, Encoder, HeaderTuple
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from expressgateway.core.events import (
    CANCEL,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    NO_ERROR,
    STREAM_CLOSED,
    Event,
    Reset,
    Source,
)
from expressgateway.core.headers import FORBIDDEN_TRAILERS

from .abuse import AbuseGuard, AbuseLimits
from .errors import AbuseDetected, FrameError, H2ConnectionError, HeaderBlockError
from .events import WINDOW_OPENED, H2Signal
from .frames import FrameScanner
from .validate import CONTENT_LENGTH, encode_fields

if TYPE_CHECKING:
    from h2.events import Event as H2Event

Output = list[tuple[int, Event | H2Signal]]

_first = itemgetter(0)
_MAX_STREAM_ID = 2**31 - 1
_DRIBBLE = 1024
_SHUTDOWN_PING = b"eg-drain"
#: HPACK memos, per connection. The encoder remembers at most this many
#: fields (all of them in hpack's tables anyway)
_MEMO_MAX = 64
#: response blocks remembered whole, and the largest one remembered
_BLOCKS_MAX = 16
_BLOCK_MAX_OCTETS = 1024
#: the decoder remembers at most 16 blocks of up to 512 octets and 64
#: fields: a peer sending distinct blocks makes it keep ~100 KiB at worst
#: (less than two concurrent requests may hold), a repeating client 1-2
_DECODE_MEMO_MAX = 16
_MEMO_BLOCK = 512
_MEMO_FIELDS = 64


class _CountingTable(HeaderTable):
    """hpack's header table, counting additions and evictions (a size
    update to 0 empties it without either: :meth:`state` has the length
    too)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    def _shrink(self) -> None:
        self.changes += 1
        super()._shrink()

    def state(self) -> tuple[int, int]:
        return self.changes, len(self.dynamic_entries)


class _HPACKDecoder(Decoder):
    """hpack's decoder with two changes for the codecs:

    - decoding errors raise :class:`HeaderBlockError` (COMPRESSION_ERROR,
      RFC 9113 §4.3), an oversized list ENHANCE_YOUR_CALM (h2 would send
      PROTOCOL_ERROR for both);
    - ``content-length`` is renamed to the :data:`CONTENT_LENGTH` object so
      h2 does not track body lengths itself: it would make a mismatch a
      connection error (RFC 9113 §8.1.1 asks for a stream error) and it
      expects DATA after a 304 that declares a length (when the stream ends
      with an empty DATA frame). The codecs track lengths per stream.

    A block whose decoding left the dynamic table as it was (indexed fields
    and literals without indexing: a client repeating a request) is
    remembered with its fields until a block changes the table; a repeat
    is then one dict lookup instead of a decode.
    """

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self.header_table = self._table = _CountingTable()
        self._memo: dict[bytes, list[HeaderTuple]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        memo = self._memo
        headers = memo.get(data)
        if headers is not None and raw:
            return headers  # h2 only reads it (and copies it into its event)
        table = self._table
        before = table.state()
        headers = self._decode(data, raw)
        if table.state() != before:
            memo.clear()
        elif raw and len(data) <= _MEMO_BLOCK and len(headers) <= _MEMO_FIELDS:
            if len(memo) >= _DECODE_MEMO_MAX:
                memo.clear()
            memo[data] = headers
        return headers

    def _decode(self, data: bytes, raw: bool) -> list[HeaderTuple]:
        try:
            headers = super().decode(data, raw)
        except OversizedHeaderListError:
            raise HeaderBlockError(ENHANCE_YOUR_CALM, "hpack_bomb") from None
        except (HPACKError, IndexError, TypeError, ValueError):
            raise HeaderBlockError(COMPRESSION_ERROR, "hpack_error") from None
        if b"content-length" in map(_first, headers):
            headers = [
                HeaderTuple(CONTENT_LENGTH, h[1]) if h[0] == b"content-length" else h
                for h in headers
            ]
        return headers  # type: ignore[return-value]


#: fields whose value is new in every message: indexing them would only churn
#: the dynamic table (and invalidate the encoder's memo), so they go as
#: literals that are never indexed
_UNIQUE_VALUES = frozenset({b"traceparent"})

#: Huffman strings decoded lately (dates, etags, server names repeat across
#: the responses of a backend); hpack's decoder is per-octet Python
_HUFFMAN_MEMO = 256


def _memo_huffman() -> None:
    """hpack decodes every Huffman literal octet by octet: remember the last
    few hundred (an LRU, so its size is bounded whatever peers send)."""
    import hpack.hpack

    namespace = vars(hpack.hpack)
    decode = namespace["decode_huffman"]
    if getattr(decode, "eg_memo", False):
        return
    memo = functools.lru_cache(maxsize=_HUFFMAN_MEMO)(decode)

    def decode_huffman(data: bytes) -> bytes:
        result: bytes = memo(bytes(data))
        return result

    decode_huffman.eg_memo = True  # type: ignore[attr-defined]
    namespace["decode_huffman"] = decode_huffman


_memo_huffman()


class _HPACKEncoder(Encoder):
    """hpack's encoder, cheaper for header blocks that repeat.

    - A field that hpack encoded as an indexed representation (static or
      dynamic table) is remembered with its octets until the dynamic table
      changes (a field added with incremental indexing, a size update):
      until then the same field encodes to the same octets, so a response
      head that repeats (the common case behind a proxy) costs a dict lookup
      per field.
    - Literals are not Huffman-coded (RFC 7541 §5.2 leaves it to the
      encoder): hpack's Huffman coder is per-octet Python, and literals are
      rare once the table holds the repeating fields.
    - Never-indexed fields (:class:`hpack.NeverIndexedHeaderTuple`) always
      go through hpack (RFC 7541 §7.1.3 is its business)."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[bytes, bytes], bytes] = {}
        #: whole blocks made only of remembered fields (a response head that
        #: repeats), valid as long as the fields' octets are
        self._blocks: dict[tuple[Any, ...], bytes] = {}

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        memo = self._memo
        if self.header_table.resized:
            self._forget()
            return super().encode(headers, huffman=False)
        key = tuple(headers)
        block = self._blocks.get(key)
        if block is not None:
            return block
        parts = []
        remembered = True
        for field in key:
            octets = memo.get(field)
            if octets is None or type(field) is not tuple:
                octets = self._add_field(field)
                remembered = False
            parts.append(octets)
        block = b"".join(parts)
        if remembered and len(block) <= _BLOCK_MAX_OCTETS:
            blocks = self._blocks
            if len(blocks) >= _BLOCKS_MAX:
                blocks.clear()
            blocks[key] = block
        return block

    def _forget(self) -> None:
        """The dynamic table changed: remembered octets may be stale."""
        self._memo.clear()
        self._blocks.clear()

    def _add_field(self, field: Any) -> bytes:
        if isinstance(field, HeaderTuple):
            sensitive = not field.indexable
            field = (field[0], field[1])
        else:
            sensitive = field[0] in _UNIQUE_VALUES
        octets = self.add(field, sensitive, huffman=False)
        first = octets[0]
        if first & 0x80:  # indexed: stable while the table is
            if not sensitive:
                memo = self._memo
                if len(memo) >= _MEMO_MAX:
                    self._forget()
                memo[field] = octets
        elif first & 0x40:  # incremental indexing: the table changed
            self._forget()
        return octets


class _NullLogger:
    """h2 logs through ``config.logger``; nothing here is worth a call."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def trace(self, *args: Any, **kwargs: Any) -> None:
        pass


class Stream:
    """The codec's view of one stream (h2 keeps the protocol state)."""

    __slots__ = (
        "blocked_since",
        "can_send",
        "expected",
        "fresh",
        "head_sent",
        "local_done",
        "no_body",
        "received",
        "rejected",
        "remote_done",
        "sid",
        "tunnel",
        "unacked",
        "want",
    )

    def __init__(self, sid: int) -> None:
        self.sid = sid
        #: END_STREAM received / sent
        self.remote_done = False
        self.local_done = False
        #: server: the response head went out; client: a final response came
        self.head_sent = False
        #: a head went out on our side: body and trailers may follow
        self.can_send = False
        #: body octets received, and those not yet acknowledged by the shell
        self.received = 0
        self.unacked = 0
        #: the declared content-length of what we receive
        self.expected: int | None = None
        #: an extended CONNECT tunnel: DATA is TunnelData
        self.tunnel = False
        #: client: the response has no content (HEAD, 204, 304)
        self.no_body = False
        #: server: refused before the head was delivered; waits for a reply
        self.rejected = False
        #: server: the RequestHead was produced by the current feed()
        self.fresh = False
        #: blocked by flow control since (``now``), and what was left
        self.blocked_since = 0.0
        self.want = 0


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return bytes(
        GoAwayFrame(
            0, last_stream_id=last_stream_id, error_code=code, additional_data=debug
        ).serialize()
    )


_H2_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (FlowControlError, "flow_control_error"),
    (FrameTooLargeError, "frame_too_large"),
    (FrameDataMissingError, "frame_size_error"),
    (InvalidSettingsValueError, "bad_settings"),
    (TooManyStreamsError, "too_many_streams"),
    (StreamClosedError, "stream_closed"),
)


#: h2 counts the open streams (and drops the closed ones) every this many
#: new streams
CULL_EVERY = 16


class LeanConnection(H2Connection):
    """h2's connection, receiving frames without building ``repr(frame)``
    for a trace log line first (h2 formats it eagerly, whatever the log
    level: about 2.5% of an HTTP/2 worker's time). Otherwise h2's
    ``_receive_frame`` as in h2 4.x, error handling included."""

    _until_cull = CULL_EVERY

    def _cull_due(self) -> bool:
        """True every :data:`CULL_EVERY` calls: h2 counts open streams by
        scanning all of them (dropping the closed ones on the way) for every
        new stream, but our codecs keep the stream limits themselves, so the
        scan only needs to run often enough that closed streams don't pile up."""
        left = self._until_cull - 1
        if left > 0:
            self._until_cull = left
            return False
        self._until_cull = CULL_EVERY
        return True

    def _receive_frame(self, frame: Any) -> list[Any]:
        events: list[Any]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            # closed by RST_STREAM: a stream error; otherwise a connection error
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        """h2's, with the stream's ``receive_headers`` inlined, minus what
        our configuration makes a no-op (inbound validation and
        normalization off, no header_encoding: h2 would build validation
        flags, then only copy the list): the same stream-limit check, HPACK
        decode, stream opening, state machine inputs and content-length
        tracking, in the same order."""
        sid = frame.stream_id
        stream = self.streams.get(sid)
        if stream is None:
            limit = self.local_settings.max_concurrent_streams
            open_now = self.open_inbound_streams
            if open_now + 1 > limit:
                raise TooManyStreamsError(f"Max inbound streams is {limit}, {open_now} open")
        headers = _decode_headers(self.decoder, frame.data)
        events = self.state_machine.process_input(_RECV_HEADERS)
        if stream is None:
            stream = self._begin_new_stream(sid, AllowedStreamIDs(not self.config.client_side))
        flags = frame.flags
        end = "END_STREAM" in flags
        machine = stream.state_machine
        if is_informational_response(headers):
            if end:
                raise ProtocolError("Cannot set END_STREAM on informational responses")
            stream_events = machine.process_input(_STREAM_RECV_INFORMATIONAL)
        else:
            stream_events = machine.process_input(_STREAM_RECV_HEADERS)
        first: Any = stream_events[0]  # the headers event (h2 types it as Event)
        if end:
            ended = machine.process_input(_STREAM_RECV_END)
            first.stream_ended = ended[0]
            stream_events += ended
        stream._initialize_content_length(headers)
        if isinstance(first, TrailersReceived) and not end:
            raise ProtocolError("Trailers must have END_STREAM set")
        first.headers = list(headers)
        if "PRIORITY" in flags:
            _, p_events = self._receive_priority_frame(frame)
            first.priority_updated = p_events[0]
            stream_events.extend(p_events)
        return [], events + stream_events


class H2Codec:
    """Base of :class:`~.server.H2ServerCodec` and
    :class:`~.client.H2ClientCodec`; see their docstrings for the API."""

    _source = Source.DOWNSTREAM
    _connection_class: type[H2Connection] = LeanConnection

    def __init__(
        self,
        *,
        client_side: bool,
        max_concurrent_streams: int,
        max_header_list_size: int,
        max_headers: int,
        max_send_buf_size: int,
        keep_alive_interval_ms: int,
        keep_alive_timeout_ms: int,
        initial_stream_window_size: int,
        initial_connection_window_size: int,
        send_stall_timeout: float,
        max_continuation_frames: int,
        max_header_block_bytes: int | None,
        abuse_limits: AbuseLimits | None,
        max_rapid_resets: int,
        max_local_error_resets: int,
        extra_settings: dict[SettingCodes | int, int] | None = None,
    ) -> None:
        self._max_list = max_header_list_size
        self._max_headers = max_headers
        #: per-stream cap on what the shell may hold for ``send_body``
        self.max_send_buf_size = max_send_buf_size
        self._ka_interval = keep_alive_interval_ms / 1000.0
        self._ka_timeout = keep_alive_timeout_ms / 1000.0
        self._stall_timeout = send_stall_timeout
        self._conn_window = initial_connection_window_size

        config = H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            logger=_NullLogger(),  # type: ignore[arg-type]
        )
        conn = self._connection_class(config)
        settings: dict[SettingCodes, int] = {
            SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: initial_stream_window_size,
            SettingCodes.ENABLE_PUSH: 0,
        }
        for key, value in (extra_settings or {}).items():
            settings[SettingCodes(key)] = value
        conn.local_settings = Settings(client=client_side, initial_values=settings)
        # decoded lists up to 2x the advertised cap are refused per stream
        # (431 / 502); beyond that the block is an HPACK bomb
        decoder = _HPACKDecoder(max_header_list_size=2 * max_header_list_size)
        conn.decoder = decoder
        conn.encoder = _HPACKEncoder()
        self._conn = conn

        self._guard = AbuseGuard(
            abuse_limits or AbuseLimits(),
            max_rapid_resets=max_rapid_resets,
            max_local_error_resets=max_local_error_resets,
        )
        self._scanner = FrameScanner(
            self._guard,
            server=not client_side,
            max_frame_size=conn.local_settings.max_frame_size,
            max_header_block=(
                2 * max_header_list_size
                if max_header_block_bytes is None
                else max_header_block_bytes
            ),
            max_continuations=max_continuation_frames,
        )
        self._streams: dict[int, Stream] = {}
        self._blocked: dict[int, Stream] = {}
        self._out = bytearray()
        self._dead: H2ConnectionError | None = None
        self._last_recv: float | None = None
        #: the last ``now`` seen (feed / check_timeouts)
        self._now = 0.0
        self._ping_sent_at: float | None = None
        self._ping_data = b""
        self._pings = 0
        self._shutdown_at: float | None = None
        #: streams of the peer above this id are refused (after our GOAWAY)
        self._last_accepted = _MAX_STREAM_ID
        #: a GOAWAY went out / came in
        self.goaway_sent = False
        self.goaway_received = False
        #: the round-trip time of the last keep-alive PING (seconds)
        self.ping_rtt: float | None = None
        self._dispatch: dict[type[H2Event], Callable[[Any, Output], None]] = {
            WindowUpdated: self._on_window_updated,
            RemoteSettingsChanged: self._on_settings,
            PingAckReceived: self._on_ping_ack,
        }

    # -- set-up and output --------------------------------------------------

    def initiate(self) -> bytes:
        """The connection preface (client) and our SETTINGS, plus the
        WINDOW_UPDATE that raises the connection window to its configured
        size (RFC 9113 §6.9.2: SETTINGS cannot change it)."""
        conn = self._conn
        conn.initiate_connection()
        increment = self._conn_window - 65535
        if increment > 0:
            conn.increment_flow_control_window(increment)
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Everything queued for the peer (drain after every call)."""
        if self._out:
            data = bytes(self._out + self._conn.data_to_send())
            self._out.clear()
            return data
        return self._conn.data_to_send()

    def _inject(self, frame: bytes) -> None:
        """Queue a frame we build ourselves, after what h2 has queued."""
        self._out += self._conn.data_to_send()
        self._out += frame

    # -- inbound --------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> Output:
        """Process bytes from the peer; returns ``(stream_id, event)``
        pairs. Raises :class:`H2ConnectionError` (GOAWAY already queued)
        when the connection must close."""
        if self._dead is not None:
            raise self._dead
        self._last_recv = self._now = now
        self._guard.tick(now)
        out: Output = []
        scanner = self._scanner
        try:
            data = scanner.scan(data)
            if not scanner.goaways:
                if data:
                    self._process(self._conn.receive_data(data), out)
            else:
                self._feed_around_goaways(data, out)
        except FrameError as exc:
            self._fail(exc.code, exc.reason, exc.detail)
        except AbuseDetected as exc:
            self._fail(ENHANCE_YOUR_CALM, exc.reason)
        except HeaderBlockError as exc:
            self._fail(exc.code, exc.reason)
        except ProtocolError as exc:
            self._h2_failed(exc)
        self._after_feed()
        return out

    def _process(self, events: list[H2Event], out: Output) -> None:
        dispatch = self._dispatch
        for ev in events:
            handler = dispatch.get(type(ev))
            if handler is not None:
                handler(ev, out)

    def _feed_around_goaways(self, data: bytes, out: Output) -> None:
        """GOAWAY frames were cut out of ``data``: handle each where it stood."""
        goaways = self._scanner.goaways
        pos = 0
        for offset, last, code, debug in goaways:
            if offset > pos:
                self._process(self._conn.receive_data(data[pos:offset]), out)
                pos = offset
            self._on_goaway(last, code, debug, out)
        goaways.clear()
        if pos < len(data):
            self._process(self._conn.receive_data(data[pos:]), out)

    def _after_feed(self) -> None:
        pass

    def _fail(self, code: int, reason: str, detail: str = "") -> Any:
        """Queue GOAWAY(code) and raise the connection error."""
        err = H2ConnectionError(code, reason, source=self._source, detail=detail)
        if self._dead is None:
            self._inject(goaway_frame(self._peer_highest(), code, reason.encode()))
            self.goaway_sent = True
            self._dead = err
        raise err

    def _h2_failed(self, exc: ProtocolError) -> Any:
        """h2 found the error and has queued its GOAWAY already."""
        reason = "protocol_error"
        for cls, slug in _H2_REASONS:
            if isinstance(exc, cls):
                reason = slug
                break
        err = H2ConnectionError(int(exc.error_code), reason, source=self._source, detail=str(exc))
        self.goaway_sent = True
        self._dead = err
        raise err from None

    def _peer_highest(self) -> int:
        """The last stream id of the peer that we processed (GOAWAY)."""
        return 0

    # -- flow control: inbound -------------------------------------------------

    def ack_data(self, stream_id: int, nbytes: int) -> None:
        """``nbytes`` body octets of ``stream_id`` were written on (or
        dropped): their flow-control credit may go back to the peer. Extra
        or late acknowledgements are ignored."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        unacked = st.unacked
        if nbytes > unacked:
            nbytes = unacked
        if nbytes <= 0:
            return
        st.unacked = unacked - nbytes
        self._conn.acknowledge_received_data(nbytes, stream_id)

    def _release(self, st: Stream, extra: int = 0) -> None:
        """Give back the credit the shell still holds for a stream that is
        over (and ``extra`` octets the codec took itself)."""
        n = st.unacked + extra
        st.unacked = 0
        if n > 0:
            self._conn.acknowledge_received_data(n, st.sid)

    def _forget(self, st: Stream) -> None:
        self._streams.pop(st.sid, None)
        if st.blocked_since:
            self._blocked.pop(st.sid, None)
        if st.unacked:
            self._release(st)

    # -- flow control: outbound -------------------------------------------------

    def window(self, stream_id: int) -> int:
        """How many octets ``send_body`` would take now (0 if none)."""
        try:
            return max(0, self._conn.local_flow_control_window(stream_id))
        except ProtocolError:
            return 0

    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send as much of ``data`` as flow control and the frame size allow
        (``end_stream`` only goes out with the last byte) and return how
        many octets were taken. When it is less than ``len(data)`` the
        stream is *blocked*: a ``WindowOpened`` event will say when to call
        again with the rest. Data for a stream that is over (reset, ended)
        is dropped and counted as taken."""
        st = self._streams.get(stream_id)
        n = len(data)
        if st is None or st.local_done:
            return n
        if not st.can_send:
            raise RuntimeError("send_body() before the head")
        conn = self._conn
        if not n:
            if end_stream:
                conn.end_stream(stream_id)
                self._local_end(st)
            return 0
        window = conn.outbound_flow_control_window
        stream_window = conn.streams[stream_id].outbound_flow_control_window
        if stream_window < window:
            window = stream_window
        if window <= 0:
            self._block(st, n)
            return 0
        take = n if n <= window else window
        end = end_stream and take == n
        size = conn.max_outbound_frame_size
        if take <= size:
            send_data_frame(conn, stream_id, data if take == n else data[:take], end)
            frames = 1
        else:
            frames = 0
            for off in range(0, take, size):
                last = off + size >= take
                send_data_frame(conn, stream_id, data[off : min(off + size, take)], end and last)
                frames += 1
        self._guard.data_frames_sent(frames)
        if take < n:
            self._block(st, n - take)
        elif st.blocked_since:
            st.blocked_since = 0.0
            self._blocked.pop(stream_id, None)
        if end:
            self._local_end(st)
        return take

    def _block(self, st: Stream, want: int) -> None:
        if not st.blocked_since:
            # (the time of the last feed/check_timeouts: send_body has no now)
            st.blocked_since = self._now or 1e-9
            self._blocked[st.sid] = st
        st.want = want

    def _on_window_updated(self, ev: WindowUpdated, out: Output) -> None:
        if not self._blocked:
            return
        sid = ev.stream_id
        if sid:
            st = self._blocked.get(sid)
            if st is not None:
                self._maybe_unblock(st, out)
        else:
            for st in list(self._blocked.values()):
                self._maybe_unblock(st, out)

    def _on_settings(self, ev: RemoteSettingsChanged, out: Output) -> None:
        if self._blocked and SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            for st in list(self._blocked.values()):
                self._maybe_unblock(st, out)

    def _maybe_unblock(self, st: Stream, out: Output) -> None:
        avail = self.window(st.sid)
        if avail <= 0:
            return
        if avail < _DRIBBLE and avail < st.want:
            self._guard.dribble()  # RFC 9113 §10.5: a window opened byte by byte
        st.blocked_since = 0.0
        del self._blocked[st.sid]
        out.append((st.sid, WINDOW_OPENED))

    # -- sending ---------------------------------------------------------------

    def send_trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        """End the stream with a trailer section. Fields that must not be
        trailers (RFC 9110 §6.5.1) are dropped; with none left the stream
        ends with an empty DATA frame."""
        st = self._streams.get(stream_id)
        if st is None or st.local_done:
            return
        if not st.can_send:
            raise RuntimeError("send_trailers() before the head")
        fields, _, _ = encode_fields(headers, FORBIDDEN_TRAILERS)
        if fields:
            self._conn.send_headers(stream_id, fields, end_stream=True)
        else:
            self._conn.end_stream(stream_id)
        self._local_end(st)

    def _local_end(self, st: Stream) -> None:
        """END_STREAM went out on ``st``."""
        st.local_done = True
        if st.blocked_since:
            st.blocked_since = 0.0
            self._blocked.pop(st.sid, None)
        if st.remote_done:
            self._forget(st)

    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        """Abort a stream (RST_STREAM ``code``); no event follows. Unknown
        or finished streams are ignored."""
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        self._blocked.pop(stream_id, None)
        self._rst(stream_id, code)
        self._release(st)

    def _rst(self, stream_id: int, code: int) -> None:
        """RST_STREAM unless h2 has closed the stream already (both sides
        ended it: there is nothing left to reset, and RFC 9113 §5.1 forbids
        frames on a closed stream)."""
        try:
            self._conn.reset_stream(stream_id, code)
        except StreamClosedError:
            pass

    def _stream_error(
        self, st: Stream, code: int, reason: str, out: Output, extra: int = 0
    ) -> None:
        """Reset ``st`` for the peer's fault and report it."""
        self._streams.pop(st.sid, None)
        self._blocked.pop(st.sid, None)
        self._rst(st.sid, code)
        self._release(st, extra)
        out.append((st.sid, Reset(code, self._source, reason)))
        self._guard.local_error_reset()

    # -- keep-alive, timeouts, GOAWAY --------------------------------------------

    def ping(self, now: float) -> None:
        """Send a PING now (liveness check) unless one is outstanding; its
        ACK must come within ``keep_alive_timeout`` (``check_timeouts``)."""
        if self._ping_sent_at is not None or self._dead is not None:
            return
        self._pings += 1
        self._ping_data = b"eg" + self._pings.to_bytes(6, "big")
        self._conn.ping(self._ping_data)
        self._guard.pings.credit(1)
        self._ping_sent_at = now

    def _on_ping_ack(self, ev: PingAckReceived, out: Output) -> None:
        data = ev.ping_data
        if data == self._ping_data and self._ping_sent_at is not None:
            self.ping_rtt = self._now - self._ping_sent_at
            self._ping_sent_at = None
        elif data == _SHUTDOWN_PING and self._shutdown_at is not None:
            self._final_goaway()

    def check_timeouts(self, now: float) -> Output:
        """Run the timers: a keep-alive PING after ``keep_alive_interval``
        without input, the connection error ``keepalive_timeout`` when its
        ACK is late (raises :class:`H2ConnectionError`), the second GOAWAY of
        a graceful shutdown, and streams blocked by flow control for longer
        than ``send_stall_timeout`` (reset with CANCEL, reported as
        ``Reset(reason="send_stall")``)."""
        if self._dead is not None:
            return []
        out: Output = []
        self._now = now
        if self._last_recv is None:
            self._last_recv = now
        sent = self._ping_sent_at
        if sent is not None:
            if now - sent >= self._ka_timeout:
                self._fail(NO_ERROR, "keepalive_timeout")
        elif self._ka_interval and now - self._last_recv >= self._ka_interval:
            self.ping(now)
        if self._shutdown_at is not None and now >= self._shutdown_at:
            self._final_goaway()
        if self._blocked and self._stall_timeout:
            limit = now - self._stall_timeout
            for st in list(self._blocked.values()):
                if st.blocked_since <= limit:
                    self._streams.pop(st.sid, None)
                    self._blocked.pop(st.sid, None)
                    self._rst(st.sid, CANCEL)
                    self._release(st)
                    out.append((st.sid, Reset(CANCEL, self._source, "send_stall")))
                    try:
                        self._guard.send_stall()
                    except AbuseDetected as exc:
                        self._fail(ENHANCE_YOUR_CALM, exc.reason)
        return out

    def next_deadline(self) -> float | None:
        """When ``check_timeouts`` next has something to do (None: never)."""
        when = math.inf
        if self._ping_sent_at is not None:
            when = self._ping_sent_at + self._ka_timeout
        elif self._ka_interval and self._last_recv is not None:
            when = self._last_recv + self._ka_interval
        if self._shutdown_at is not None:
            when = min(when, self._shutdown_at)
        if self._blocked and self._stall_timeout:
            oldest = min(st.blocked_since for st in self._blocked.values())
            when = min(when, oldest + self._stall_timeout)
        return None if when == math.inf else when

    def goaway(self, code: int = NO_ERROR, last_stream_id: int | None = None) -> None:
        """Send GOAWAY now: no stream of the peer above ``last_stream_id``
        (default: the highest one seen) will be processed; streams below
        finish normally. The shell closes once ``open_streams`` is 0."""
        last = self._peer_highest() if last_stream_id is None else last_stream_id
        self._inject(goaway_frame(last, code))
        self.goaway_sent = True
        self._shutdown_at = None
        if last < self._last_accepted:
            self._last_accepted = last

    def shutdown(self, now: float) -> None:
        """Graceful shutdown in two steps (RFC 9113 §6.8): GOAWAY with the
        largest stream id and a PING now; when the PING comes back (or after
        ``keep_alive_timeout``) GOAWAY with the last stream actually seen,
        so requests in flight when the first GOAWAY left are not lost."""
        if self.goaway_sent or self._dead is not None:
            return
        self._inject(goaway_frame(_MAX_STREAM_ID, NO_ERROR))
        self.goaway_sent = True
        self._conn.ping(_SHUTDOWN_PING)
        self._shutdown_at = now + (self._ka_timeout or 1.0)

    def _final_goaway(self) -> None:
        self._shutdown_at = None
        last = self._peer_highest()
        self._inject(goaway_frame(last, NO_ERROR))
        self._last_accepted = last

    def _on_goaway(self, last: int, code: int, debug: bytes, out: Output) -> None:
        raise NotImplementedError

    def connection_lost(self) -> Output:
        """The transport is gone (EOF, reset): every stream not finished
        ends abnormally, ``Reset(CANCEL, source, "connection_lost")``, never
        as a clean end. The codec is dead afterwards."""
        out: Output = [
            (sid, Reset(CANCEL, self._source, "connection_lost")) for sid in self._streams
        ]
        self._streams.clear()
        self._blocked.clear()
        if self._dead is None:
            self._dead = H2ConnectionError(NO_ERROR, "connection_lost", source=self._source)
        return out

    # -- state -------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Streams not finished yet (both halves ended, or reset)."""
        return len(self._streams)

    @property
    def closed(self) -> bool:
        """A connection error happened: flush and close."""
        return self._dead is not None

    @property
    def draining(self) -> bool:
        """A GOAWAY went out or came in: once ``open_streams`` is 0 the shell
        can close the connection."""
        return self.goaway_sent or self.goaway_received

    @property
    def abuse_totals(self) -> dict[str, int]:
        """Lifetime counts of notable events (see :mod:`.abuse`)."""
        return self._guard.totals

    def is_stream_open(self, stream_id: int) -> bool:
        return stream_id in self._streams


def local_reset_reason(code: int) -> str:
    """The reason slug of a stream h2 reset by itself for the peer's fault."""
    if code == FLOW_CONTROL_ERROR:
        return "flow_control_error"
    if code == STREAM_CLOSED:
        return "stream_closed"
    return "protocol_error"


def error_code_name(code: int) -> str:
    """``ENHANCE_YOUR_CALM`` for 0xB (for logs)."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return hex(code)


#: a frame header: length (24 bits, as 8 + 16), type, flags, stream id
_FRAME_HEAD = struct.Struct(">BHBBL")
_SEND_DATA = ConnectionInputs.SEND_DATA
_RECV_HEADERS = ConnectionInputs.RECV_HEADERS
_STREAM_RECV_HEADERS = StreamInputs.RECV_HEADERS
_STREAM_RECV_INFORMATIONAL = StreamInputs.RECV_INFORMATIONAL_HEADERS
_STREAM_RECV_END = StreamInputs.RECV_END_STREAM
_SEND_HEADERS = ConnectionInputs.SEND_HEADERS
_STREAM_SEND_DATA = StreamInputs.SEND_DATA
_STREAM_SEND_HEADERS = StreamInputs.SEND_HEADERS
_STREAM_SEND_END = StreamInputs.SEND_END_STREAM
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4


def send_headers_frames(conn: H2Connection, stream_id: int, headers: list[Any], end: bool) -> None:
    """h2's ``send_headers`` for a request head (client) or a final
    response head (server), without hyperframe objects: the same checks
    and state machine inputs (a client's new stream is opened as h2 opens
    it), the block encoded by h2's encoder (HPACK state stays h2's), split
    into HEADERS + CONTINUATION at the peer's frame size. No priority, no
    padding, no 1xx; outbound validation is off in our h2 configuration
    anyway (:func:`.validate.encode_fields` did it). About 8 µs less per
    head."""
    stream = conn.streams.get(stream_id)
    if stream is None:
        limit = conn.remote_settings.max_concurrent_streams
        open_now = conn.open_outbound_streams
        if open_now + 1 > limit:
            raise TooManyStreamsError(f"Max outbound streams is {limit}, {open_now} open")
    conn.state_machine.process_input(_SEND_HEADERS)
    if stream is None:
        stream = conn._begin_new_stream(stream_id, AllowedStreamIDs(conn.config.client_side))
    machine = stream.state_machine
    machine.process_input(_STREAM_SEND_HEADERS)
    block = conn.encoder.encode(headers)
    flags = 0
    if end:
        machine.process_input(_STREAM_SEND_END)
        flags = _END_STREAM
    elif machine.trailers_sent:
        raise ProtocolError("Trailers must have END_STREAM set.")
    if machine.client and stream._authority is None:
        stream._authority = authority_from_headers(headers)
    # what h2 records: the request's method (our request blocks start with
    # it), None for a response (no :method in it)
    stream.request_method = headers[0][1] if machine.client else None
    out = conn._data_to_send
    n = len(block)
    size = conn.max_outbound_frame_size
    if n <= size:
        out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, _HEADERS, flags | _END_HEADERS, stream_id)
        out += block
        return
    out += _FRAME_HEAD.pack(size >> 16, size & 0xFFFF, _HEADERS, flags, stream_id)
    out += block[:size]
    for off in range(size, n, size):
        piece = block[off : off + size]
        m = len(piece)
        last = _END_HEADERS if off + size >= n else 0
        out += _FRAME_HEAD.pack(m >> 16, m & 0xFFFF, _CONTINUATION, last, stream_id)
        out += piece


def send_data_frame(conn: H2Connection, stream_id: int, data: bytes, end: bool) -> None:
    """h2's ``send_data`` for an unpadded frame the caller already fitted to
    the windows and the frame size, without a hyperframe object: the same
    state machine inputs and window updates, the frame serialized directly
    (about 6 µs less per DATA frame)."""
    conn.state_machine.process_input(_SEND_DATA)
    stream = conn.streams[stream_id]
    machine = stream.state_machine
    machine.process_input(_STREAM_SEND_DATA)
    if end:
        machine.process_input(_STREAM_SEND_END)
    n = len(data)
    stream.outbound_flow_control_window -= n
    conn.outbound_flow_control_window -= n
    out = conn._data_to_send
    out += _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, _DATA, _END_STREAM if end else 0, stream_id)
    out += data
