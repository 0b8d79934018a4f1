"""Counters and histograms that the data path bumps with plain arithmetic, exported by a collector at scrape time.

prometheus-client's own metrics take a lock on every `inc` and scan a histogram's buckets in Python on every
`observe`: several microseconds per frame, which at thousands of frames a second is a large share of a relay's
CPU. The event loop is one thread, so these keep plain numbers (a bisect finds a bucket) and `PlainCollector`
turns them into ordinary counter and histogram families, with the same names and labels, when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class PlainCounter:
    """A counter child: `inc(n)` adds to a float."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (never negative)."""
        self.value += amount


class PlainHistogram:
    """A histogram child: per-bucket counts (not cumulative) and the sum of observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (bucket `le` = the first bound not below it)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class _Family:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)


class PlainCounterFamily(_Family):
    """A labelled counter (`name` without `_total`), its children made once by `labels`."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames)
        self.children: dict[tuple[str, ...], PlainCounter] = {}

    def labels(self, *values: str) -> PlainCounter:
        """The child for these label values (created on first use)."""
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = PlainCounter()
        return child

    def collect(self) -> Metric:
        """The family as prometheus-client exports a counter."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class PlainHistogramFamily(_Family):
    """A labelled histogram with fixed buckets."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(buckets)
        self.children: dict[tuple[str, ...], PlainHistogram] = {}

    def labels(self, *values: str) -> PlainHistogram:
        """The child for these label values (created on first use)."""
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = PlainHistogram(self.buckets)
        return child

    def collect(self) -> Metric:
        """The family as prometheus-client exports a histogram (cumulative buckets, +Inf, sum)."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self.buckets, float("inf")), child.counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else _bound(bound), running))
            family.add_metric(list(values), buckets, child.total)
        return family


def _bound(value: float) -> str:
    # The `le` label exactly as prometheus-client writes it, so that dashboards and tests see the same series.
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class PlainCollector(Collector):
    """Exports plain families to a registry when it is scraped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._families: list[PlainCounterFamily | PlainHistogramFamily] = []
        registry.register(self)

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> PlainCounterFamily:
        """A new counter family exported by this collector."""
        family = PlainCounterFamily(name, documentation, labelnames)
        self._families.append(family)
        return family

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> PlainHistogramFamily:
        """A new histogram family exported by this collector."""
        family = PlainHistogramFamily(name, documentation, labelnames, buckets)
        self._families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        """Every family, as of now."""
        for family in self._families:
            yield family.collect()
