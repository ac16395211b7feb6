"""io/cork.py: writes gathered to the end of the loop iteration, over real
sockets on a real event loop."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from expressgateway.io.cork import Cork, cork


class Conn:
    """A connection with a write buffer, as the HTTP/1.1 front and back have."""

    def __init__(self, sock: socket.socket, log: list[str], name: str) -> None:
        self.sock = sock
        self.log = log
        self.name = name
        self.buf: list[bytes] = []
        self.corked = False
        self.cork = cork()

    def send(self, data: bytes) -> None:
        self.buf.append(data)
        if not self.corked:
            self.cork.defer(self)

    def flush_now(self) -> None:
        self.corked = False
        if self.buf:
            self.sock.sendall(b"".join(self.buf))
            self.log.append(f"write {self.name}")
        self.buf.clear()


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


def test_writes_wait_for_the_end_of_the_iteration_and_go_out_once() -> None:
    async def main() -> None:
        log: list[str] = []
        a, a_peer = _pair()
        b, b_peer = _pair()
        ca, cb = Conn(a, log, "a"), Conn(b, log, "b")
        loop = asyncio.get_running_loop()

        def first() -> None:
            ca.send(b"one ")
            cb.send(b"x")
            ca.send(b"two")
            log.append("first done")

        def second() -> None:
            log.append("second ran")
            ca.send(b" three")

        loop.call_soon(first)
        loop.call_soon(second)
        await asyncio.sleep(0.05)
        # both callbacks ran before any write; each connection wrote once
        assert log[:2] == ["first done", "second ran"]
        assert sorted(log[2:]) == ["write a", "write b"]
        assert a_peer.recv(100) == b"one two three"
        assert b_peer.recv(100) == b"x"
        for s in (a, a_peer, b, b_peer):
            s.close()

    uvloop.run(main())


def test_a_connection_flushed_early_is_not_written_again() -> None:
    async def main() -> None:
        log: list[str] = []
        a, a_peer = _pair()
        ca = Conn(a, log, "a")
        ca.send(b"head")
        ca.flush_now()  # e.g. before a close: must not wait
        await asyncio.sleep(0.05)
        assert log == ["write a"]
        assert a_peer.recv(100) == b"head"
        a.close()
        a_peer.close()

    uvloop.run(main())


def test_one_cork_per_loop() -> None:
    async def get() -> Cork:
        return cork()

    first = uvloop.run(get())
    second = uvloop.run(get())
    assert first is not second
    assert first.loop is not second.loop
