"""lambda_event_bus.telemetry.metrics.otlp: the registry as an OTLP ExportMetricsServiceRequest, written without
protobuf and read back with opentelemetry-proto; and the settings that choose it."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry.config import ConfigError, TelemetrySettings
from lambda_event_bus.telemetry.metrics import CATALOG_BY_NAME, Metrics
from lambda_event_bus.telemetry.metrics.otlp import encode_registry
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

RESOURCE = {"service.name": "event-bus-consumer", "service.instance.id": "0f1e2d3c4b5a6978"}
START, NOW = 1_700_000_000_000_000_000, 1_700_000_060_000_000_000


def decoded(metrics: Metrics) -> tuple[bytes, ExportMetricsServiceRequest]:
    body = encode_registry(metrics.registry, RESOURCE, START, NOW)
    return body, ExportMetricsServiceRequest.FromString(body)


def by_name(request: ExportMetricsServiceRequest) -> dict:
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    return {metric.name: metric for metric in scope_metrics.metrics}


def attributes(point) -> dict[str, str]:
    return {item.key: item.value.string_value for item in point.attributes}


@pytest.fixture
def metrics() -> Metrics:
    metrics = Metrics(100, runtime_collectors=False)
    metrics.inc("events_consumed_total", 3, event_type="order.created", topic="orders", source="/shop")
    metrics.inc("events_consumed_total", event_type="order.paid", topic="orders", source="/shop")
    for seconds in (0.004, 0.02, 0.02, 3.0, 1000.0):
        metrics.observe("event_processing_duration_seconds", seconds, event_type="order.created", source="/shop")
    metrics.set("http_active_connections", 2)
    return metrics


def test_the_bytes_are_what_protobuf_itself_writes_for_the_message(metrics):
    body, request = decoded(metrics)
    assert request.SerializeToString() == body


def test_one_resource_naming_the_environment_and_one_scope(metrics):
    _, request = decoded(metrics)
    (resource_metrics,) = request.resource_metrics
    assert {item.key: item.value.string_value for item in resource_metrics.resource.attributes} == RESOURCE
    assert resource_metrics.scope_metrics[0].scope.name == "eventbus.observability"


def test_a_counter_is_a_monotonic_cumulative_sum_named_as_its_prometheus_series(metrics):
    _, request = decoded(metrics)
    counter = by_name(request)["events_consumed_total"]
    assert counter.WhichOneof("data") == "sum"
    assert (counter.sum.is_monotonic, counter.sum.aggregation_temporality) == (True, 2)  # CUMULATIVE
    values = {attributes(point)["event_type"]: point.as_double for point in counter.sum.data_points}
    assert values == {"order.created": 3.0, "order.paid": 1.0}
    assert {(point.start_time_unix_nano, point.time_unix_nano) for point in counter.sum.data_points} == {(START, NOW)}
    assert counter.description == CATALOG_BY_NAME["events_consumed_total"].help


def test_a_histogram_keeps_its_bounds_and_counts_each_bucket_once(metrics):
    _, request = decoded(metrics)
    histogram = by_name(request)["event_processing_duration_seconds"]
    assert histogram.histogram.aggregation_temporality == 2
    (point,) = histogram.histogram.data_points
    assert attributes(point) == {"event_type": "order.created", "source": "/shop"}
    assert (point.count, point.sum) == (5, pytest.approx(1003.044))
    bounds = list(point.explicit_bounds)
    assert bounds == sorted(bounds)
    assert float("inf") not in bounds
    assert len(point.bucket_counts) == len(bounds) + 1, "the last bucket is (last bound, +Inf)"
    assert sum(point.bucket_counts) == 5
    assert point.bucket_counts[-1] == 1, "1000 s is past every bound"

    def bucket_of(seconds: float) -> int:
        return next((index for index, bound in enumerate(bounds) if seconds <= bound), len(bounds))

    assert point.bucket_counts[bucket_of(0.02)] == 2
    assert point.bucket_counts[bucket_of(0.004)] == 1


def test_a_gauge_has_no_start_time_and_unused_labelled_metrics_are_left_out(metrics):
    _, request = decoded(metrics)
    metrics_by_name = by_name(request)
    gauge = metrics_by_name["http_active_connections"]
    (point,) = gauge.gauge.data_points
    assert (point.as_double, point.start_time_unix_nano, point.time_unix_nano) == (2.0, 0, NOW)
    assert "events_produced_total" not in metrics_by_name, "a labelled counter never used has no series"


def test_runtime_collectors_are_exported_too():
    _, request = decoded(Metrics(100))
    names = set(by_name(request))
    assert {"python_info", "process_cpu_seconds_total", "python_gc_collections_total"} <= names


class TestSettings:
    def test_prometheus_is_the_default_and_otlp_goes_to_the_metrics_path_of_the_base_endpoint(self):
        assert TelemetrySettings.from_env({}).metrics_exporter == "prometheus"
        settings = TelemetrySettings.from_env(
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
        )
        assert (settings.metrics_exporter, settings.otlp_metrics_endpoint) == (
            "otlp",
            "http://collector:4318/v1/metrics",
        )

    def test_the_metrics_endpoint_variable_is_used_as_it_is(self):
        settings = TelemetrySettings.from_env(
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m.example/otlp"}
        )
        assert settings.otlp_metrics_endpoint == "https://m.example/otlp"

    def test_grpc_for_metrics_is_refused_at_start_up_with_the_variable_to_set(self):
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
            TelemetrySettings.from_env({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        settings = TelemetrySettings.from_env(
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            }
        )
        assert settings.metrics_exporter == "otlp"

    def test_an_unknown_exporter_is_refused(self):
        with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER"):
            TelemetrySettings.from_env({"OTEL_METRICS_EXPORTER": "statsd"})
