"""Session-ticket key rotation, run by the supervisor.

Each TLS listener has a :class:`KeyRing`: one current key (seals new
tickets) and the keys rotations retired, each kept for
``ticket_rotation_overlap_seconds`` after it stopped sealing (they still
open tickets). The supervisor mints the first key at boot and a new one
every ``ticket_rotation_interval_seconds``, and sends each listener's keys
to every worker (``op: ticket_keys``, and in every ``start`` message, so a
restarted worker opens the same tickets). Workers install them with
``io/tickets.py``: a ticket sealed by one worker resumes on any.

Keys are random (``os.urandom``), live only in memory and on the control
channels, and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from expressgateway.config import Config, ListenerConfig
from expressgateway.io.tickets import KEY_SIZE
from expressgateway.observability.metrics import REGISTRY

log = logging.getLogger("expressgateway.supervisor")

_ROTATIONS = REGISTRY.counter(
    "tls_ticket_key_rotations_total",
    "Session-ticket key rotations (a new key seals new tickets), per TLS listener.",
    ("listener",),
)

#: retired keys kept at most, whatever the overlap (each costs a dict entry per worker)
MAX_RETIRED = 32


def mint() -> bytes:
    """A new ticket key: 16-byte name, 32-byte HMAC key, 32-byte AES key."""
    return os.urandom(KEY_SIZE)


@dataclass
class _Retired:
    key: bytes
    #: monotonic time after which it opens no more tickets
    until: float


@dataclass
class KeyRing:
    """The ticket keys of one listener and when they change."""

    interval: float
    overlap: float
    #: monotonic time the current key started sealing
    started: float
    current: bytes = field(default_factory=mint)
    #: newest first
    retired: list[_Retired] = field(default_factory=list)

    def active(self) -> list[bytes]:
        """Current key first, then the retired ones still kept."""
        return [self.current, *(r.key for r in self.retired)]

    def due(self) -> float:
        """When the next rotation or expiry happens (monotonic)."""
        return min([self.started + self.interval, *(r.until for r in self.retired)])

    def advance(self, now: float) -> tuple[bool, bool]:
        """Rotate and expire what is due at ``now``: (keys changed, rotated)."""
        rotated = now >= self.started + self.interval
        before = len(self.retired)
        if rotated:
            self.retired.insert(0, _Retired(self.current, now + self.overlap))
            self.current = mint()
            self.started = now  # after a long stall: one rotation, not a burst
        self.retired = [r for r in self.retired if r.until > now][:MAX_RETIRED]
        return rotated or len(self.retired) != before, rotated

    def configure(self, interval: float, overlap: float) -> None:
        """New timings (a reload): retired keys keep ``overlap`` from their retirement."""
        for r in self.retired:
            r.until += overlap - self.overlap
        self.interval, self.overlap = interval, overlap


def _tls_listeners(cfg: Config) -> list[ListenerConfig]:
    return [lc for lc in cfg.listeners if lc.tls is not None]


class TicketRotation:
    """Every TLS listener's :class:`KeyRing`, one timer for all of them, and
    ``send`` for the ``ticket_keys`` message to every worker."""

    def __init__(
        self,
        cfg: Config,
        send: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.clock = clock
        now = clock()
        self.rings: dict[str, KeyRing] = {}
        for lc in _tls_listeners(cfg):
            assert lc.tls is not None
            tls = lc.tls
            self.rings[lc.name] = KeyRing(
                tls.ticket_rotation_interval_seconds, tls.ticket_rotation_overlap_seconds, now
            )
        self._timer: asyncio.TimerHandle | None = None

    def wire(self) -> dict[str, list[str]]:
        """Every listener's keys, as the control channel carries them."""
        return {name: [k.hex() for k in ring.active()] for name, ring in self.rings.items()}

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reconfigure(self, cfg: Config) -> None:
        """A reload: new timings apply now (listeners cannot change without a restart)."""
        for lc in _tls_listeners(cfg):
            ring = self.rings.get(lc.name)
            if ring is not None and lc.tls is not None:
                tls = lc.tls
                ring.configure(
                    tls.ticket_rotation_interval_seconds, tls.ticket_rotation_overlap_seconds
                )
        self.tick()

    def tick(self) -> None:
        """Rotate and expire what is due; tell the workers; re-arm the timer."""
        now = self.clock()
        changed = False
        for name, ring in self.rings.items():
            moved, rotated = ring.advance(now)
            changed = changed or moved
            if rotated:
                _ROTATIONS.labels(name).inc()
                log.debug("session-ticket key rotated", extra={"listener": name})
        if changed:
            self.send({"op": "ticket_keys", "keys": self.wire()})
        self._arm()

    def _arm(self) -> None:
        self.stop()
        if not self.rings:
            return
        # a millisecond late rather than early: uvloop's clock ticks in milliseconds
        delay = max(0.0, min(r.due() for r in self.rings.values()) - self.clock()) + 0.001
        self._timer = asyncio.get_running_loop().call_later(delay, self.tick)
