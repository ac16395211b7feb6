"""Zero-downtime restart (SIGUSR2): a new gateway takes over the very
listening sockets, the old one drains; clients opening new connections all
along see no refusal and no reset."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil

from tests.e2e.test_reload import listener, served_by
from tests.e2e.test_traffic_routes import backends
from tests.support.gateway import Gateway, free_port
from tests.support.h1 import h1_config


def test_sigusr2_hands_the_sockets_to_a_new_gateway_without_refusing_a_connection(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    port, admin = free_port(), free_port()
    with backends("alpha") as (a,):
        tail = f'\n[[clusters]]\nname = "a"\n[[clusters.backends]]\naddress = "{a.address}"\nprotocol = "h1"\n'
        gw = Gateway(
            h1_config(admin, listener(port, "a"), workers=2, tail=tail),
            admin_port=admin,
            workdir=tmp_path,
        )
        gw.start()
        new_pid = 0
        try:
            assert served_by(port) == "alpha"
            stop = threading.Event()
            failures: list[str] = []
            served = [0]

            def load() -> None:  # a new connection per request
                while not stop.is_set():
                    try:
                        served_by(port)
                        served[0] += 1
                    except Exception as exc:
                        failures.append(repr(exc))

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                assert gw.proc is not None
                old_pid = gw.proc.pid
                gw.proc.send_signal(signal.SIGUSR2)
                assert gw.proc.wait(40) == 0  # the old one drained and left
                time.sleep(0.5)
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
            records = [json.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
            handed = [r for r in records if r.get("new_pid")]
            assert handed, gw.logs()[-3000:]
            new_pid = int(handed[0]["new_pid"])
            assert new_pid != old_pid and psutil.pid_exists(new_pid)
            assert failures == []
            assert served[0] > 50
            assert served_by(port) == "alpha"  # the new gateway serves
            assert gw.metric("gateway_restarts_total") == 0  # a fresh process: its own count
        finally:
            if new_pid and psutil.pid_exists(new_pid):
                os.kill(new_pid, signal.SIGTERM)
                psutil.Process(new_pid).wait(20)
            gw.stop()
