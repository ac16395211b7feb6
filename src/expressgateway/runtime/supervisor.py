"""The supervisor: binds every socket, starts and restarts the workers, owns
signals, and serves the admin endpoints with metrics merged over workers.

It never accepts traffic itself. Sockets are bound here, all of them before
any worker starts (so the gateway never boots half up), and handed to the
workers as inherited descriptors.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from expressgateway import __version__
from expressgateway.config import Config, ConfigError, load_config
from expressgateway.io.sockets import ListenSpec, bind_all, bind_socket
from expressgateway.observability.admin import AdminProtocol, AdminState, Phase
from expressgateway.observability.metrics import REGISTRY, merge_snapshots, render
from expressgateway.runtime import features
from expressgateway.runtime.control import ControlChannel
from expressgateway.runtime.listeners import is_served, is_udp
from expressgateway.runtime.preflight import preflight
from expressgateway.runtime.protocols import BUILDERS  # noqa: F401  (registers every protocol)
from expressgateway.runtime.reload import prune_series, redacted, restart_required
from expressgateway.runtime.tickets import TicketRotation
from expressgateway.upstream.health import HealthChecker

log = logging.getLogger("expressgateway.supervisor")

_RELOADS = REGISTRY.counter(
    "config_reloads_total", "Reloads asked for (SIGHUP, POST /reload), by result.", ("result",)
)
_RELOAD_FAILURES = REGISTRY.counter(
    "config_reload_failures_total",
    "Reloads refused, by reason (invalid: the file has problems; restart_required).",
    ("reason",),
)
_RELOAD_RESTART = REGISTRY.counter(
    "config_reload_restart_required_total",
    "Changed keys a reload refused because they need a restart.",
)
_RESTARTS = REGISTRY.counter("worker_restarts_total", "Worker processes restarted after dying.")
_DRAINS = REGISTRY.counter(
    "worker_drains_total",
    "Worker drains (shutdown, restart), by outcome: clean (everything finished in "
    "time) or cut (connections were still open at the deadline).",
    ("outcome",),
)
_DRAIN_ABORTED = REGISTRY.counter(
    "drain_aborted_connections_total",
    "Connections still open when a drain deadline passed, cut as the worker exited.",
)
_HANDOVERS = REGISTRY.counter(
    "gateway_restarts_total",
    "Zero-downtime restarts (SIGUSR2) of this gateway, by result (handed_over, failed).",
    ("result",),
)
_WORKERS = REGISTRY.gauge("workers", "Worker processes currently running.")
_UP = REGISTRY.gauge("process_start_time_seconds", "Start time of the gateway, Unix seconds.")

BOOT_TIMEOUT = 30.0
METRICS_TIMEOUT = 2.0


class BootError(Exception):
    """The gateway could not start; nothing is left serving."""


@dataclass
class WorkerHandle:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: ControlChannel | None = None
    ready: asyncio.Future[None] | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    restarts: int = 0
    last_start: float = 0.0


def worker_count(cfg: Config) -> int:
    return cfg.runtime.workers or os.cpu_count() or 1


class Supervisor:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.nworkers = worker_count(cfg)
        self.served = [lc for lc in cfg.listeners if is_served(lc)]
        self.skipped = [lc for lc in cfg.listeners if not is_served(lc)]
        self.sockets: list[list[socket.socket]] = []
        self.admin_sock: socket.socket | None = None
        self.state = AdminState(cfg.admin.api_token_hash)
        self.workers: list[WorkerHandle] = []
        self.stopping = False
        self.stop_event: asyncio.Event | None = None
        self._ids = itertools.count(1)
        #: active health checks (once per gateway) and their latest verdicts
        self.health: HealthChecker | None = None
        self.verdicts: dict[tuple[str, str], bool] = {}
        #: a new gateway took over our sockets (SIGUSR2)
        self.handed_over = False
        #: session-ticket keys of the TLS listeners, shared by every worker
        self.tickets = TicketRotation(cfg, self._broadcast)

    # -- binding ----------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener socket (one per worker) and the admin socket,
        all or nothing. Raises :class:`BootError` naming what failed."""
        from expressgateway.io.sockets import BindError

        specs = [
            ListenSpec(
                lc.name, lc.host, lc.port, udp=is_udp(lc), backlog=self.cfg.runtime.tcp_backlog
            )
            for lc in self.served
        ]
        if self._adopt(specs):
            return
        try:
            self.sockets = bind_all(specs, self.nworkers)
            bind = self.cfg.observability.metrics_bind
            if bind:
                host, _, port = bind.rpartition(":")
                host = host.strip("[]")
                self.admin_sock = bind_socket(ListenSpec("admin", host, int(port), backlog=128))
        except BindError as exc:
            for row in self.sockets:
                for s in row:
                    s.close()
            self.sockets = []
            raise BootError(str(exc)) from exc

    def _adopt(self, specs: list[ListenSpec]) -> bool:
        """A zero-downtime restart: take over the listening sockets the old
        gateway handed down (``EG_INHERIT``), when the layout is the same.
        The sockets (and their accept queues) are the very same: no
        connection is refused while the old gateway drains."""
        raw = os.environ.pop("EG_INHERIT", None)
        if raw is None:
            return False
        inherited = json.loads(raw)
        layout = [[sp.name, sp.host, sp.port, sp.udp] for sp in specs]
        fds = inherited["fds"]
        if inherited["listeners"] != layout or len(fds) != self.nworkers:
            log.warning(
                "restart: listeners or worker count changed; binding anew beside the old "
                "gateway (SO_REUSEPORT) instead of taking over its sockets"
            )
            for fd in [fd for row in fds for fd in row] + [inherited.get("admin")]:
                if fd is not None:
                    os.close(fd)
            return False
        self.sockets = [[socket.socket(fileno=fd) for fd in row] for row in fds]
        if inherited.get("admin") is not None:
            self.admin_sock = socket.socket(fileno=inherited["admin"])
        log.info("restart: took over the listening sockets of the old gateway")
        return True

    async def handover(self) -> None:
        """SIGUSR2: start a new gateway (same command and file: new code or
        config) on these very sockets; once it is ready, drain and exit."""
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        layout = {
            "listeners": [[lc.name, lc.host, lc.port, is_udp(lc)] for lc in self.served],
            "fds": [[sk.fileno() for sk in row] for row in self.sockets],
            "admin": self.admin_sock.fileno() if self.admin_sock is not None else None,
        }
        ready_r, ready_w = os.pipe()
        fds = [fd for row in layout["fds"] for fd in row]  # type: ignore[attr-defined]
        if layout["admin"] is not None:
            fds.append(layout["admin"])
        env = {**os.environ, "EG_INHERIT": json.dumps(layout), "EG_READY_FD": str(ready_w)}
        log.info("restart: starting the new gateway")
        proc = subprocess.Popen(
            [sys.executable, "-m", "expressgateway", self.cfg.source],
            pass_fds=[*fds, ready_w],
            env=env,
        )
        os.close(ready_w)
        ok = False
        try:
            data = await asyncio.wait_for(
                loop.run_in_executor(None, os.read, ready_r, 1), BOOT_TIMEOUT + 10
            )
            ok = data == b"1"
        except TimeoutError:
            ok = False
        finally:
            os.close(ready_r)
        if not ok:
            _HANDOVERS.labels("failed").inc()
            log.error("restart: the new gateway did not become ready; this one keeps serving")
            if proc.poll() is None:
                proc.kill()
            return
        _HANDOVERS.labels("handed_over").inc()
        log.info(
            "restart: the new gateway is ready; draining this one", extra={"new_pid": proc.pid}
        )
        self.handed_over = True
        assert self.stop_event is not None
        self.stop_event.set()

    # -- workers ------------------------------------------------------------------
    async def _spawn(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        fds = [s.fileno() for s in self.sockets[handle.index]]
        handle.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "expressgateway.runtime.worker",
                "--control-fd",
                str(child.fileno()),
            ],
            pass_fds=[child.fileno(), *fds],
        )
        child.close()
        handle.last_start = time.monotonic()
        handle.ready = loop.create_future()
        _, channel = await loop.connect_accepted_socket(
            lambda: ControlChannel(
                lambda m: self._on_message(handle, m), lambda: self._on_worker_gone(handle)
            ),
            parent,
        )
        handle.channel = channel
        channel.send(
            {
                "op": "start",
                "config": self.cfg.text,
                "source": self.cfg.source,
                "fds": fds,
                "index": handle.index,
                "ticket_keys": self.tickets.wire(),
            }
        )

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for h in self.workers:
            if h.channel is not None:
                h.channel.send(msg)

    def _on_message(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            _WORKERS.inc()
            if handle.ready is not None and not handle.ready.done():
                handle.ready.set_result(None)
            # a (re)started worker believes every backend is up: tell it which are not
            for (cluster, backend), up in self.verdicts.items():
                if not up and handle.channel is not None:
                    handle.channel.send(
                        {"op": "health", "cluster": cluster, "backend": backend, "up": False}
                    )
        elif op == "error":
            log.error("worker %d failed: %s", handle.index, msg.get("message"))
            if handle.ready is not None and not handle.ready.done():
                handle.ready.set_exception(BootError(str(msg.get("message"))))
        elif op == "drained":
            left = int(msg.get("left", 0))
            _DRAINS.labels("cut" if left else "clean").inc()
            _DRAIN_ABORTED.inc(left)
        elif op in ("metrics", "backends"):
            fut = handle.pending.pop(int(msg.get("id", 0)), None)
            if fut is not None and not fut.done():
                fut.set_result(msg.get("data", {}))

    def _on_worker_gone(self, handle: WorkerHandle) -> None:
        was_ready = (
            handle.ready is not None and handle.ready.done() and not handle.ready.exception()
        )
        if was_ready:
            _WORKERS.dec()
        handle.channel = None
        for fut in handle.pending.values():
            if not fut.done():
                fut.set_result({})
        handle.pending.clear()
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_exception(BootError(f"worker {handle.index} exited during start"))
        if not self.stopping and was_ready:
            asyncio.get_running_loop().create_task(self._restart(handle))

    async def _reap(self, handle: WorkerHandle, timeout: float) -> int | None:
        proc = handle.proc
        if proc is None:
            return None
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            await asyncio.sleep(0)
            proc.wait()
        return proc.returncode

    async def _restart(self, handle: WorkerHandle) -> None:
        code = await self._reap(handle, 5.0)
        if self.stopping:
            return
        # Crash loops back off: immediately the first time, up to 5 s after.
        quick = time.monotonic() - handle.last_start < 10
        handle.restarts = handle.restarts + 1 if quick else 1
        delay = min(5.0, 0.1 * (2 ** (handle.restarts - 1))) if quick else 0.0
        log.error(
            "worker %d exited with code %s; restarting in %.1fs",
            handle.index,
            code,
            delay,
            extra={"worker": handle.index, "exit_code": code},
        )
        _RESTARTS.inc()
        await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            await self._spawn(handle)
            assert handle.ready is not None
            await asyncio.wait_for(handle.ready, BOOT_TIMEOUT)
        except Exception as exc:
            log.error("worker %d restart failed: %s", handle.index, exc)

    # -- reload ------------------------------------------------------------------------
    async def reload(self, trigger: str) -> dict[str, Any]:
        """Re-read the config file and apply it in every worker, or keep the
        running config and say why. Never half applied."""
        path = self.cfg.source
        log.info("reload requested", extra={"trigger": trigger, "path": path})
        try:
            new = load_config(path)
        except (ConfigError, OSError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            return self._reload_failed("invalid", [str(p) for p in problems])
        problems = preflight(new, mint=True)
        if problems:
            return self._reload_failed("invalid", problems)
        restart = restart_required(self.cfg, new)
        if restart:
            _RELOAD_RESTART.inc(len(restart))
            return self._reload_failed(
                "restart_required", [f"{key}: changing it needs a restart" for key in restart]
            )
        self.cfg = new
        for h in self.workers:
            if h.channel is not None:
                h.channel.send({"op": "reload", "config": new.text, "source": new.source})
        self.tickets.reconfigure(new)
        if self.health is not None:
            await self.health.stop()
            self.health = None
        self.verdicts.clear()
        self._start_health()
        prune_series(new)
        _RELOADS.labels("applied").inc()
        log.info("configuration reloaded", extra={"path": path, "trigger": trigger})
        return {"result": "applied", "problems": []}

    def _reload_failed(self, reason: str, problems: list[str]) -> dict[str, Any]:
        _RELOAD_FAILURES.labels(reason).inc()
        _RELOADS.labels("rejected").inc()
        for problem in problems:
            log.error("reload rejected: %s", problem, extra={"reason": reason})
        log.error("reload rejected; the running configuration stays", extra={"reason": reason})
        return {"result": "rejected", "reason": reason, "problems": problems}

    def reload_certificates(self) -> None:
        """SIGUSR1: every TLS and QUIC listener re-reads its certificate and key."""
        log.info("certificate reload requested")
        for h in self.workers:
            if h.channel is not None:
                h.channel.send({"op": "certs"})

    # -- active health checks ---------------------------------------------------------
    def _on_health(self, cluster: str, backend: str, up: bool) -> None:
        """A verdict changed: remember it and tell every worker."""
        self.verdicts[(cluster, backend)] = up
        msg = {"op": "health", "cluster": cluster, "backend": backend, "up": up}
        for h in self.workers:
            if h.channel is not None:
                h.channel.send(msg)

    def _start_health(self) -> None:
        if not any(c.health_check is not None for c in self.cfg.clusters):
            return
        self.health = HealthChecker(self.cfg.clusters, self._on_health)
        self.health.start()
        log.info("active health checks started", extra={"targets": len(self.health.targets)})

    # -- metrics ------------------------------------------------------------------
    async def _ask_workers(self, op: str) -> list[Any]:
        """Send ``op`` to every worker; their answers (those in time)."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = []
        for h in self.workers:
            if h.channel is None:
                continue
            mid = next(self._ids)
            fut: asyncio.Future[Any] = loop.create_future()
            h.pending[mid] = fut
            h.channel.send({"op": op, "id": mid})
            futs.append(fut)
        if not futs:
            return []
        done, _ = await asyncio.wait(futs, timeout=METRICS_TIMEOUT)
        return [f.result() for f in done if not f.cancelled() and f.exception() is None]

    async def metrics_text(self) -> str:
        snaps = [REGISTRY.snapshot(), *await self._ask_workers("metrics")]
        return render(merge_snapshots(snaps))

    async def backends_json(self) -> dict[str, Any]:
        """``/backends``: every cluster with each backend's health and load,
        per worker and summed."""
        reports = await self._ask_workers("backends")
        merged: dict[str, Any] = {}
        for wi, report in enumerate(reports):
            for cluster in report:
                c = merged.setdefault(
                    cluster["name"],
                    {"name": cluster["name"], "policy": cluster["policy"], "backends": {}},
                )
                for ep in cluster["endpoints"]:
                    b = c["backends"].setdefault(
                        ep["name"],
                        {
                            "name": ep["name"],
                            "weight": ep["weight"],
                            "active_check": self.verdicts.get(
                                (cluster["name"], ep["origin"]), True
                            ),
                            "healthy_in_workers": 0,
                            "active_requests": 0,
                            "connections": 0,
                            "workers": [],
                        },
                    )
                    b["healthy_in_workers"] += 1 if ep["healthy"] else 0
                    b["active_requests"] += ep["active"]
                    b["connections"] += ep["connections"]
                    b["workers"].append({"worker": wi, **ep})
        clusters = [{**c, "backends": list(c["backends"].values())} for c in merged.values()]
        return {"workers": len(reports), "clusters": clusters}

    def config_json(self) -> dict[str, Any]:
        """``/config``: the running configuration, secrets redacted."""
        return {"source": self.cfg.source, "config": redacted(self.cfg)}

    # -- run ------------------------------------------------------------------------
    def _log_boot(self) -> None:
        log.info("ExpressGateway v%s", __version__, extra={"pid": os.getpid()})
        log.info(
            "configuration loaded from %s",
            self.cfg.source,
            extra={"listeners": len(self.cfg.listeners), "workers": self.nworkers},
        )
        inactive = sorted(
            {(f, k) for f, k in self.cfg.features_in_use() if f not in features.ACTIVE}
        )
        for feature, key in inactive:
            log.warning(
                "configured feature is not active yet in this version; accepted and ignored",
                extra={"feature": feature, "key": key},
            )
        for lc in self.skipped:
            log.warning(
                "listener protocol is not active yet in this version; not bound",
                extra={"listener": lc.name, "protocol": lc.protocol},
            )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        _UP.set(time.time())
        self._log_boot()
        admin_server = None
        if self.admin_sock is not None:
            admin_server = await loop.create_server(
                lambda: AdminProtocol(
                    self.state,
                    self.metrics_text,
                    self.reload,
                    backends=self.backends_json,
                    config=self.config_json,
                ),
                sock=self.admin_sock,
            )
            log.info(
                "admin listener started", extra={"address": self.cfg.observability.metrics_bind}
            )
        drain_settle = {"value": True}

        def on_signal(sig: signal.Signals) -> None:
            log.info("received %s", sig.name)
            drain_settle["value"] = sig is signal.SIGTERM
            assert self.stop_event is not None
            self.stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        loop.add_signal_handler(signal.SIGUSR1, self.reload_certificates)
        loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(self.handover()))
        self.workers = [WorkerHandle(i) for i in range(self.nworkers)]
        try:
            for h in self.workers:
                await self._spawn(h)
            await asyncio.wait_for(
                asyncio.gather(*(h.ready for h in self.workers if h.ready is not None)),
                BOOT_TIMEOUT,
            )
        except (BootError, TimeoutError) as exc:
            log.error("boot failed: %s", str(exc) or "workers did not become ready in time")
            await self._stop_workers(drain=False)
            if admin_server is not None:
                admin_server.close()
            return 1
        for lc in self.served:
            log.info(
                "listener started",
                extra={"listener": lc.name, "address": lc.address, "protocol": lc.protocol},
            )
        self.state.started = True
        self.state.phase = Phase.READY
        log.info("probes flipped to Ready")
        self._tell_predecessor()
        self._start_health()
        self.tickets.start()
        await self.stop_event.wait()
        self.tickets.stop()
        if self.handed_over and admin_server is not None:
            admin_server.close()  # the new gateway answers on the same socket now
            admin_server = None
        await self._drain(settle=drain_settle["value"] and not self.handed_over)
        if self.health is not None:
            await self.health.stop()
        if admin_server is not None:
            admin_server.close()
        log.info("ExpressGateway stopped")
        return 0

    def _tell_predecessor(self) -> None:
        """Tell the gateway that started us (SIGUSR2) that we serve now."""
        fd = os.environ.pop("EG_READY_FD", None)
        if fd is not None:
            try:
                os.write(int(fd), b"1")
                os.close(int(fd))
            except OSError:
                pass

    async def _drain(self, *, settle: bool) -> None:
        self.state.phase = Phase.DRAINING
        rt = self.cfg.runtime
        if settle and rt.readiness_settle_ms:
            log.info("draining: readiness settle", extra={"settle_ms": rt.readiness_settle_ms})
            await asyncio.sleep(rt.readiness_settle_ms / 1000)
        await self._stop_workers(drain=True)

    async def _stop_workers(self, *, drain: bool) -> None:
        self.stopping = True
        # the longest drain any listener asks for (per-listener cut-offs: #7)
        timeout_ms = (
            max(
                [self.cfg.effective_drain(lc)[0] for lc in self.cfg.listeners]
                or [self.cfg.runtime.drain_timeout_ms]
            )
            if drain
            else 0
        )
        for h in self.workers:
            if h.channel is not None:
                h.channel.send({"op": "drain", "timeout_ms": timeout_ms})
        # Our copies too: a listening socket left open queues connections nobody accepts.
        for row in self.sockets:
            for s in row:
                s.close()
        await asyncio.gather(*(self._reap(h, timeout_ms / 1000 + 2.0) for h in self.workers))
