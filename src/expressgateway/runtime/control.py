"""The supervisor <-> worker control channel.

Messages are JSON objects framed by a 4-byte big-endian length, over a
``socketpair``. Both ends run asyncio, so the channel is a Protocol: one
``on_message`` callback in, ``send`` out. Control traffic is tiny and rare
(config, metrics scrapes, drain), so JSON is plenty.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any, cast

_LEN = struct.Struct(">I")
#: a metrics snapshot of a busy worker is the largest message
MAX_MESSAGE = 64 * 1024 * 1024


class ControlChannel(asyncio.Protocol):
    """Length-prefixed JSON messages over a stream socket."""

    def __init__(
        self,
        on_message: Callable[[dict[str, Any]], None],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf)
            if size > MAX_MESSAGE:
                raise ValueError(f"control message of {size} bytes exceeds {MAX_MESSAGE}")
            if len(self._buf) < 4 + size:
                return
            payload = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            self._on_message(json.loads(payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._on_close is not None:
            self._on_close()

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        payload = json.dumps(message, separators=(",", ":")).encode()
        self.transport.write(_LEN.pack(len(payload)) + payload)
