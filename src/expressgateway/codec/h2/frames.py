"""A pass over inbound frame headers before h2 parses the bytes.

h2 buffers a frame until all of it has arrived and only then checks its
size, accepts up to 64 CONTINUATION frames per header block, lets a GOAWAY
close its whole state machine (so in-flight streams could not finish), and
maps several framing errors to PROTOCOL_ERROR where RFC 9113 asks for
FRAME_SIZE_ERROR. The scanner reads each 9-byte frame header as it arrives
(RFC 9113 §4.1) and:

- checks the connection preface (§3.4): the client's 24 octets, then a
  SETTINGS frame without ACK from either side;
- rejects a frame longer than our SETTINGS_MAX_FRAME_SIZE at once
  (FRAME_SIZE_ERROR, §4.2), before any of its body is buffered;
- bounds each header block (§4.3, §6.10): only CONTINUATION frames of the
  same stream may follow a HEADERS frame without END_HEADERS (else
  PROTOCOL_ERROR); more than ``max_continuations`` CONTINUATION frames or
  more than ``max_header_block`` raw octets is a CONTINUATION flood
  (CVE-2024-27316): ENHANCE_YOUR_CALM before memory grows;
- checks the fixed lengths and stream 0 rules of control frames (§6.3-§6.9)
  so the GOAWAY carries the code the RFC names;
- counts frames for the flood detectors (:mod:`.abuse`);
- takes GOAWAY frames out of the byte stream and hands them to the codec
  (``goaways``), which implements graceful shutdown itself.

A partial frame header at the end of a read is held back and prepended to
the next one (h2 could not use it anyway), so a GOAWAY can always be cut
out whole.
"""

from __future__ import annotations

from struct import Struct

from expressgateway.core.events import (
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
)

from .abuse import AbuseGuard
from .errors import FrameError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6, RFC 9218 §7.1)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
PRIORITY_UPDATE = 0x10

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4

_HEADER = Struct(">HBBBL")
_unpack = _HEADER.unpack_from
_GOAWAY_HEAD = Struct(">LL")
_MAX_DEBUG = 256


class FrameScanner:
    """Walks the inbound frame headers; see the module docstring.

    ``scan(data)`` returns the bytes to give h2 (``data`` itself in the
    common case) or raises :class:`~.errors.FrameError` /
    :class:`~.errors.AbuseDetected`. Complete GOAWAY frames are appended to
    ``goaways`` as ``(offset, last_stream_id, error_code, debug_data)``:
    ``offset`` is where the frame stood in the returned bytes, so the codec
    handles it in order with the frames around it."""

    __slots__ = (
        "_block_len",
        "_block_sid",
        "_capture",
        "_conts",
        "_guard",
        "_held",
        "_max_block",
        "_max_conts",
        "_max_frame",
        "_max_sid",
        "_preface",
        "_settings_first",
        "_skip",
        "_special",
        "goaways",
    )

    def __init__(
        self,
        guard: AbuseGuard,
        *,
        server: bool,
        max_frame_size: int = 16384,
        max_header_block: int = 131072,
        max_continuations: int = 32,
    ) -> None:
        self._guard = guard
        self._max_frame = max_frame_size
        self._max_block = max_header_block
        self._max_conts = max_continuations
        self._preface = PREFACE if server else b""
        self._settings_first = True
        #: something rare is going on (first frame, header block): every
        #: frame header goes through _special_frame first
        self._special = True
        self._skip = 0
        self._held = b""
        self._capture: bytearray | None = None
        self._block_sid = 0
        self._block_len = 0
        self._conts = 0
        self._max_sid = 0
        self.goaways: list[tuple[int, int, int, bytes]] = []

    def scan(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        pos = 0
        if self._preface:
            pos = self._check_preface(data)
            if self._preface:
                return data
        pieces: list[bytes] | None = None
        keep = 0  # start of the run of bytes that goes to h2
        skip = self._skip
        if skip:  # the body of a frame begun in an earlier read
            take = skip if skip <= n - pos else n - pos
            skip -= take
            self._skip = skip
            if self._capture is not None:  # ... of a GOAWAY: cut it out
                self._capture += data[pos : pos + take]
                pieces = [data[:pos]] if pos else []
                keep = pos + take
                if not skip:
                    self._goaway_done(pos)
            pos += take
            if skip:
                return data if pieces is None else b"".join(pieces)
        guard = self._guard
        while n - pos >= 9:
            hi, lo, ftype, flags, sid = _unpack(data, pos)
            length = (hi << 8) | lo
            sid &= 0x7FFFFFFF
            if length > self._max_frame:
                raise FrameError(
                    FRAME_SIZE_ERROR, "frame_too_large", f"{length} > {self._max_frame}"
                )
            if self._special and self._special_frame(ftype, flags, sid, length):
                pos += 9 + length  # a CONTINUATION inside its header block
                continue
            if ftype == DATA:
                if not length and not flags & END_STREAM:
                    guard.empty_data_frame()
            elif ftype == HEADERS:
                if sid > self._max_sid:
                    self._max_sid = sid
                    guard.new_stream()
                if not flags & END_HEADERS:
                    self._block_sid = sid
                    self._block_len = length
                    self._conts = 0
                    self._special = True
            elif ftype == GOAWAY:
                self._check_goaway(sid, length)
                if pieces is None:
                    pieces = []
                pieces.append(data[keep:pos])
                end = pos + 9 + length
                self._capture = bytearray(data[pos + 9 : end])
                if end <= n:
                    keep = end
                    self._goaway_done(sum(map(len, pieces)))
                else:
                    keep = n
            elif ftype == CONTINUATION:
                raise FrameError(PROTOCOL_ERROR, "bad_header_block", "CONTINUATION without HEADERS")
            else:
                self._control_frame(ftype, flags, sid, length)
            pos += 9 + length
        if pos > n:
            self._skip = pos - n
            end = n
        else:
            if pos < n:
                self._held = data[pos:]
            end = pos
        if pieces is None:
            return data if end == n else data[:end]
        if keep < end:
            pieces.append(data[keep:end])
        return b"".join(pieces)

    def _check_preface(self, data: bytes) -> int:
        """RFC 9113 §3.4: the client's first 24 octets."""
        want = self._preface
        k = min(len(want), len(data))
        if data[:k] != want[:k]:
            raise FrameError(PROTOCOL_ERROR, "bad_preface", "not an HTTP/2 connection preface")
        self._preface = want[k:]
        return k

    def _special_frame(self, ftype: int, flags: int, sid: int, length: int) -> bool:
        """The first frame, or a frame inside a header block. True if it was
        a CONTINUATION of the block (nothing else to check)."""
        if self._settings_first:
            # §3.4: the first frame of either side is a SETTINGS frame
            if ftype != SETTINGS or flags & ACK:
                raise FrameError(PROTOCOL_ERROR, "bad_preface", "first frame is not SETTINGS")
            self._settings_first = False
            self._special = False
            return False
        block_sid = self._block_sid
        if not block_sid:  # pragma: no cover - _special is only set with a block
            return False
        # §6.10: inside a header block only CONTINUATION of the same stream
        if ftype != CONTINUATION or sid != block_sid:
            raise FrameError(
                PROTOCOL_ERROR, "bad_header_block", "frame interleaved with a header block"
            )
        self._conts += 1
        self._block_len += length
        if self._conts > self._max_conts:
            raise FrameError(
                ENHANCE_YOUR_CALM, "continuation_flood", "too many CONTINUATION frames"
            )
        if self._block_len > self._max_block:
            raise FrameError(ENHANCE_YOUR_CALM, "continuation_flood", "header block too large")
        self._guard.glitch(1)
        if flags & END_HEADERS:
            self._block_sid = 0
            self._special = False
        return True

    def _control_frame(self, ftype: int, flags: int, sid: int, length: int) -> None:
        """Fixed sizes and stream-0 rules (§6.3-§6.9) and flood counts."""
        guard = self._guard
        if ftype == WINDOW_UPDATE:
            if length != 4:
                raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "WINDOW_UPDATE length")
            guard.window_update_frame()
        elif ftype == SETTINGS:
            if sid:
                raise FrameError(PROTOCOL_ERROR, "protocol_error", "SETTINGS on a stream")
            if (flags & ACK and length) or length % 6:
                raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "SETTINGS length")
            guard.settings_frame()
        elif ftype == PING:
            if sid:
                raise FrameError(PROTOCOL_ERROR, "protocol_error", "PING on a stream")
            if length != 8:
                raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "PING length")
            guard.ping_frame()
        elif ftype == RST_STREAM:
            if length != 4:
                raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "RST_STREAM length")
            guard.rst_frame()
        elif ftype == PRIORITY:
            if length != 5:
                raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "PRIORITY length")
            guard.priority_frame()
        elif ftype == PRIORITY_UPDATE:
            guard.priority_frame()
        elif ftype != PUSH_PROMISE:
            guard.glitch(1)  # an extension frame: ignored by h2, not free for us

    def _check_goaway(self, sid: int, length: int) -> None:
        if sid:
            raise FrameError(PROTOCOL_ERROR, "protocol_error", "GOAWAY on a stream")
        if length < 8:
            raise FrameError(FRAME_SIZE_ERROR, "frame_size_error", "GOAWAY length")

    def _goaway_done(self, offset: int) -> None:
        body = self._capture
        assert body is not None
        self._capture = None
        last, code = _GOAWAY_HEAD.unpack_from(body)
        self.goaways.append((offset, last & 0x7FFFFFFF, code, bytes(body[8 : 8 + _MAX_DEBUG])))

    @property
    def in_header_block(self) -> bool:
        return bool(self._block_sid)
