"""A captured error: one JSON log line whose ids match the exported span, the exception on that span,
and a Sentry envelope (to a local endpoint standing in for Sentry's ingest) with the same event id."""

from __future__ import annotations

import json
import time

import pytest
from support.context import LambdaContext
from support.events import load_event

pytestmark = pytest.mark.servers

STATUS_ERROR = 2  # OTLP's Status.code for ERROR


def error_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"level":"ERROR"' in line]


def wait_for_envelopes(ingest, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(ingest.envelopes) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_unhandled_http_error_is_one_line_one_span_event_and_one_sentry_event(
    otlp_receiver, sentry_ingest, make_telemetry, service_name, capsys
):
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        SENTRY_DSN=sentry_ingest.start(),
        TELEMETRY_FLUSH_TIMEOUT_MS="3000",
        VERSION="2.0.0",
    )

    @telemetry.http_handler
    def handler(event, context):
        raise LookupError("order o-1 not found")

    event = load_event("apigw_rest_post_events")
    event["headers"]["X-Correlation-Id"] = "corr-42"
    context = LambdaContext()
    response = handler(event, context)
    problem = json.loads(response["body"])

    (line,) = error_lines(capsys.readouterr().out)
    assert line["event_id"] == problem["event_id"]
    assert (line["component"], line["operation"]) == ("http", "POST /events")
    assert (line["request_id"], line["correlation_id"]) == (context.aws_request_id, "corr-42")
    assert line["error_type"] == "LookupError"
    assert line["handled"] is False
    assert line["context"] == {"method": "POST", "route": "/events", "path": "/events"}

    (span,) = otlp_receiver.store.wait_for(lambda found: len(found) >= 1, service_name)
    assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)
    assert span.events == ("exception",)
    assert span.status_code == STATUS_ERROR

    wait_for_envelopes(sentry_ingest, 1)
    (envelope,) = [e for e in sentry_ingest.envelopes if e.event() is not None]
    assert envelope.event_id == problem["event_id"]
    sentry_event = envelope.event()
    assert sentry_event["contexts"]["trace"]["trace_id"] == span.trace_id
    assert sentry_event["tags"]["component"] == "http"
    assert sentry_event["release"] == "2.0.0"
    assert sentry_event["exception"]["values"][0]["mechanism"]["handled"] is False


def test_capture_error_scrubs_secrets_from_the_log_line_and_sentry(sentry_ingest, make_telemetry, capsys):
    telemetry = make_telemetry(SENTRY_DSN=sentry_ingest.start(), TELEMETRY_FLUSH_TIMEOUT_MS="3000")
    context = {
        "event_type": "payment.captured",
        "source": "/payments",
        "password": "hunter2",
        "webhook": {"url": "https://hooks.example", "Authorization": "Bearer abc", "api_key": "k-1"},
        "correlation_id": "corr-9",
    }
    with telemetry.span("charge"):
        event_id = telemetry.capture_error(ConnectionError("gateway down"), "webhook", "deliver", context)
    telemetry.flush()

    (line,) = error_lines(capsys.readouterr().out)
    assert line["event_id"] == event_id
    assert line["correlation_id"] == "corr-9"
    assert line["handled"] is True
    assert line["context"]["password"] == "[Filtered]"
    assert line["context"]["webhook"] == {
        "url": "https://hooks.example",
        "Authorization": "[Filtered]",
        "api_key": "[Filtered]",
    }
    labels = {"event_type": "payment.captured", "source": "/payments", "error_type": "ConnectionError"}
    assert telemetry.metrics.value("event_processing_errors_total", **labels) == 1

    wait_for_envelopes(sentry_ingest, 1)
    envelope = next(e for e in sentry_ingest.envelopes if e.event() is not None)
    assert envelope.event_id == event_id
    body = json.dumps(envelope.event())
    assert "hunter2" not in body
    assert "Bearer abc" not in body


def test_an_event_sentry_samples_out_still_gets_an_id_and_its_log_line(sentry_ingest, make_telemetry, capsys):
    telemetry = make_telemetry(SENTRY_DSN=sentry_ingest.start(), SENTRY_SAMPLE_RATE="0")
    event_id = telemetry.capture_error(KeyError("sku"), "catalog", "lookup")
    telemetry.flush()
    (line,) = error_lines(capsys.readouterr().out)
    assert line["event_id"] == event_id
    assert len(event_id) == 32
    assert not [e for e in sentry_ingest.envelopes if e.event() is not None]


def test_secrets_inside_messages_and_values_never_reach_logs_spans_or_sentry(
    otlp_receiver, sentry_ingest, make_telemetry, service_name, capsys
):
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        SENTRY_DSN=sentry_ingest.start(),
        TELEMETRY_FLUSH_TIMEOUT_MS="3000",
    )
    secrets = ("s3cr3t-pw", "hunter2", "t0k3n-abc", "sig-9f8e")
    context = {"target": "https://ops:s3cr3t-pw@hooks.example/in", "query": "page=2&token=t0k3n-abc"}

    def connect() -> None:
        raise ConnectionError("could not reach postgres://admin:hunter2@db:5432/orders (sig=sig-9f8e)")

    @telemetry.lambda_handler
    def handler(event, context_):
        with telemetry.span("connect"):
            try:
                connect()
            except ConnectionError as error:
                telemetry.capture_error(error, "cdc", "connect", context)
        return "done"

    assert handler({}, LambdaContext()) == "done"

    (line,) = error_lines(capsys.readouterr().out)
    assert line["error_message"] == "could not reach postgres://admin:[Filtered]@db:5432/orders (sig=[Filtered])"
    assert line["context"] == {
        "target": "https://ops:[Filtered]@hooks.example/in",
        "query": "page=2&token=[Filtered]",
    }
    assert not [secret for secret in secrets if secret in json.dumps(line)]

    spans = otlp_receiver.store.wait_for(lambda found: any(s.name == "connect" for s in found), service_name)
    exported = json.dumps([[span.status_message, span.event_attributes] for span in spans], default=str)
    assert "[Filtered]" in exported
    assert not [secret for secret in secrets if secret in exported]

    wait_for_envelopes(sentry_ingest, 1)
    envelope = next(e for e in sentry_ingest.envelopes if e.event() is not None)
    sentry_event = envelope.event()
    for exception in sentry_event["exception"]["values"]:
        for frame in exception.get("stacktrace", {}).get("frames", []):  # this file's source lines spell them out
            for source in ("pre_context", "context_line", "post_context"):
                frame.pop(source, None)
    body = json.dumps(sentry_event)
    assert "postgres://admin:[Filtered]@db" in body
    assert not [secret for secret in secrets if secret in body], body
