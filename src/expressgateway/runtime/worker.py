"""A worker process: one event loop serving every listener on its own
SO_REUSEPORT sockets, inherited from the supervisor.

Started as ``python -m expressgateway.runtime.worker --control-fd N``; the
supervisor sends the config text and the socket descriptors over the
control channel, then asks for metrics, drain or stop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import time
from typing import Any

from expressgateway.config import Config, ConfigError, parse_config
from expressgateway.io.admission import Admission
from expressgateway.io.tickets import TicketKeys
from expressgateway.observability.logging import setup_logging
from expressgateway.observability.metrics import REGISTRY
from expressgateway.runtime import loop as loops
from expressgateway.runtime.control import ControlChannel
from expressgateway.runtime.listeners import Running, WorkerContext, is_served
from expressgateway.runtime.protocols import BUILDERS
from expressgateway.runtime.reload import prune_series
from expressgateway.upstream import cluster as cluster_mod
from expressgateway.upstream.cluster import Clusters

log = logging.getLogger("expressgateway.worker")

_LOOP_ERRORS = REGISTRY.counter(
    "event_loop_errors_total", "Unhandled errors reported by the event loop."
)


class Worker:
    def __init__(self) -> None:
        self.channel: ControlChannel | None = None
        self.running: list[Running] = []
        self.config: Config | None = None
        self.admission: Admission | None = None
        self.done = asyncio.Event()
        self.draining = False
        #: session-ticket keys per TLS listener, from the supervisor
        self.tickets: dict[str, TicketKeys] = {}

    # -- control ------------------------------------------------------------
    def on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "start":
            # now, not in the task: a rotation right behind must not be overwritten
            self.set_ticket_keys(msg.get("ticket_keys") or {})
            asyncio.get_running_loop().create_task(self.start(msg))
        elif op == "metrics":
            self.reply({"op": "metrics", "id": msg.get("id"), "data": REGISTRY.snapshot()})
        elif op == "backends":
            current = cluster_mod.CURRENT
            self.reply(
                {
                    "op": "backends",
                    "id": msg.get("id"),
                    "data": current.report() if current is not None else [],
                }
            )
        elif op == "reload":
            self.reload(msg)
        elif op == "certs":
            self.reload_certificates()
        elif op == "ticket_keys":
            self.set_ticket_keys(msg.get("keys") or {})
        elif op == "health":
            # an active-check verdict, decided once per gateway by the supervisor
            cluster_mod.set_active_health(
                str(msg.get("cluster")), str(msg.get("backend")), bool(msg.get("up"))
            )
        elif op == "drain":
            asyncio.get_running_loop().create_task(
                self.drain(float(msg.get("timeout_ms", 0)) / 1000)
            )
        elif op == "stop":
            self.done.set()

    def on_control_lost(self) -> None:
        # The supervisor is gone: nobody can restart or stop us properly.
        self.done.set()

    def reply(self, msg: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.send(msg)

    def set_ticket_keys(self, wire: dict[str, list[str]]) -> None:
        """A rotation: each listener's keys, current first (hex)."""
        for name, keys in wire.items():
            raw = [bytes.fromhex(k) for k in keys]
            found = self.tickets.get(name)
            if found is None:
                self.tickets[name] = TicketKeys(raw)
            else:
                found.update(raw)

    # -- lifecycle ----------------------------------------------------------
    async def start(self, msg: dict[str, Any]) -> None:
        try:
            cfg = parse_config(msg["config"], source=msg.get("source", "<supervisor>"))
        except ConfigError as exc:
            self.reply({"op": "error", "message": str(exc)})
            self.done.set()
            return
        setup_logging(cfg.observability.log_format, cfg.observability.log_level)
        rt = cfg.runtime
        self.admission = Admission(rt.per_ip_connection_cap, rt.max_inflight_connections)
        clusters = Clusters(cfg)
        cluster_mod.CURRENT = clusters
        self.config = cfg
        wc = WorkerContext(
            config=cfg,
            admission=self.admission,
            index=int(msg.get("index", 0)),
            clusters=clusters,
            tickets=self.tickets,
        )
        self._tick_clusters(clusters)
        fds: list[int] = msg["fds"]
        try:
            # the supervisor binds (and sends fds for) active protocols only
            served = [lc for lc in cfg.listeners if is_served(lc)]
            for lc, fd in zip(served, fds, strict=True):
                kind = socket.SOCK_DGRAM if lc.protocol in ("udp", "quic") else socket.SOCK_STREAM
                sock = socket.socket(fileno=fd, type=kind)
                build = BUILDERS.get(lc.protocol)
                if build is None:
                    sock.close()
                    continue
                self.running.append(await build(wc, lc, sock))
        except Exception as exc:
            log.exception("worker failed to start listeners")
            self.reply({"op": "error", "message": f"{type(exc).__name__}: {exc}"})
            self.done.set()
            return
        clusters.start_dns()  # after the listeners made their implicit clusters
        tune_gc()
        self.reply({"op": "ready", "pid": os.getpid()})

    def _tick_clusters(self, clusters: Clusters) -> None:
        """Once a second: return ejected backends whose time is up."""
        loop = asyncio.get_running_loop()
        current = cluster_mod.CURRENT or clusters
        current.tick(time.monotonic())
        loop.call_later(1.0, self._tick_clusters, current)

    def reload(self, msg: dict[str, Any]) -> None:
        """Apply a config the supervisor validated: new clusters and routes
        for new requests and connections; what is in flight keeps its own."""
        try:
            cfg = parse_config(msg["config"], source=msg.get("source", "<supervisor>"))
        except ConfigError as exc:
            log.error("reload: configuration refused in the worker: %s", exc)
            return
        old = cluster_mod.CURRENT
        clusters = Clusters(cfg)
        cluster_mod.CURRENT = clusters
        by_name = {lc.name: lc for lc in cfg.listeners}
        for r in self.running:
            lc = by_name.get(r.name)
            if lc is not None:
                r.update(cfg, lc, clusters)
                r.reload_certificates(lc)
        clusters.start_dns()
        if old is not None:
            old.stop_dns()
        prune_series(cfg)
        self.config = cfg
        log.info("configuration applied", extra={"listeners": len(self.running)})

    def reload_certificates(self) -> None:
        cfg = self.config
        if cfg is None:
            return
        by_name = {lc.name: lc for lc in cfg.listeners}
        for r in self.running:
            lc = by_name.get(r.name)
            if lc is not None:
                r.reload_certificates(lc)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let open connections finish, then exit."""
        if self.draining:
            return
        self.draining = True
        for r in self.running:
            r.stop_accepting()
        for r in self.running:
            r.drain()
        deadline = time.monotonic() + timeout
        left = 0
        while True:
            left = (self.admission.inflight if self.admission is not None else 0) + sum(
                r.open_connections() for r in self.running
            )
            if left == 0 or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if left:
            # the deadline passed: what is still open is cut when we exit
            log.warning("drain deadline passed; aborting connections", extra={"left": left})
        self.reply({"op": "drained", "left": left})
        self.done.set()


#: allocations between two young-generation collections (CPython's default: 700)
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Once the worker is built: what exists now (modules, config, listeners)
    is moved out of the collector's sight (``gc.freeze``), and young
    collections run every 50 000 net allocations instead of 700. Requests
    make few reference cycles, so the default threshold mostly rescanned
    live objects (about 3% of an HTTP/2 worker's time); garbage cycles still
    go, at most that many objects later."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    message = str(context.get("message", ""))
    exc = context.get("exception")
    _LOOP_ERRORS.inc()
    log.error(
        "event loop error: %s",
        message,
        exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None,
    )


async def _amain(control_fd: int) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler)
    worker = Worker()
    # The supervisor owns signals: a terminal Ctrl-C reaches the whole process
    # group, and the supervisor then drains us deliberately.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(sig, lambda: None)
    sock = socket.socket(fileno=control_fd)
    _, channel = await loop.connect_accepted_socket(
        lambda: ControlChannel(worker.on_message, worker.on_control_lost), sock
    )
    worker.channel = channel
    await worker.done.wait()
    for r in worker.running:
        r.stop_accepting()
        r.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="expressgateway-worker")
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args()
    setup_logging()
    profile = os.environ.get("EG_PROFILE")
    if profile:
        # Performance work: EG_PROFILE=/tmp/prof writes one cProfile file per
        # worker (/tmp/prof.<pid>) when it stops.
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            loops.run(_amain(args.control_fd))
        finally:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{os.getpid()}")
        return
    loops.run(_amain(args.control_fd))


if __name__ == "__main__":
    main()
