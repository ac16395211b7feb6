"""The supervisor's ticket-key schedule (``runtime/tickets.py``), on a fake
clock: when a key rotates, how long a retired one is kept, what the
workers are sent."""

from __future__ import annotations

import asyncio
from typing import Any

from expressgateway.config import parse_config
from expressgateway.io.tickets import KEY_SIZE
from expressgateway.runtime.tickets import MAX_RETIRED, KeyRing, TicketRotation


def ring(interval: float = 10, overlap: float = 10) -> KeyRing:
    return KeyRing(interval, overlap, started=0.0)


def test_the_key_rotates_each_interval_and_the_old_one_decrypts_for_the_overlap() -> None:
    r = ring(interval=10, overlap=15)
    k0 = r.current
    assert len(k0) == KEY_SIZE
    assert r.due() == 10
    assert r.advance(9.9) == (False, False)
    assert r.advance(10) == (True, True)
    k1 = r.current
    assert k1 != k0 and r.active() == [k1, k0]
    assert r.due() == 20  # the next rotation comes before k0's end (25)
    assert r.advance(20) == (True, True)
    assert r.active() == [r.current, k1, k0]
    assert r.due() == 25
    assert r.advance(25) == (True, False)  # k0 retired at 10, kept 15 s
    assert r.active() == [r.current, k1]


def test_overlap_zero_drops_the_old_key_at_rotation() -> None:
    r = ring(interval=10, overlap=0)
    r.advance(10)
    assert len(r.active()) == 1


def test_a_long_overlap_keeps_at_most_max_retired_keys() -> None:
    r = ring(interval=1, overlap=1_000_000)
    for t in range(1, MAX_RETIRED + 10):
        r.advance(float(t))
    assert len(r.active()) == 1 + MAX_RETIRED


def test_after_a_stall_one_rotation_happens_not_a_burst() -> None:
    r = ring(interval=10, overlap=100)
    r.advance(95)
    assert len(r.active()) == 2
    assert r.due() == 105


def test_new_timings_count_from_the_current_key_and_each_retirement() -> None:
    r = ring(interval=10, overlap=30)
    r.advance(10)  # k0 retired at 10, kept until 40
    r.configure(interval=100, overlap=5)
    assert r.due() == 15  # k0 now kept until 10 + 5
    assert r.advance(15) == (True, False)
    assert r.due() == 110


CONFIG = """
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "h1s"

[listeners.tls]
cert_path = "{cert}"
key_path = "{key}"
ticket_rotation_interval_seconds = {interval}
ticket_rotation_overlap_seconds = {overlap}

[[listeners.backends]]
address = "127.0.0.1:9"
"""


def config(tls_files: dict[str, str], interval: int, overlap: int) -> str:
    parts = [
        CONFIG.format(
            name=name,
            port=port,
            cert=tls_files["cert"],
            key=tls_files["key"],
            interval=interval,
            overlap=overlap,
        )
        for name, port in (("a", 8443), ("b", 9443))
    ]
    plain = '\n[[listeners]]\nname = "plain"\naddress = "127.0.0.1:8080"\nprotocol = "h1"\n'
    return "".join(parts) + plain


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_tls_listener_has_its_own_keys_and_workers_get_them_on_rotation(
    tls_files: dict[str, str],
) -> None:
    async def run() -> None:
        clock = Clock()
        sent: list[dict[str, Any]] = []
        cfg = parse_config(config(tls_files, interval=60, overlap=60))
        rot = TicketRotation(cfg, sent.append, clock=clock)
        wire = rot.wire()
        assert set(wire) == {"a", "b"}  # not the plain listener
        assert wire["a"] != wire["b"] and len(bytes.fromhex(wire["a"][0])) == KEY_SIZE
        rot.start()
        clock.now += 30
        rot.tick()
        assert sent == []  # nothing due
        clock.now += 30
        rot.tick()
        assert len(sent) == 1 and sent[0]["op"] == "ticket_keys"
        keys = sent[0]["keys"]
        assert keys["a"][1] == wire["a"][0] and keys["b"][1] == wire["b"][0]
        # a reload with a shorter overlap drops the retired keys now
        rot.reconfigure(parse_config(config(tls_files, interval=60, overlap=0)))
        assert [len(v) for v in sent[-1]["keys"].values()] == [1, 1]
        rot.stop()

    asyncio.run(run())


def test_the_timer_fires_at_the_next_rotation(tls_files: dict[str, str]) -> None:
    async def run() -> None:
        sent: list[dict[str, Any]] = []
        cfg = parse_config(config(tls_files, interval=1, overlap=0))
        rot = TicketRotation(cfg, sent.append)
        rot.start()
        for _ in range(200):
            if sent:
                break
            await asyncio.sleep(0.02)
        rot.stop()
        assert sent and sent[0]["op"] == "ticket_keys"

    asyncio.run(run())
