"""Socket writes gathered to the end of the event-loop iteration.

A connection with bytes to send registers here once; one callback, run after
every I/O callback of this loop iteration, writes each registered
connection's buffer with a single ``transport.write``. Every read in a
batch is therefore answered before the first write goes out.

Why: the peers on the other end (the backend, the client) mostly sleep in
``epoll_wait`` while we work. A write to a sleeping peer wakes it (a
cross-CPU interrupt, costly in a VM) and that peer tends to go back to sleep
before our next write; writing the batch back to back wakes it once. On the
HTTP/1.1 bench this cut the kernel's share of our cost by a third. Latency
grows by at most one loop iteration's work.

Bounded: a connection is registered at most once (its ``corked`` flag), and
the list is emptied every iteration. A connection also writes at once when
it holds ``CORK_LIMIT`` bytes of body: libuv reads a readable socket up to
32 times in one iteration, so a fast origin could otherwise queue 32 reads
(8 MiB) before the write that tells us the client is not reading.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: body bytes a connection may hold back before it writes them at once
CORK_LIMIT = 64 * 1024


class Corked(Protocol):
    corked: bool

    def flush_now(self) -> None: ...


class Cork:
    __slots__ = ("loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Corked] = []
        self.scheduled = False

    def defer(self, conn: Corked) -> None:
        conn.corked = True
        self.pending.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        """Write every deferred buffer now (the end of the iteration)."""
        self.scheduled = False
        pending = self.pending
        self.pending = []
        for conn in pending:
            if conn.corked:
                conn.flush_now()


_current: Cork | None = None


def cork() -> Cork:
    """This event loop's cork (one per worker; tests may run several loops)."""
    global _current
    loop = asyncio.get_running_loop()
    current = _current
    if current is None or current.loop is not loop:
        current = _current = Cork(loop)
    return current
