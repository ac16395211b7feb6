"""One periodic timer per worker instead of a timer per request.

Connections keep a ``deadline`` (loop time, ``inf`` when none) and an
``on_deadline(now)`` method; the sweeper calls it once the deadline passes.
Arming a deadline is then one attribute store on the hot path, and the cost
of the sweep is a loop over the open connections a few times a second.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class Sweeper:
    def __init__(self, interval: float) -> None:
        self.interval = max(0.02, min(interval, 1.0))
        self.members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, member: HasDeadline) -> None:
        self.members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self.members.discard(member)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired = [m for m in self.members if m.deadline <= now]
        for m in expired:
            try:
                m.on_deadline(now)
            except Exception:  # one bad member must not stop the sweeps
                loop.call_exception_handler({"message": "deadline handler failed", "member": m})
        self._handle = loop.call_later(self.interval, self._tick)


NEVER = math.inf
