"""The wrappers, with spans kept by OpenTelemetry's in-memory exporter: names, parentage, attributes,
metrics, the 500 problem+json, and errors captured exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lambda_event_bus.base import parse_api_gateway_event
from lambda_event_bus.telemetry import Telemetry, TelemetrySettings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.context import LambdaContext
from support.events import load_event

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    settings = TelemetrySettings.from_env(
        {"OTEL_SERVICE_NAME": "wrappers", "AWS_LAMBDA_FUNCTION_NAME": "ingest", "OTEL_TRACES_EXPORTER": "otlp"}
    )
    built = Telemetry(settings, otlp_exporter=exporter)
    yield built
    built.tracing.shutdown()


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_rest_event_gets_a_server_span_child_of_traceparent_and_route_metrics(telemetry, exporter):
    @telemetry.http_handler
    def handler(event, context):
        with telemetry.kafka_operation("produce", "orders", 2) as produce:
            produce.record_message(321, offset=7, key="o-1")
        return {"statusCode": 202, "body": "{}"}

    event = load_event("apigw_rest_post_events")
    event["headers"]["traceparent"] = TRACEPARENT
    context = LambdaContext(function_name="ingest")
    assert handler(event, context)["statusCode"] == 202
    spans = spans_by_name(exporter)
    server, produce = spans["POST /events"], spans["produce orders"]
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert server.attributes["http.route"] == "/events"
    assert server.attributes["http.response.status_code"] == 202
    assert server.attributes["faas.invocation_id"] == context.aws_request_id
    assert server.attributes["faas.coldstart"] is True
    assert produce.parent.span_id == server.context.span_id
    assert produce.kind is SpanKind.PRODUCER
    assert produce.attributes["messaging.destination.partition.id"] == "2"
    metrics = telemetry.metrics
    assert metrics.value("http_requests_total", method="POST", endpoint="/events", status="202") == 1
    assert metrics.value("http_request_duration_seconds", method="POST", endpoint="/events", status="202") == 1
    assert metrics.value("http_active_connections") == 0
    assert metrics.value("kafka_operations_total", operation="produce", topic="orders", status="success") == 1
    assert metrics.value("kafka_message_size_bytes", operation="produce", topic="orders") == 1
    assert metrics.value("lambda_cold_starts_total") == 1
    handler(event, LambdaContext())
    assert metrics.value("lambda_cold_starts_total") == 1, "only the first invocation is cold"
    assert metrics.value("lambda_invocations_total", outcome="success") == 2


def test_http_api_event_uses_the_route_template_never_the_raw_path(telemetry):
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 200})
    handler(load_event("apigw_http_api_post_item"), LambdaContext())
    assert telemetry.metrics.value("http_requests_total", method="POST", endpoint="/items/{id}", status="200") == 1
    request = parse_api_gateway_event(load_event("apigw_http_api_post_item"))
    assert (request.version, request.path, request.source_ip) == ("2.0", "/items/42", "192.168.0.1/32")
    assert parse_api_gateway_event({"rawPath": "/x", "version": "2.0", "routeKey": "$default"}).route == "$default"
    assert parse_api_gateway_event("not an event").route == "unmatched"


def test_unhandled_exception_becomes_a_500_problem_with_the_event_id(telemetry, exporter, capsys):
    @telemetry.http_handler
    def handler(event, context):
        raise RuntimeError("database unavailable")

    event = load_event("apigw_rest_post_events")
    event["headers"]["X-Correlation-Id"] = "corr-7"
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 500
    assert response["headers"]["Content-Type"] == "application/problem+json"
    problem = json.loads(response["body"])
    assert problem["status"] == 500
    assert problem["title"] == "Internal Server Error"
    assert problem["instance"] == "/events"
    assert len(problem["event_id"]) == 32
    assert "database unavailable" not in response["body"], "internal details stay in the logs"
    error_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ERROR"' in line]
    assert len(error_lines) == 1, "captured once, though it crossed two wrappers"
    assert error_lines[0]["event_id"] == problem["event_id"]
    assert error_lines[0]["correlation_id"] == "corr-7"
    server = spans_by_name(exporter)["POST /events"]
    assert server.status.status_code is StatusCode.ERROR
    assert [event.name for event in server.events] == ["exception"]
    assert telemetry.metrics.value("http_requests_total", method="POST", endpoint="/events", status="500") == 1
    assert telemetry.metrics.value("errors_captured_total", component="http", error_type="RuntimeError") == 1


def test_lambda_handler_reraises_the_original_exception_after_capturing_it(telemetry, exporter):
    class PaymentDeclinedError(Exception):
        pass

    @telemetry.lambda_handler(trigger="pubsub", kind=SpanKind.CONSUMER)
    def handler(event, context):
        raise PaymentDeclinedError("card 4242")

    with pytest.raises(PaymentDeclinedError, match="card 4242") as raised:
        handler({}, LambdaContext())
    assert len(raised.value.__eventbus_event_id__) == 32
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CONSUMER
    assert span.attributes["faas.trigger"] == "pubsub"
    assert telemetry.metrics.value("lambda_invocations_total", outcome="error") == 1


def test_event_processing_records_duration_and_errors_by_type_and_source(telemetry):
    with telemetry.event_processing("order.created", "/orders"):
        pass
    with pytest.raises(ValueError, match="bad amount"), telemetry.event_processing("order.created", "/orders"):
        raise ValueError("bad amount")
    metrics = telemetry.metrics
    assert metrics.value("event_processing_duration_seconds", event_type="order.created", source="/orders") == 2
    labels = {"event_type": "order.created", "source": "/orders", "error_type": "ValueError"}
    assert metrics.value("event_processing_errors_total", **labels) == 1


def test_operations_work_as_decorators_and_re_enter(telemetry, exporter):
    @telemetry.cdc_operation("orders-connector", "orders", "update")
    def apply_change(depth: int) -> int:
        return depth if depth == 0 else apply_change(depth - 1)

    assert apply_change(2) == 0
    assert (
        telemetry.metrics.value("cdc_events_total", connector="orders-connector", table="orders", operation="update")
        == 3
    )
    telemetry.flush()  # outside an invocation wrapper nothing flushes on its own
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["cdc update orders"] * 3
    spans = exporter.get_finished_spans()
    assert spans[0].parent.span_id == spans[1].context.span_id


def test_cdc_lag_and_failed_kafka_operation(telemetry):
    with telemetry.cdc_operation("debezium", "customers", "create") as change:
        change.record_lag(2.5)
    assert telemetry.metrics.value("cdc_lag_seconds", connector="debezium", table="customers") == 1
    with pytest.raises(TimeoutError), telemetry.kafka_operation("produce", "orders"):
        raise TimeoutError("broker timed out")
    labels = {"operation": "produce", "topic": "orders", "status": "error"}
    assert telemetry.metrics.value("kafka_operations_total", **labels) == 1
    assert telemetry.metrics.value("errors_captured_total", component="kafka", error_type="TimeoutError") == 1


def test_capture_error_works_for_exceptions_that_refuse_new_attributes(telemetry, capsys):
    class FrozenError(Exception):
        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(name)

    event_id = telemetry.capture_error(FrozenError("immutable"), "test", "odd", {"weird": object()})
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ERROR"' in line]
    assert line["event_id"] == event_id
    assert line["error_type"].endswith("FrozenError")
    assert line["context"]["weird"].startswith("<object object")


def test_an_error_crossing_nested_wrappers_is_reported_once_and_fails_every_span(telemetry, exporter, capsys):
    @telemetry.http_handler
    def handler(event, context):
        with telemetry.event_processing("order.created", "/orders"), telemetry.kafka_operation("produce", "orders"):
            raise BrokenPipeError("broker connection lost")

    response = handler(load_event("apigw_rest_post_events"), LambdaContext())
    event_id = json.loads(response["body"])["event_id"]
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ERROR"' in line]
    assert (line["event_id"], line["component"], line["handled"]) == (event_id, "kafka", False)
    spans = spans_by_name(exporter)
    for name in ("produce orders", "process order.created", "POST /events"):
        assert spans[name].status.status_code is StatusCode.ERROR, name
        assert spans[name].attributes["eventbus.error.event_id"] == event_id, name
    assert [event.name for event in spans["produce orders"].events] == ["exception"], "the stack is recorded once"
    metrics = telemetry.metrics
    labels = {"event_type": "order.created", "source": "/orders", "error_type": "BrokenPipeError"}
    assert metrics.value("event_processing_errors_total", **labels) == 1
    assert metrics.value("kafka_operations_total", operation="produce", topic="orders", status="error") == 1
    assert metrics.value("errors_captured_total", component="kafka", error_type="BrokenPipeError") == 1
    assert metrics.value("http_requests_total", method="POST", endpoint="/events", status="500") == 1


def test_server_span_attributes_follow_the_http_conventions(telemetry, exporter):
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 200})
    event = load_event("apigw_rest_post_events", httpMethod="BREW")
    handler(event, LambdaContext())
    (server,) = exporter.get_finished_spans()
    assert server.name == "_OTHER /events"
    assert server.attributes["http.request.method"] == "_OTHER"
    assert server.attributes["url.scheme"] == "https"
    assert server.attributes["aws.request_id"] == event["requestContext"]["requestId"]
    assert telemetry.metrics.value("http_requests_total", method="_OTHER", endpoint="/events", status="200") == 1


def test_custom_spans_work_as_context_managers_and_decorators(telemetry, exporter):
    @telemetry.span("validate order", attributes={"order.items": 3})
    def validate() -> str:
        telemetry.set_attributes({"order.valid": True})
        return "ok"

    with telemetry.span("handle order"):
        assert validate() == "ok"
        assert validate() == "ok"
    telemetry.flush()
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["validate order", "validate order", "handle order"]
    assert spans[0].attributes == {"order.items": 3, "order.valid": True}
    assert spans[0].parent.span_id == spans[2].context.span_id


def test_a_5xx_answered_by_the_handler_marks_the_span_failed(telemetry, exporter):
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 503, "body": ""})
    handler(load_event("apigw_rest_post_events"), LambdaContext())
    (server,) = exporter.get_finished_spans()
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "HTTP 503"
