"""Events the HTTP/2 codecs add to the neutral ones of
:mod:`expressgateway.core.events`.

``feed()`` returns ``(stream_id, event)`` pairs. Besides the neutral events
(``RequestHead``, ``ResponseHead``, ``Informational``, ``Body``,
``Trailers``, ``Reset``, ``TunnelData``) three HTTP/2 facts need the shell's
attention; they are defined here, not in ``core``, because only a
multiplexing codec has them:

- :class:`WindowOpened` (per stream): ``send_body`` accepted less than it
  was given, and the peer has since opened the flow-control window; call
  ``send_body`` again with what is left.
- :class:`StreamRejected` (per stream): a request was refused before its
  head was delivered (malformed, over a limit). When ``error.status`` is
  non-zero the stream is still open and waits for the shell's answer (for
  instance ``send_local_reply``); when it is 0 the codec has already reset
  the stream and the event is only there to be counted.
- :class:`GoAwayReceived` (stream 0): the peer will not accept new streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from expressgateway.core.errors import DownstreamError


@dataclass(slots=True)
class WindowOpened:
    """The peer's flow-control window for this stream is open again."""


#: One shared instance: the event carries no data.
WINDOW_OPENED = WindowOpened()


@dataclass(slots=True)
class StreamRejected:
    """A request refused before its ``RequestHead`` was delivered.

    ``error.reason`` is the metric slug. ``error.status`` is the answer the
    shell should send (400, 405, 413, 431, 501), or 0 when the stream was
    already reset (a malformed request: RST_STREAM PROTOCOL_ERROR, RFC 9113
    §8.1.1). DATA that arrives for a rejected stream is dropped (and its
    flow-control credit returned) by the codec."""

    error: DownstreamError


@dataclass(slots=True)
class GoAwayReceived:
    """The peer sent GOAWAY (RFC 9113 §6.8). Streams with an id above
    ``last_stream_id`` that this side opened were not processed: the client
    codec has already reported each of them as ``Reset(REFUSED_STREAM)``,
    which is safe to retry on another connection."""

    error_code: int
    last_stream_id: int
    debug_data: bytes = b""


H2Signal = WindowOpened | StreamRejected | GoAwayReceived
