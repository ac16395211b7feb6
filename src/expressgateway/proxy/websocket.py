"""WebSocket through the proxy (RFC 6455 over an HTTP/1.1 Upgrade).

The client's upgrade request goes to the backend on a fresh connection; the
client gets ``101`` only after the backend's ``101`` (a backend that answers
anything else has that answer forwarded, and the connection closes). Then a
frame-level relay with wsproto's frame engine: each side's frames are parsed
(client frames unmasked, backend frames masked on the way out, as RFC 6455
requires) and checked against the listener's ``[listeners.websocket]`` limits:

- ``idle_timeout_seconds``: no frame either way -> close 1001 to both;
- ``ping_rate_limit_per_window`` pings per ``ping_rate_limit_window_seconds``
  from the client -> close 1008 to the client, and the backend is closed;
- ``max_message_size_bytes``: a longer message -> close 1009 to the sender's
  peer... and 1009 to the sender;
- ``read_frame_timeout_seconds``: a frame begun but not finished in time ->
  close 1008 "ws read frame timeout".
Backpressure is the same "stop reading" as for HTTP bodies.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from expressgateway.core.events import RequestHead
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy.forwarding import upstream_head

if TYPE_CHECKING:
    from expressgateway.proxy.h1back import H1Back
    from expressgateway.proxy.h1front import H1Front
    from expressgateway.proxy.stream import Stream

_TUNNELS = REGISTRY.gauge("websocket_connections", "WebSocket tunnels open.", ("listener",))
_TUNNELS_TOTAL = REGISTRY.counter(
    "websocket_connections_total", "WebSocket tunnels established.", ("listener",)
)
_FRAMES = REGISTRY.counter(
    "websocket_frames_total", "WebSocket frames relayed.", ("listener", "direction")
)
_CLOSED = REGISTRY.counter(
    "websocket_closed_by_gateway_total",
    "WebSocket tunnels the gateway closed, by reason.",
    ("listener", "reason"),
)


def start_websocket(stream: Stream, front: H1Front, head: RequestHead) -> None:
    """Send the upgrade to a backend on a fresh connection (never pooled)."""
    ctx = stream.ctx
    http = ctx.listener.http
    stream.fresh_connection = True  # type: ignore[attr-defined]
    # Extensions (permessage-deflate) are not negotiated through the gateway:
    # the frame relay checks every frame, and compressed frames would need
    # the shared compression context of each side.
    head.headers[:] = [(n, v) for n, v in head.headers if n != b"sec-websocket-extensions"]
    stream.start(
        upstream_head(head, front.peer_ip, ctx.scheme, x_forwarded=http.x_forwarded, via=http.via)
    )


class WsTunnel:
    """Relays frames between a client and a backend after both said 101."""

    def __init__(self, front: H1Front, back: H1Back) -> None:
        self.front = front
        self.back = back
        self.ctx = front.ctx
        ws = self.ctx.listener.websocket
        assert ws is not None
        self.idle_timeout = float(ws.idle_timeout_seconds)
        self.frame_timeout = float(ws.read_frame_timeout_seconds)
        self.max_message = ws.max_message_size_bytes
        self.ping_limit = ws.ping_rate_limit_per_window
        self.ping_window = float(ws.ping_rate_limit_window_seconds)
        self.from_client = FrameProtocol(client=False, extensions=[])
        self.to_backend = FrameProtocol(client=True, extensions=[])
        self.from_backend = FrameProtocol(client=True, extensions=[])
        self.to_client = FrameProtocol(client=False, extensions=[])
        self.msg_size = [0, 0]  # current message size per direction (0 = from client)
        self.frame_started: list[float] = [math.inf, math.inf]
        self.pings: list[float] = []
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self.deadline = self.last_activity + self.idle_timeout
        self.closed = False
        name = self.ctx.name
        self._frames_up = _FRAMES.labels(name, "client_to_backend")
        self._frames_down = _FRAMES.labels(name, "backend_to_client")
        _TUNNELS.labels(name).inc()
        _TUNNELS_TOTAL.labels(name).inc()
        self.ctx.sweeper.add(self)

    # -- data ---------------------------------------------------------------------
    def client_data(self, data: bytes) -> None:
        self._relay(data, 0)

    def backend_data(self, data: bytes) -> None:
        self._relay(data, 1)

    def _relay(self, data: bytes, direction: int) -> None:
        if self.closed:
            return
        parser = self.from_client if direction == 0 else self.from_backend
        sender = self.to_backend if direction == 0 else self.to_client
        out: list[bytes | bytearray] = []
        now = self.loop.time()
        self.last_activity = now
        parser.receive_bytes(data)
        try:
            for frame in parser.received_frames():
                op = frame.opcode
                payload: Any = frame.payload
                if op is Opcode.PING:
                    if direction == 0 and self._ping_flood(now):
                        self._shutdown(1008, "ping flood", "ping_flood")
                        return
                    out.append(sender.ping(payload))
                elif op is Opcode.PONG:
                    out.append(sender.pong(payload))
                elif op is Opcode.CLOSE:
                    code, reason = payload
                    out.append(sender.close(code, reason or None))
                else:
                    size = self.msg_size[direction] + len(payload)
                    if size > self.max_message:
                        self._shutdown(1009, "message too big", "message_too_big")
                        return
                    self.msg_size[direction] = 0 if frame.message_finished else size
                    self.frame_started[direction] = (
                        math.inf
                        if frame.frame_finished
                        else (
                            now
                            if self.frame_started[direction] == math.inf
                            else self.frame_started[direction]
                        )
                    )
                    out.append(sender.send_data(payload, frame.message_finished))
                if direction == 0:
                    self._frames_up.value += 1
                else:
                    self._frames_down.value += 1
        except ParseFailed as exc:
            self._shutdown(int(exc.code), str(exc)[:100], "protocol_error")
            return
        if out:
            payload = b"".join(out)
            if direction == 0:
                self.back.send_raw(payload)
            else:
                self.front.write_raw(payload)
        self._rearm()

    def _ping_flood(self, now: float) -> bool:
        cutoff = now - self.ping_window
        pings = self.pings
        while pings and pings[0] < cutoff:
            pings.pop(0)
        pings.append(now)
        return len(pings) > self.ping_limit

    def _rearm(self) -> None:
        started = min(self.frame_started)
        self.deadline = min(self.last_activity + self.idle_timeout, started + self.frame_timeout)

    # -- deadlines and endings -----------------------------------------------------
    def on_deadline(self, now: float) -> None:
        if self.closed:
            return
        if min(self.frame_started) + self.frame_timeout <= now:
            self._shutdown(1008, "ws read frame timeout", "read_frame_timeout")
        elif self.last_activity + self.idle_timeout <= now:
            self._shutdown(1001, "idle timeout", "idle_timeout")
        else:
            self._rearm()

    def _shutdown(self, code: int, reason: str, slug: str) -> None:
        """Close both sides with a WebSocket close frame, then the sockets."""
        _CLOSED.labels(self.ctx.name, slug).inc()
        try:
            code_enum = CloseReason(code)
        except ValueError:
            code_enum = CloseReason.POLICY_VIOLATION
        self.front.write_raw(bytes(self.to_client.close(code_enum, reason)))
        if slug in ("idle_timeout", "drain"):
            self.back.send_raw(bytes(self.to_backend.close(code_enum, reason)))
        else:
            self.back.send_raw(
                bytes(self.to_backend.close(CloseReason.GOING_AWAY, "proxy closing"))
            )
        self.close()

    def drain(self) -> None:
        """The gateway is draining: close 1001 (going away) to both sides."""
        if not self.closed:
            self._shutdown(1001, "going away", "drain")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctx.sweeper.discard(self)
        _TUNNELS.labels(self.ctx.name).dec()
        self.front.close_after_flush()
        self.back.close()

    def client_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.ctx.sweeper.discard(self)
            _TUNNELS.labels(self.ctx.name).dec()
            self.back.close()

    def backend_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.ctx.sweeper.discard(self)
            _TUNNELS.labels(self.ctx.name).dec()
            self.front.close_after_flush()

    # -- backpressure --------------------------------------------------------------------
    def pause_client(self) -> None:
        self.front.pause_request()

    def resume_client(self) -> None:
        self.front.resume_request()
