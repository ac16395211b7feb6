"""CPU time and RSS of a whole process tree (supervisor + workers + threads)."""

from __future__ import annotations

import threading

import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per live process in the tree."""
    out: dict[int, float] = {}
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = times.user + times.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples; processes born in between count fully."""
    total = 0.0
    for pid, secs in after.items():
        total += max(0.0, secs - before.get(pid, 0.0))
    return total


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class Window:
    """A measured window: CPU before/after plus peak RSS sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.cpu_seconds = 0.0
        self._before: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Window:
        self.peak_rss = tree_rss_bytes(self.pid)
        self._before = tree_cpu_seconds(self.pid)
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.pid))

    def __exit__(self, *exc: object) -> None:
        self.cpu_seconds = cpu_delta(self._before, tree_cpu_seconds(self.pid))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.pid))
