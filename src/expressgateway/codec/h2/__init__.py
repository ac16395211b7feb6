"""HTTP/2 codecs on h2: :class:`H2ServerCodec` (client -> gateway) and
:class:`H2ClientCodec` (gateway -> backend).

Both are sans-IO: ``feed(data, now)`` returns ``(stream_id, event)`` pairs
(the neutral events of :mod:`expressgateway.core.events` plus the few of
:mod:`.events`), ``data_to_send()`` returns the bytes to write, and the
only clock is the ``now`` the shell passes in. Connection-level failures
raise :class:`H2ConnectionError` after the GOAWAY was queued."""

from .abuse import AbuseLimits
from .client import H2ClientCodec
from .errors import H2ConnectionError
from .events import WINDOW_OPENED, GoAwayReceived, StreamRejected, WindowOpened
from .server import H2ServerCodec

__all__ = [
    "WINDOW_OPENED",
    "AbuseLimits",
    "GoAwayReceived",
    "H2ClientCodec",
    "H2ConnectionError",
    "H2ServerCodec",
    "StreamRejected",
    "WindowOpened",
]
