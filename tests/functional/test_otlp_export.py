"""Spans reach a real OTLP receiver (rotel) over HTTP/protobuf and gRPC with the right resource,
parent/child relations and batch links."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
import zlib
from collections.abc import Iterator
from typing import ClassVar

import pytest
from lambda_event_bus.telemetry.tracing import links_for
from lambda_event_bus.telemetry.tracing.otlp_http import OtlpHttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind
from support.context import LambdaContext
from support.events import load_event

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "consumer",
    "AWS_LAMBDA_FUNCTION_VERSION": "7",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/26/[7]abcdef",
    "AWS_REGION": "eu-west-1",
    "VERSION": "1.2.3",
    "ENVIRONMENT": "staging",
    "OTEL_RESOURCE_ATTRIBUTES": "team=payments",
}
PRODUCERS = [
    ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
]
SPAN_KIND_SERVER, SPAN_KIND_CONSUMER = 2, 5  # OTLP's enum values


@pytest.mark.servers
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_batch_trace_with_links_and_children_arrives(protocol, otlp_receiver, make_telemetry, service_name):
    endpoint = otlp_receiver.http_endpoint if protocol == "http/protobuf" else otlp_receiver.grpc_endpoint
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        TELEMETRY_FLUSH_TIMEOUT_MS="5000",
        **LAMBDA_ENV,
    )
    records = [{"headers": [{"traceparent": list(f"00-{t}-{s}-01".encode())}]} for t, s in PRODUCERS]

    @telemetry.lambda_handler(name="consume batch", kind=SpanKind.CONSUMER, trigger="pubsub")
    def handler(event, context):
        contexts = [telemetry.context_from_kafka_headers(record["headers"]) for record in event["records"]]
        telemetry.set_attributes({"messaging.batch.message_count": len(contexts)})
        with telemetry.span("deliver batch", links=links_for(contexts)):
            for record_context in contexts:
                with telemetry.event_processing("order.created", "/orders", context=record_context):
                    pass
        return {"batchItemFailures": []}

    context = LambdaContext(function_name="consumer")
    handler({"records": records}, context)
    assert telemetry.flusher.flush().ok

    spans = otlp_receiver.store.wait_for(lambda found: len(found) >= 4, service_name)
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["consume batch"]
    (batch,) = by_name["deliver batch"]
    processing = by_name["process order.created"]

    resource = root.resource
    assert resource["service.name"] == service_name
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["team"] == "payments"
    assert (resource["cloud.provider"], resource["cloud.platform"], resource["cloud.region"]) == (
        "aws",
        "aws_lambda",
        "eu-west-1",
    )
    assert (resource["faas.name"], resource["faas.version"], resource["faas.instance"]) == (
        "consumer",
        "7",
        "2026/11/26/[7]abcdef",
    )
    assert resource["faas.max_memory"] == 512 * 1024 * 1024

    assert root.kind == SPAN_KIND_CONSUMER
    assert root.parent_span_id == ""
    assert root.attributes["faas.coldstart"] is True
    assert root.attributes["faas.invocation_id"] == context.aws_request_id
    assert root.attributes["cloud.account.id"] == "123456789012"
    assert root.attributes["messaging.batch.message_count"] == 2
    assert batch.parent_span_id == root.span_id
    assert batch.trace_id == root.trace_id
    assert sorted(batch.links) == sorted(PRODUCERS)
    assert sorted((span.trace_id, span.parent_span_id) for span in processing) == sorted(PRODUCERS)


@pytest.mark.servers
def test_http_request_continues_the_callers_trace(otlp_receiver, make_telemetry, service_name):
    telemetry = make_telemetry(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint)
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 202, "body": "{}"})
    event = load_event("apigw_rest_post_events")
    event["headers"]["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    handler(event, LambdaContext())

    (server,) = otlp_receiver.store.wait_for(lambda found: len(found) >= 1, service_name)
    assert server.name == "POST /events"
    assert server.kind == SPAN_KIND_SERVER
    assert (server.trace_id, server.parent_span_id) == PRODUCERS[0]
    assert server.attributes["http.route"] == "/events"
    assert server.attributes["http.response.status_code"] == 202


@pytest.mark.servers
def test_gzip_compressed_requests_arrive_on_one_kept_alive_connection(otlp_receiver, make_telemetry, service_name):
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip is honoured by the layer's own sender, and three flushes share one
    connection (no handshake per invocation)."""
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        TELEMETRY_FLUSH_TIMEOUT_MS="5000",
    )
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 202, "body": "{}"})
    for _ in range(3):
        handler(load_event("apigw_rest_post_events"), LambdaContext())

    spans = otlp_receiver.store.wait_for(lambda found: len(found) >= 3, service_name)
    assert [span.name for span in spans] == ["POST /events"] * 3
    exporter = telemetry.tracing.otlp_exporter
    assert isinstance(exporter, OtlpHttpSpanExporter)
    assert (exporter.spans_sent, exporter.connections_opened) == (3, 1)


class _Collector(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next status of `statuses` and records what it was sent."""

    statuses: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, str]]] = []
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({**dict(self.headers.items()), "bytes": str(len(body))})
        type(self).bodies.append(body)
        self.send_response(type(self).statuses.pop(0))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def collector(*statuses: int) -> Iterator[int]:
    """A _Collector answering `statuses` in turn, on a free port (yielded) until the block ends."""
    _Collector.statuses[:] = list(statuses)
    _Collector.received.clear()
    _Collector.bodies.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_an_error_answer_fails_the_export_and_the_spans_go_with_the_next_one(make_telemetry, service_name):
    with collector(503, 200) as port:
        telemetry = make_telemetry(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
            OTEL_EXPORTER_OTLP_HEADERS="x-api-key=secret",
            TELEMETRY_FLUSH_TIMEOUT_MS="2000",
            TELEMETRY_BACKOFF_SECONDS="0",
        )
        handler = telemetry.http_handler(lambda event, context: {"statusCode": 202, "body": "{}"})
        handler(load_event("apigw_rest_post_events"), LambdaContext())
        assert telemetry.tracing.kept_spans == 1  # the 503: kept, not lost
        handler(load_event("apigw_rest_post_events"), LambdaContext())
        assert telemetry.tracing.kept_spans == 0
    first, second = _Collector.received
    assert first["Content-Type"] == "application/x-protobuf"
    assert first["x-api-key"] == "secret"
    assert int(second["bytes"]) > int(first["bytes"])  # the kept span went out with the new one


def test_credentials_in_the_endpoint_are_basic_auth_and_deflate_is_honoured(make_telemetry):
    """As the SDK's requests-based exporter did: user info in the URL becomes basic auth (and never reaches a log
    line), OTEL_EXPORTER_OTLP_COMPRESSION=deflate compresses each request."""
    with collector(200) as port:
        telemetry = make_telemetry(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://bus:p%40ss@127.0.0.1:{port}/v1/traces",
            OTEL_EXPORTER_OTLP_COMPRESSION="deflate",
            TELEMETRY_FLUSH_TIMEOUT_MS="2000",
        )
        handler = telemetry.http_handler(lambda event, context: {"statusCode": 202, "body": "{}"})
        handler(load_event("apigw_rest_post_events"), LambdaContext())
    (headers,) = _Collector.received
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"bus:p@ss").decode()
    assert headers["Content-Encoding"] == "deflate"
    request = ExportTraceServiceRequest.FromString(zlib.decompress(_Collector.bodies[0]))
    assert [span.name for span in request.resource_spans[0].scope_spans[0].spans] == ["POST /events"]
    assert "p%40ss" not in telemetry.tracing.otlp_exporter.endpoint
