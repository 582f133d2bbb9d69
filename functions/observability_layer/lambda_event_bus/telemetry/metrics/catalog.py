"""The metric catalog: names, types and labels that dashboards, alerts and checks rely on. Keep them exact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["counter", "gauge", "histogram"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (128, 512, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


CATALOG: tuple[MetricSpec, ...] = (
    # HTTP (IngestFunction and every HTTP-wrapped handler); endpoint is the route template
    MetricSpec("http_requests_total", "counter", "HTTP requests handled", ("method", "endpoint", "status")),
    MetricSpec(
        "http_request_duration_seconds",
        "histogram",
        "HTTP request handling time",
        ("method", "endpoint", "status"),
        DURATION_BUCKETS,
    ),
    MetricSpec("http_active_connections", "gauge", "HTTP requests in flight in this execution environment"),
    # events
    MetricSpec("events_produced_total", "counter", "Events published to the bus", ("event_type", "topic", "source")),
    MetricSpec(
        "events_consumed_total",
        "counter",
        "Events consumed from the bus, each once: when all its deliveries are settled",
        ("event_type", "topic", "source"),
    ),
    MetricSpec(
        "events_redelivered_total",
        "counter",
        "Records the event source mapping delivered again after all their deliveries were done",
        ("event_type", "topic", "source"),
    ),
    MetricSpec(
        "event_processing_duration_seconds",
        "histogram",
        "Time spent processing one event",
        ("event_type", "source"),
        DURATION_BUCKETS,
    ),
    MetricSpec(
        "event_processing_errors_total",
        "counter",
        "Events whose processing failed",
        ("event_type", "source", "error_type"),
    ),
    # Kafka
    MetricSpec("kafka_operations_total", "counter", "Kafka operations", ("operation", "topic", "status")),
    MetricSpec("kafka_connection_status", "gauge", "1 when the broker answered the last request, else 0", ("broker",)),
    MetricSpec(
        "kafka_message_size_bytes",
        "histogram",
        "Kafka record value size",
        ("operation", "topic"),
        SIZE_BUCKETS,
    ),
    MetricSpec(
        "kafka_consumer_lag_seconds",
        "histogram",
        "Record age when processed (the lag a Lambda consumer can see)",
        ("topic",),
        LAG_BUCKETS,
    ),
    # delivery to subscribers (KafkaConsumerFunction)
    MetricSpec(
        "deliveries_total",
        "counter",
        "Deliveries to subscription targets by outcome (delivered, duplicate, retry, dead_lettered)",
        ("subscription", "target_type", "outcome"),
    ),
    MetricSpec(
        "delivery_duration_seconds",
        "histogram",
        "Time one delivery to a subscription target took",
        ("subscription", "target_type"),
        DURATION_BUCKETS,
    ),
    # CDC
    MetricSpec("cdc_events_total", "counter", "Change events handled", ("connector", "table", "operation")),
    MetricSpec("cdc_connector_status", "gauge", "1 when the CDC connector is running, else 0", ("connector",)),
    MetricSpec(
        "cdc_lag_seconds",
        "histogram",
        "Now minus the source change time",
        ("connector", "table"),
        LAG_BUCKETS,
    ),
    # Lambda runtime (python_info, process_* and python_gc_* come from prometheus_client's collectors)
    MetricSpec(
        "lambda_cold_starts_total",
        "counter",
        "Invocations that were the first of their execution environment",
    ),
    MetricSpec("lambda_invocations_total", "counter", "Invocations by outcome", ("outcome",)),
    # the layer itself
    MetricSpec("errors_captured_total", "counter", "Errors captured by capture_error", ("component", "error_type")),
    MetricSpec(
        "telemetry_export_failures_total",
        "counter",
        "End-of-invocation flush steps that failed (error), ran out of time (timeout) or found the "
        "previous one still running (busy), per backend",
        ("backend", "reason"),
    ),
    MetricSpec(
        "sentry_events_dropped_total",
        "counter",
        "Error events the Sentry transport could not deliver (network, full queue, rate limits)",
        ("reason",),
    ),
    MetricSpec(
        "telemetry_export_skipped_total",
        "counter",
        "Flushes that skipped a backend while it was backing off after a failure",
        ("backend",),
    ),
    MetricSpec(
        "telemetry_spans_retained",
        "gauge",
        "Spans whose export failed, kept for the next export once the collector answers again",
    ),
    MetricSpec(
        "telemetry_spans_dropped_total",
        "counter",
        "Spans given up after failed exports: the retention bound was full (oldest first) or too many attempts",
        ("reason",),
    ),
    MetricSpec(
        "telemetry_flush_duration_seconds",
        "histogram",
        "Time the end-of-invocation flush spent per backend",
        ("backend",),
        FLUSH_BUCKETS,
    ),
    MetricSpec(
        "metric_label_overflow_total",
        "counter",
        "Label values folded into the overflow value by the cardinality guard",
        ("metric", "label"),
    ),
)

CATALOG_BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}
