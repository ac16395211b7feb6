"""HTTP/2 denial-of-service detectors (what h2 does not do itself).

Every detector is a counter over a fixed time window (``now`` comes from
the caller; windows restart when ``now`` passes their end, so a burst that
straddles a boundary can reach up to twice a limit: simple, and enough to
stop floods that run for more than a moment). A crossed limit raises
:class:`~.errors.AbuseDetected`; the codec answers GOAWAY ENHANCE_YOUR_CALM
and raises :class:`~.errors.H2ConnectionError` with the same reason, which
the shell counts.

Rate limits, per ``window`` seconds (default 10 s):

=====================  ==========================================  ==========
reason                 what is counted                             default
=====================  ==========================================  ==========
``rapid_reset``        streams the client reset before a response  100 (from
                       head went out (CVE-2023-44487)              config)
``local_error_resets`` streams we reset or rejected for the        100 (from
                       client's fault (RUSTSEC-2024-0003)          config)
``settings_flood``     SETTINGS frames (with or without ACK)       100
``ping_flood``         PING frames, less one per DATA frame and    100
                       per PING we sent (a peer's BDP probes that
                       ride on our data are free)
``window_update_flood``WINDOW_UPDATE frames, less two per DATA     200
                       frame we sent (stream + connection)
``priority_flood``     PRIORITY / PRIORITY_UPDATE frames, less     100
                       one per new stream
``rst_flood``          RST_STREAM frames, less one per new stream  100
``empty_data_flood``   DATA frames with no payload and no          100
                       END_STREAM (CVE-2019-9518)
=====================  ==========================================  ==========

Glitches (HAProxy style): suspicious but individually harmless events add
points to a score over ``glitch_window`` (60 s); above ``glitch_threshold``
(400) the connection is closed with reason ``glitches``. Points: 1 per
CONTINUATION frame, extension frame or PRIORITY frame not paid for by a new
stream; 2 per SETTINGS frame, PING not paid for by our DATA, empty DATA
frame, rapid reset, stream we reset or refused for a client error, and
stream refused beyond MAX_CONCURRENT_STREAMS; 5 per window "dribble" (a
blocked stream opened by less than 1 KiB) and per stream reset for a send
stall. With the default limits a burst of one kind trips its own detector
first (101 events = 202 points, well under the threshold), so the metric
names the attack; the score catches attacks that stay under every single
limit but keep going, or mix kinds.

Credits are bounded (a counter never goes below ``-limit``), so a long
download cannot bank an unlimited allowance.

Elsewhere: CONTINUATION floods and oversized header blocks are stopped by
the frame scanner (:mod:`.frames`), HPACK bombs by the decoder cap, streams
beyond MAX_CONCURRENT_STREAMS and after the lifetime cap are refused by the
server codec. Not counted: DATA/HEADERS on streams already closed, which h2
answers one for one with RST_STREAM (bounded by the peer's own sending and
by the shell's write backpressure).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AbuseDetected


@dataclass(frozen=True, slots=True, kw_only=True)
class AbuseLimits:
    """Thresholds of the detectors; see the module docstring."""

    window: float = 10.0
    max_settings: int = 100
    max_pings: int = 100
    max_window_updates: int = 200
    max_priority: int = 100
    max_rst: int = 100
    max_empty_data: int = 100
    glitch_window: float = 60.0
    glitch_threshold: int = 400


class _Rate:
    """A count of events in the current window, with bounded credit."""

    __slots__ = ("count", "limit", "reason")

    def __init__(self, limit: int, reason: str) -> None:
        self.limit = limit
        self.reason = reason
        self.count = 0

    def hit(self) -> bool:
        """Count one event; True if it was not paid for by credit."""
        count = self.count + 1
        self.count = count
        if count > self.limit:
            raise AbuseDetected(self.reason)
        return count > 0

    def credit(self, n: int) -> None:
        count = self.count - n
        self.count = count if count > -self.limit else -self.limit


class AbuseGuard:
    """The per-connection detectors. ``tick(now)`` must be called before the
    events of one ``feed`` are counted (the codecs do)."""

    __slots__ = (
        "_glitch_end",
        "_glitch_window",
        "_window",
        "_window_end",
        "empty_data",
        "glitch_threshold",
        "glitches",
        "local_errors",
        "pings",
        "priority",
        "rapid_resets",
        "rsts",
        "settings",
        "totals",
        "window_updates",
    )

    def __init__(
        self,
        limits: AbuseLimits,
        *,
        max_rapid_resets: int = 100,
        max_local_error_resets: int = 100,
    ) -> None:
        self._window = limits.window
        self._glitch_window = limits.glitch_window
        self._window_end = float("-inf")
        self._glitch_end = float("-inf")
        self.glitch_threshold = limits.glitch_threshold
        self.glitches = 0
        self.settings = _Rate(limits.max_settings, "settings_flood")
        self.pings = _Rate(limits.max_pings, "ping_flood")
        self.window_updates = _Rate(limits.max_window_updates, "window_update_flood")
        self.priority = _Rate(limits.max_priority, "priority_flood")
        self.rsts = _Rate(limits.max_rst, "rst_flood")
        self.empty_data = _Rate(limits.max_empty_data, "empty_data_flood")
        self.rapid_resets = _Rate(max_rapid_resets, "rapid_reset")
        self.local_errors = _Rate(max_local_error_resets, "local_error_resets")
        #: lifetime totals of notable events, for metrics (read at close):
        #: ``rapid_reset``, ``local_error_reset``, ``refused_stream``,
        #: ``dribble``, ``send_stall``, ``glitches`` (points)
        self.totals: dict[str, int] = {}

    def tick(self, now: float) -> None:
        """Start new windows when ``now`` has passed their end."""
        if now >= self._window_end:
            self._window_end = now + self._window
            for rate in (
                self.settings,
                self.pings,
                self.window_updates,
                self.priority,
                self.rsts,
                self.empty_data,
                self.rapid_resets,
                self.local_errors,
            ):
                rate.count = 0
        if now >= self._glitch_end:
            self._glitch_end = now + self._glitch_window
            self.glitches = 0

    def glitch(self, points: int) -> None:
        totals = self.totals
        totals["glitches"] = totals.get("glitches", 0) + points
        score = self.glitches + points
        self.glitches = score
        if score > self.glitch_threshold:
            raise AbuseDetected("glitches")

    def _total(self, key: str) -> None:
        totals = self.totals
        totals[key] = totals.get(key, 0) + 1

    # -- frames (called by the frame scanner) ------------------------------

    def settings_frame(self) -> None:
        self.settings.hit()
        self.glitch(2)

    def ping_frame(self) -> None:
        if self.pings.hit():
            self.glitch(2)

    def window_update_frame(self) -> None:
        self.window_updates.hit()

    def priority_frame(self) -> None:
        if self.priority.hit():
            self.glitch(1)

    def rst_frame(self) -> None:
        self.rsts.hit()

    def empty_data_frame(self) -> None:
        self.empty_data.hit()
        self.glitch(2)

    def new_stream(self) -> None:
        """A new stream was opened by the peer: pays for a PRIORITY frame
        (sent before or after its HEADERS) and one RST_STREAM frame."""
        self.priority.credit(2)
        self.rsts.credit(1)

    def data_frames_sent(self, frames: int) -> None:
        """We sent ``frames`` DATA frames: the peer may answer each with a
        WINDOW_UPDATE per stream and per connection, and a BDP PING."""
        self.window_updates.credit(2 * frames)
        self.pings.credit(frames)

    # -- stream events (called by the codecs) ------------------------------

    def rapid_reset(self) -> None:
        self._total("rapid_reset")
        self.rapid_resets.hit()
        self.glitch(2)

    def local_error_reset(self) -> None:
        self._total("local_error_reset")
        self.local_errors.hit()
        self.glitch(2)

    def refused_stream(self) -> None:
        self._total("refused_stream")
        self.glitch(2)

    def dribble(self) -> None:
        self._total("dribble")
        self.glitch(5)

    def send_stall(self) -> None:
        self._total("send_stall")
        self.glitch(5)
