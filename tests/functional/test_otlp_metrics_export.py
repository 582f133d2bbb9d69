"""OTEL_METRICS_EXPORTER=otlp: the catalog reaches a real OTLP receiver (rotel) as OTLP metrics, instead of a
Pushgateway, one environment per `service.instance.id`; a receiver that is down never fails an invocation."""

from __future__ import annotations

import pytest
from samhost.processes import free_port
from support.context import LambdaContext

pytestmark = pytest.mark.servers


def test_an_invocations_metrics_arrive_as_otlp_with_the_environment_as_resource(
    otlp_receiver, pushgateway, make_telemetry, service_name
):
    telemetry = make_telemetry(
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        PUSHGATEWAY_URL=pushgateway,  # set, but OTLP was chosen: nothing is pushed there
        TELEMETRY_FLUSH_TIMEOUT_MS="5000",
        AWS_LAMBDA_FUNCTION_NAME="ingest",
    )
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 202, "body": ""})
    event = {"httpMethod": "POST", "resource": "/events", "path": "/events", "headers": {}}
    for _ in range(3):
        assert handler(event, LambdaContext(function_name="ingest"))["statusCode"] == 202
    report = telemetry.flusher.flush()
    assert [(result.backend, result.outcome) for result in report.results] == [("otlp_metrics", "ok")]
    assert telemetry.pushgateway is None

    def requests_counted(points) -> bool:
        return any(p.metric == "http_requests_total" and p.value == 3 for p in points)

    points = otlp_receiver.metrics.wait_for(requests_counted, service_name)
    requests = [p for p in points if p.metric == "http_requests_total"]
    # each invocation flushed (inline here): cumulative values 1, 2, 3, and 3 again from the explicit flush
    assert [p.value for p in requests] == [1, 2, 3, 3]
    requests = requests[-1]
    assert requests.kind == "sum"
    assert requests.attributes == {"method": "POST", "endpoint": "/events", "status": "202"}
    assert requests.resource["service.instance.id"] == telemetry.instance_id
    assert requests.resource["faas.name"] == "ingest"
    assert 0 < requests.start_ns < requests.time_ns
    duration = [p for p in points if p.metric == "http_request_duration_seconds"][-1]
    assert duration.count == 3
    assert duration.kind == "histogram"
    assert sum(duration.bucket_counts) == 3
    assert len(duration.bucket_counts) == len(duration.bounds) + 1


def test_a_receiver_that_is_down_costs_a_counted_failure_never_the_invocation(make_telemetry):
    telemetry = make_telemetry(
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"http://127.0.0.1:{free_port()}/v1/metrics",
        TELEMETRY_FLUSH_TIMEOUT_MS="2000",
    )
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 200, "body": ""})
    event = {"httpMethod": "GET", "resource": "/health", "path": "/health", "headers": {}}
    assert handler(event, LambdaContext(function_name="ingest"))["statusCode"] == 200  # flushed inline, refused
    failures = telemetry.metrics.value("telemetry_export_failures_total", backend="otlp_metrics", reason="error")
    assert failures == 1
    # backed off: the next invocation does not try again, and still answers
    assert handler(event, LambdaContext(function_name="ingest"))["statusCode"] == 200
    skipped = telemetry.metrics.value("telemetry_export_skipped_total", backend="otlp_metrics")
    assert skipped == 1
