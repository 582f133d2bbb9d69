"""Metrics of one execution environment: the catalog on the project's own registry, guarded labels,
runtime collectors and business metrics."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Mapping
from typing import Protocol, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from lambda_event_bus.telemetry.metrics.cardinality import CardinalityGuard
from lambda_event_bus.telemetry.metrics.catalog import CATALOG, DURATION_BUCKETS, MetricKind, MetricSpec

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
MAX_BUSINESS_METRICS = 100
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _build(spec: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or DURATION_BUCKETS)


MAX_CACHED_CHILDREN = 10_000


class Series(Protocol):
    """A series' updates: a counter's `inc`, a gauge's `inc` and `set`, a histogram's `observe`."""

    def inc(self, amount: float = 1.0) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, amount: float) -> None: ...


class _IgnoredSeries:
    def inc(self, amount: float = 1.0) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


_IGNORED = _IgnoredSeries()


class Metrics:
    """The catalog's metrics on a `CollectorRegistry` of our own (never the global default one).

    Catalog metrics are addressed by name; a wrong name or label set is a programming error and raises.
    Label values pass through the cardinality guard.
    """

    def __init__(self, label_value_limit: int, *, runtime_collectors: bool = True, enabled: bool = True) -> None:
        # `_created` samples would double the series every push carries, for no dashboard's benefit
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # auto_describe: names of collect-only collectors (python_info, ...) are known, so no business
        # metric can shadow them
        self.registry = CollectorRegistry(auto_describe=True)
        self.enabled = enabled  # False (OTEL_SDK_DISABLED): every update is a no-op and the registry stays empty
        self._specs: dict[str, MetricSpec] = {}
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._business_lock = threading.Lock()
        # (metric, label values) -> its child: a hot path (a consumer records ~10 series per record) skips the
        # label checks and prometheus_client's lookup; bounded, and only for values the guard let through
        self._children: dict[tuple[str, tuple[tuple[str, object], ...]], MetricWrapperBase] = {}
        for spec in CATALOG:
            self._add(spec)
        self._overflow = cast(Counter, self._metrics["metric_label_overflow_total"])
        self.guard = CardinalityGuard(label_value_limit, self._count_overflow)
        if runtime_collectors and enabled:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def _add(self, spec: MetricSpec) -> None:
        self._metrics[spec.name] = _build(spec, self.registry)
        self._specs[spec.name] = spec

    def _count_overflow(self, metric: str, label: str) -> None:
        self._overflow.labels(metric=metric, label=label).inc()

    def _child(self, name: str, labels: Mapping[str, object]) -> MetricWrapperBase:
        key = (name, tuple(labels.items()))
        try:
            return self._children[key]
        except (KeyError, TypeError):  # TypeError: a label value that cannot be a key
            pass
        child, kept = self._lookup(name, labels)
        if kept and len(self._children) < MAX_CACHED_CHILDREN:
            with contextlib.suppress(TypeError):
                self._children[key] = child
        return child

    def _lookup(self, name: str, labels: Mapping[str, object]) -> tuple[MetricWrapperBase, bool]:
        """The child for `labels`, and whether every value was kept as it is (none folded by the guard)."""
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"unknown metric {name!r}")
        metric = self._metrics[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {tuple(labels)}")
        if not spec.labels:
            return metric, True
        given = {label: str(value) if value not in (None, "") else UNKNOWN for label, value in labels.items()}
        values = {label: self.guard.value(name, label, value) for label, value in given.items()}
        return metric.labels(**values), values == given

    def series(self, name: str, **labels: object) -> Series:
        """One series (a metric with its label values), for a hot loop to update many times: what `inc`,
        `observe` and `set` look up on every call, looked up once. With metrics off, a series that ignores
        its updates."""
        if not self.enabled:
            return _IGNORED
        return cast(Series, self._child(name, labels))

    def inc(self, name: str, amount: float = 1.0, **labels: object) -> None:
        """Add to a counter (or a gauge, e.g. in-flight requests with a negative amount)."""
        if not self.enabled:
            return
        child = self._child(name, labels)
        if isinstance(child, Gauge):
            child.inc(amount)
        else:
            cast(Counter, child).inc(amount)

    def observe(self, name: str, value: float, **labels: object) -> None:
        if self.enabled:
            cast(Histogram, self._child(name, labels)).observe(value)

    def set(self, name: str, value: float, **labels: object) -> None:
        if self.enabled:
            cast(Gauge, self._child(name, labels)).set(value)

    def value(self, name: str, **labels: object) -> float | None:
        """The current value of one series (a histogram's count), for tests and status reports."""
        spec = self._specs.get(name)
        if spec is None:
            return None
        sample = name + ("_count" if spec.kind == "histogram" else "")
        return self.registry.get_sample_value(sample, {k: str(v) for k, v in labels.items()})

    def record_business_metric(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        kind: MetricKind | None = None,
    ) -> bool:
        """Record a metric defined by the application, created on first use.

        The kind defaults to a counter when the name ends in `_total` (the value is added), else a gauge
        (the value is set); pass `kind="histogram"` to observe a distribution. The first call fixes the
        kind and label names. A misuse is logged and reported as False: a metric never fails the caller.
        """
        labels = dict(labels or {})
        chosen: MetricKind = kind or ("counter" if name.endswith("_total") else "gauge")
        problem = self._business_problem(name, chosen, labels)
        if problem:
            logger.warning("business metric %s not recorded: %s", name, problem)
            return False
        try:
            number = float(value)  # Decimal from DynamoDB, numeric strings, ...
            if chosen == "counter":
                self.inc(name, number, **labels)
            elif chosen == "gauge":
                self.set(name, number, **labels)
            else:
                self.observe(name, number, **labels)
        except (TypeError, ValueError) as error:  # not a number, a negative counter increment
            logger.warning("business metric %s not recorded: %s", name, error)
            return False
        return True

    def _business_problem(  # noqa: PLR0911 - one early return per rule reads best
        self, name: str, kind: MetricKind, labels: Mapping[str, str]
    ) -> str | None:
        if not _NAME.match(name):
            return "not a valid Prometheus metric name"
        if any(not _LABEL.match(label) or label.startswith("__") for label in labels):
            return "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __"
        with self._business_lock:
            spec = self._specs.get(name)
            if spec is None:
                business = len(self._specs) - len(CATALOG)
                if business >= MAX_BUSINESS_METRICS:
                    return f"more than {MAX_BUSINESS_METRICS} business metrics"
                try:
                    self._add(MetricSpec(name, kind, f"business metric {name}", tuple(sorted(labels))))
                except ValueError as error:  # collides with a runtime collector's name
                    return str(error)
                return None
        if any(name == catalog.name for catalog in CATALOG):
            return "the name belongs to the catalog"
        if spec.kind != kind:
            return f"already recorded as a {spec.kind}"
        if set(spec.labels) != set(labels):
            return f"already recorded with labels {spec.labels}"
        return None

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what a push or a /metrics scrape carries)."""
        return generate_latest(self.registry)
