"""OTEL_SDK_DISABLED=true turns the layer's telemetry off (the OpenTelemetry variable's meaning: every signal):
no spans, no metrics, no backend to flush; the handler and its errors' log lines work as before."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry import Telemetry, TelemetrySettings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.context import LambdaContext
from support.events import load_event

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def telemetry(**environ: str) -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    env = {
        "OTEL_SERVICE_NAME": "off",
        "OTEL_TRACES_EXPORTER": "otlp",
        "PUSHGATEWAY_URL": "http://127.0.0.1:9",
        **environ,
    }
    return Telemetry(TelemetrySettings.from_env(env), otlp_exporter=exporter), exporter


def test_disabled_telemetry_records_and_exports_nothing():
    on, on_spans = telemetry()
    off, off_spans = telemetry(OTEL_SDK_DISABLED="true")
    for layer in (on, off):
        handler = layer.http_handler(lambda event, context: {"statusCode": 202, "body": "{}"})
        assert handler(load_event("apigw_rest_post_events"), LambdaContext())["statusCode"] == 202
        layer.tracing.flush()

    assert len(on_spans.get_finished_spans()) == 1
    assert on.metrics.value("http_requests_total", method="POST", endpoint="/events", status="202") == 1
    assert off_spans.get_finished_spans() == ()
    assert off.metrics.value("http_requests_total", method="POST", endpoint="/events", status="202") is None
    assert (off.flusher.backends, off.pushgateway) == ((), None)
    assert b"python_info" not in off.metrics.exposition()


def test_an_error_is_still_answered_with_its_event_id_when_telemetry_is_off():
    off, _ = telemetry(OTEL_SDK_DISABLED="TRUE")

    @off.http_handler
    def handler(event, context):
        raise RuntimeError("boom")

    response = handler(load_event("apigw_rest_post_events"), LambdaContext())
    assert response["statusCode"] == 500
    assert "event_id" in response["body"]


def test_a_trace_goes_on_through_a_function_with_telemetry_off():
    """Nothing is recorded, but the caller's trace context reaches what the function sends on."""
    off, _ = telemetry(OTEL_SDK_DISABLED="true")
    sent: list[dict[str, str]] = []

    @off.http_handler
    def handler(event, context):
        with off.span("produce"):
            sent.append({key: value.decode() for key, value in off.kafka_headers()})
        return {"statusCode": 202, "body": "{}"}

    event = load_event("apigw_rest_post_events")
    event["headers"]["traceparent"] = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    handler(event, LambdaContext())
    assert sent[0]["traceparent"].split("-")[1] == TRACE_ID


@pytest.mark.parametrize(
    ("value", "disabled"), [("true", True), ("True", True), ("false", False), ("", False), ("1", False)]
)
def test_only_true_disables_as_the_specification_says(value: str, disabled: bool):
    assert TelemetrySettings.from_env({"OTEL_SDK_DISABLED": value}).disabled is disabled
