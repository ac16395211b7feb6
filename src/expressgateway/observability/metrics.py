"""In-process metrics with a Prometheus text renderer.

Each worker process owns a :class:`Registry`. The supervisor asks every
worker for a :meth:`Registry.snapshot` over its control channel, merges the
snapshots (:func:`merge_snapshots`) and renders one text exposition
(:func:`render`). Hot paths resolve a labelled child once (``family.labels``)
and then bump a plain attribute, so a count costs one attribute add.

Label values are bounded by construction: callers pass listener names,
status classes, reasons from a fixed vocabulary; never raw paths or IPs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

DEFAULT_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: hard cap on children per family; past it samples fold into one overflow child
MAX_SERIES_PER_FAMILY = 2000
_OVERFLOW = "__overflow__"
_INF = 'le="+Inf"'


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class HistogramChild:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Family:
    """A metric family: name, help, type and label names."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Any] = {}
        if not labelnames:
            self.children[()] = self._new_child()

    def _new_child(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            if len(self.children) >= MAX_SERIES_PER_FAMILY:
                key = (_OVERFLOW,) * len(self.labelnames)
                child = self.children.get(key)
                if child is not None:
                    return child
            child = self.children[key] = self._new_child()
        return child

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError


class Counter(Family):
    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        self.children[()].value += amount

    @property
    def value(self) -> float:
        return float(self.children[()].value)

    def snapshot(self) -> dict[str, Any]:
        return {"samples": [[list(k), c.value] for k, c in self.children.items()]}


class Gauge(Counter):
    kind = "gauge"

    def _new_child(self) -> GaugeChild:  # type: ignore[override]
        return GaugeChild()

    def set(self, value: float) -> None:
        self.children[()].value = value

    def dec(self, amount: float = 1) -> None:
        self.children[()].value -= amount


class Histogram(Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.bucket_bounds = buckets
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bucket_bounds)

    def observe(self, value: float) -> None:
        self.children[()].observe(value)

    def snapshot(self) -> dict[str, Any]:
        return {
            "buckets": list(self.bucket_bounds),
            "samples": [[list(k), [c.counts, c.sum, c.count]] for k, c in self.children.items()],
        }


class Registry:
    """All metric families of one process, by name."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def _add(self, family: Family) -> Any:
        existing = self.families.get(family.name)
        if existing is not None:
            if type(existing) is not type(family) or existing.labelnames != family.labelnames:
                raise ValueError(f"metric {family.name} registered twice with different shapes")
            return existing
        self.families[family.name] = family
        return family

    def counter(self, name: str, help: str, labelnames: tuple[str, ...] = ()) -> Counter:
        result: Counter = self._add(Counter(name, help, labelnames))
        return result

    def gauge(self, name: str, help: str, labelnames: tuple[str, ...] = ()) -> Gauge:
        result: Gauge = self._add(Gauge(name, help, labelnames))
        return result

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> Histogram:
        result: Histogram = self._add(Histogram(name, help, labelnames, buckets))
        return result

    def forget(self, label: str, keep: Callable[[str], bool]) -> int:
        """Drop every series whose ``label`` value ``keep`` refuses (e.g. the
        backends a reload removed), so that they leave the exposition instead
        of lingering forever. Returns how many were dropped. A hot path that
        still holds a dropped child keeps counting into it, unseen."""
        dropped = 0
        for family in self.families.values():
            if label not in family.labelnames:
                continue
            i = family.labelnames.index(label)
            for key in [k for k in family.children if k[i] != _OVERFLOW and not keep(k[i])]:
                del family.children[key]
                dropped += 1
        return dropped

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of every family, for the supervisor to merge."""
        return {
            name: {"type": f.kind, "help": f.help, "labels": list(f.labelnames), **f.snapshot()}
            for name, f in self.families.items()
        }


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counters, gauges and histograms across processes, sample by sample."""
    merged: dict[str, Any] = {}
    for snap in snapshots:
        for name, fam in snap.items():
            into = merged.get(name)
            if into is None:
                merged[name] = {
                    **fam,
                    "samples": {tuple(k): _copy(v) for k, v in fam["samples"]},
                }
                continue
            samples = into["samples"]
            for k, v in fam["samples"]:
                key = tuple(k)
                cur = samples.get(key)
                if cur is None:
                    samples[key] = _copy(v)
                elif fam["type"] == "histogram":
                    counts = [a + b for a, b in zip(cur[0], v[0], strict=True)]
                    samples[key] = [counts, cur[1] + v[1], cur[2] + v[2]]
                else:
                    samples[key] = cur + v
    return merged


def _copy(v: Any) -> Any:
    if isinstance(v, list):
        return [list(v[0]), v[1], v[2]]
    return v


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labelstr(names: list[str], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def render(merged: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []
    for name in sorted(merged):
        fam = merged[name]
        kind = fam["type"]
        names = fam["labels"]
        out.append(f"# HELP {name} {fam['help']}")
        out.append(f"# TYPE {name} {kind}")
        samples = fam["samples"]
        if isinstance(samples, list):
            samples = {tuple(k): v for k, v in samples}
        for key in sorted(samples):
            v = samples[key]
            if kind == "histogram":
                counts, total, count = v
                cumulative = 0
                for bound, c in zip(fam["buckets"], counts, strict=False):
                    cumulative += c
                    le = f'le="{_fmt(bound)}"'
                    out.append(f"{name}_bucket{_labelstr(names, key, le)} {cumulative}")
                out.append(f"{name}_bucket{_labelstr(names, key, _INF)} {count}")
                out.append(f"{name}_sum{_labelstr(names, key)} {_fmt(total)}")
                out.append(f"{name}_count{_labelstr(names, key)} {count}")
            else:
                out.append(f"{name}{_labelstr(names, key)} {_fmt(v)}")
    return "\n".join(out) + "\n"


#: the registry of this process; workers and the supervisor each have one
REGISTRY = Registry()
