"""Spans reach a real OTLP receiver (rotel) over HTTP/protobuf and gRPC with the right resource,
parent/child relations and batch links."""

from __future__ import annotations

import pytest
from localbus.context import LambdaContext
from observability.tracing import links_for
from opentelemetry.trace import SpanKind
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
