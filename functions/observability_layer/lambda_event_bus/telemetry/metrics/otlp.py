"""OTLP metrics export: the same catalog, as OTLP/HTTP to a collector instead of a Pushgateway.

One Pushgateway holds every execution environment's group and is scraped whole; past a few thousand concurrent
environments it is the ceiling (docs/benchmarks.md measures it). With `OTEL_METRICS_EXPORTER=otlp` each flush
POSTs the registry as an OTLP ExportMetricsServiceRequest to a collector (the extension beside the function, or
a gateway), from where Prometheus remote write or any OTLP backend takes it; collectors scale out behind a load
balancer, which a Pushgateway cannot (its groups live in one process).

The registry stays prometheus_client's: the hot paths (a consumer's per-record counters) are unchanged, and what
is exported is what a push would carry, read the same way (`registry.collect()`):
- a counter is a monotonic cumulative Sum named as its Prometheus series (`events_produced_total`);
- a gauge (python_info, process_*, in-flight requests) is a Gauge;
- a histogram is a cumulative Histogram (Prometheus' cumulative `le` buckets become per-bucket counts), named
  without suffix; a collector's Prometheus exporter adds `_bucket`, `_sum` and `_count` back;
- the environment is the resource's `service.instance.id` (the Pushgateway's `instance`), and the start time of
  every cumulative point is the environment's start, so a backend sees a new series start, not a reset.

The body is written directly in protobuf's wire format (as lambda_event_bus.telemetry.tracing.otlp_encoding writes
spans) and sent on a kept-alive connection (lambda_event_bus.telemetry.transport): no protobuf or `requests` import
on the cold start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from lambda_event_bus.base.env import redact_userinfo
from lambda_event_bus.telemetry.exceptions import TelemetryError
from lambda_event_bus.telemetry.tracing.otlp_encoding import (
    _DOUBLE,
    _FIXED64,
    _delimited,
    _key_value,
    _tag,
    _text,
    _varint,
)
from lambda_event_bus.telemetry.tracing.otlp_http import COMPRESSORS, PROTOBUF
from lambda_event_bus.telemetry.transport import KeepAliveConnection

if TYPE_CHECKING:
    import ssl

logger = logging.getLogger(__name__)

# ExportMetricsServiceRequest / MetricsData, ResourceMetrics, ScopeMetrics (opentelemetry-proto metrics.proto)
_RESOURCE_METRICS = _tag(1, 2)
_RESOURCE, _SCOPE_METRICS = _tag(1, 2), _tag(2, 2)
_SCOPE, _METRICS = _tag(1, 2), _tag(2, 2)
_SCOPE_NAME, _RESOURCE_ATTRIBUTES = _tag(1, 2), _tag(1, 2)
# Metric
_NAME, _DESCRIPTION, _GAUGE, _SUM, _HISTOGRAM = _tag(1, 2), _tag(2, 2), _tag(5, 2), _tag(7, 2), _tag(9, 2)
# Gauge, Sum and Histogram
_DATA_POINTS, _TEMPORALITY, _MONOTONIC = _tag(1, 2), _tag(2, 0), _tag(3, 0)
_CUMULATIVE = _varint(2)  # AGGREGATION_TEMPORALITY_CUMULATIVE
# NumberDataPoint
_START, _TIME, _AS_DOUBLE, _POINT_ATTRIBUTES = _tag(2, 1), _tag(3, 1), _tag(4, 1), _tag(7, 2)
# HistogramDataPoint
_COUNT, _HISTOGRAM_SUM, _BUCKET_COUNTS, _BOUNDS, _HISTOGRAM_ATTRIBUTES = (
    _tag(4, 1),
    _tag(5, 1),
    _tag(6, 2),
    _tag(7, 2),
    _tag(9, 2),
)

SCOPE_NAME = "eventbus.observability"
_INFINITY = float("inf")


def _attributes(tag: bytes, labels: Mapping[str, str]) -> bytes:
    return b"".join(tag + _key_value(key, value) for key, value in labels.items())


def _number_point(labels: Mapping[str, str], value: float, start_ns: int | None, now_ns: int) -> bytes:
    return (
        (_START + _FIXED64(start_ns) if start_ns is not None else b"")
        + _TIME
        + _FIXED64(now_ns)
        + _AS_DOUBLE
        + _DOUBLE(value)
        + _attributes(_POINT_ATTRIBUTES, labels)
    )


def _metric(name: str, description: str, kind: bytes, data: bytes) -> bytes:
    return _delimited(_METRICS, _text(_NAME, name) + _text(_DESCRIPTION, description) + _delimited(kind, data))


@dataclass
class _HistogramSeries:
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    count: float | None = None
    total: float = 0.0

    def encode(self, labels: Mapping[str, str], start_ns: int, now_ns: int) -> bytes:
        cumulative = sorted(self.buckets)
        bounds = [bound for bound, _ in cumulative if bound != _INFINITY]
        counts, below = [], 0.0
        for _, running in cumulative:
            counts.append(int(running - below))
            below = running
        return (
            _START
            + _FIXED64(start_ns)
            + _TIME
            + _FIXED64(now_ns)
            + _COUNT
            + _FIXED64(int(self.count if self.count is not None else below))
            + _HISTOGRAM_SUM
            + _DOUBLE(self.total)
            + _delimited(_BUCKET_COUNTS, b"".join(_FIXED64(value) for value in counts))
            + (_delimited(_BOUNDS, b"".join(_DOUBLE(bound) for bound in bounds)) if bounds else b"")
            + _attributes(_HISTOGRAM_ATTRIBUTES, labels)
        )


def _histogram_points(samples: Iterable[Sample], name: str, start_ns: int, now_ns: int) -> list[bytes]:
    """prometheus_client's `_bucket` (cumulative, by `le`), `_count` and `_sum` samples as HistogramDataPoints,
    one per label set."""
    series: dict[tuple[tuple[str, str], ...], _HistogramSeries] = {}
    for sample in samples:
        labels = tuple((key, value) for key, value in sample.labels.items() if key != "le")
        point = series.setdefault(labels, _HistogramSeries())
        if sample.name == name + "_bucket":
            point.buckets.append((float(sample.labels["le"]), sample.value))
        elif sample.name == name + "_count":
            point.count = sample.value
        elif sample.name == name + "_sum":
            point.total = sample.value
    return [point.encode(dict(labels), start_ns, now_ns) for labels, point in series.items()]


def encode_family(family: Metric, start_ns: int, now_ns: int) -> bytes:
    """One metric family as an OTLP Metric field (empty when it has no samples yet)."""
    samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
    if not samples:
        return b""
    if family.type == "histogram":
        points = _histogram_points(samples, family.name, start_ns, now_ns)
        data = b"".join(_delimited(_DATA_POINTS, point) for point in points) + _TEMPORALITY + _CUMULATIVE
        return _metric(family.name, family.documentation, _HISTOGRAM, data)
    if family.type == "counter":
        # one series name per family (`<name>_total`); cumulative since the environment started
        points = [_number_point(sample.labels, sample.value, start_ns, now_ns) for sample in samples]
        data = b"".join(_delimited(_DATA_POINTS, point) for point in points) + _TEMPORALITY + _CUMULATIVE
        return _metric(samples[0].name, family.documentation, _SUM, data + _MONOTONIC + b"\x01")
    # gauges, and any other kind a collector may report (info, unknown), sample by sample as gauges
    out = []
    for name in dict.fromkeys(sample.name for sample in samples):
        points = [_number_point(s.labels, s.value, None, now_ns) for s in samples if s.name == name]
        out.append(_metric(name, family.documentation, _GAUGE, b"".join(_delimited(_DATA_POINTS, p) for p in points)))
    return b"".join(out)


def encode_registry(
    registry: CollectorRegistry, resource_attributes: Mapping[str, str], start_ns: int, now_ns: int
) -> bytes:
    """The registry's current values as a serialised ExportMetricsServiceRequest (one resource, one scope)."""
    metrics = b"".join(encode_family(family, start_ns, now_ns) for family in registry.collect())
    scope = _delimited(_SCOPE, _text(_SCOPE_NAME, SCOPE_NAME))
    resource = _delimited(_RESOURCE, _attributes(_RESOURCE_ATTRIBUTES, resource_attributes))
    return _delimited(_RESOURCE_METRICS, resource + _delimited(_SCOPE_METRICS, scope + metrics))


class OtlpMetricsError(TelemetryError, OSError):
    """The collector did not take the metrics (a network error, or a non-2xx answer)."""


class OtlpMetricsExporter:
    """POSTs the whole registry at each flush, as the Pushgateway export PUTs it: a later export carries
    everything an earlier failed one would have (cumulative values), so a failure loses nothing."""

    def __init__(
        self,
        endpoint: str,
        *,
        registry: CollectorRegistry,
        resource_attributes: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        compression: str = "none",
        ssl_context: ssl.SSLContext | None = None,
        start_ns: int | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = redact_userinfo(endpoint)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._registry = registry
        self.resource_attributes = dict(resource_attributes)
        self._compression = compression
        self._headers = {"Content-Type": PROTOBUF, "User-Agent": "eventbus-observability", **(headers or {})}
        if compression in COMPRESSORS:
            self._headers["Content-Encoding"] = compression
        self._connection = KeepAliveConnection.for_url(endpoint, ssl_context=ssl_context)
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.bytes_sent = 0

    def body(self) -> bytes:
        return encode_registry(self._registry, self.resource_attributes, self.start_ns, time.time_ns())

    def push(self, timeout: float) -> None:
        """Send the registry; raises OtlpMetricsError (an OSError, as the Pushgateway push does) when not taken."""
        body = self.body()
        compress = COMPRESSORS.get(self._compression)
        if compress is not None:
            body = compress(body)
        try:
            status, answer = self._connection.request("POST", self._path, self._headers, body, timeout)
        except OSError as error:
            raise OtlpMetricsError(f"OTLP metrics export to {self.endpoint} failed: {error}") from error
        except Exception as error:  # http.client.HTTPException: a malformed answer
            raise OtlpMetricsError(f"OTLP metrics export to {self.endpoint} failed: {error}") from error
        if not 200 <= status < 300:
            raise OtlpMetricsError(f"OTLP metrics export to {self.endpoint} answered HTTP {status}: {answer[:200]!r}")
        self.bytes_sent += len(body)

    def rename(self, instance: str) -> None:
        """Export as a new environment from now on (one restored from a SnapStart snapshot): its own
        service.instance.id, and its cumulative series starting now."""
        self.resource_attributes["service.instance.id"] = instance
        self.start_ns = time.time_ns()

    def close(self) -> None:
        self._connection.close()


def resource_for_metrics(attributes: Mapping[str, object], instance_id: str) -> dict[str, str]:
    """The tracing resource's attributes that are text, plus the environment's id (what tells one execution
    environment's cumulative series from another's, as the Pushgateway's `instance` does)."""
    kept = {key: value for key, value in attributes.items() if isinstance(value, str)}
    return {**kept, "service.instance.id": instance_id}
