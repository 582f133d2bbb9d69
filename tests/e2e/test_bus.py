"""The bus deployed on the local stack, end to end: every request goes through API Gateway, DynamoDB Streams or
the broker, every function runs in the host executor's sandboxes, and every check reads what a user would read."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from hoststack.traces import ReceivedSpan
from localbus.client import LocalBus, wait_until
from support import pushgateway as gateway

pytestmark = [pytest.mark.e2e, pytest.mark.localstack, pytest.mark.sam]

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP span kinds


def cloud_event(event_type: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e2e-{uuid.uuid4()}", "type": event_type, "source": source, "data": data}


def deliveries_of(bus: LocalBus, event_id: str) -> list[dict[str, Any]]:
    return [d for d in bus.webhook_deliveries() if d["event"].get("id") == event_id]


def test_the_deploy_created_the_bus(bus: LocalBus) -> None:
    cloudformation = bus.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=bus.deployment["stack_name"])["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    for logical_id in ("IngestFunction", "KafkaConsumerFunction", "CdcFunction", "MaintenanceFunction", "EventBusApi"):
        assert bus.resource(logical_id)
    configuration = bus.client("lambda").get_function_configuration(FunctionName=bus.resource("IngestFunction"))
    assert configuration["Runtime"] == "python3.13"
    assert configuration["Layers"][0]["Arn"] == bus.deployment["outputs"]["ObservabilityLayerArn"]
    # Kafka mappings are off on the local stage: the Kafka trigger takes their place
    mappings = bus.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert all(":kafka:" not in mapping.get("EventSourceArn", "") for mapping in mappings)
    assert bus.http("GET", "/health").body == {"status": "ok"}
    assert bus.http("POST", "/events", cloud_event("a.b", "/c", {}), headers={"x-api-key": "wrong"}).status == 403
    # API Gateway's own answers are problem documents: SAM puts them in the API's definition; LocalStack neither
    # imports nor renders them (it answers its default JSON body), AWS does
    processed = cloudformation.get_template(StackName=bus.deployment["stack_name"], TemplateStage="Processed")
    template = processed["TemplateBody"]
    template = json.loads(template) if isinstance(template, str) else template
    responses = template["Resources"]["EventBusApi"]["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    for family in ("DEFAULT_4XX", "DEFAULT_5XX"):
        headers = responses[family]["responseParameters"]
        assert headers["gatewayresponse.header.Content-Type"] == "'application/problem+json'"
        assert headers["gatewayresponse.header.X-Content-Type-Options"] == "'nosniff'"
        assert "urn:eventbus:problem:gateway-" in responses[family]["responseTemplates"]["application/json"]


def test_an_http_event_reaches_sqs_and_the_webhook_once_in_one_trace(bus: LocalBus) -> None:
    order = {"order_id": "o-e2e", "amount": 9.5, "currency": "EUR"}
    event = cloud_event("com.example.order.created", "/shop/orders", order)
    answer = bus.http("POST", "/events", event)
    assert answer.status == 202, answer.body
    assert answer.body["accepted"] == [event["id"]]

    delivered = wait_until(lambda: deliveries_of(bus, event["id"]), "the webhook delivery")
    messages = wait_until(
        lambda: [m for m in bus.queue_messages(bus.fulfilment_queue) if json.loads(m["Body"])["id"] == event["id"]],
        "the SQS delivery",
    )
    assert len(delivered) == 1
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"])["data"] == event["data"]

    trace_id = delivered[0]["headers"]["traceparent"].split("-")[1]
    ingest, consumer = bus.service("IngestFunction"), bus.service("KafkaConsumerFunction")

    def whole_trace() -> list[ReceivedSpan] | None:
        spans = [span for span in bus.traces.read() if span.trace_id == trace_id]
        names = {span.name for span in spans}
        wanted = {"POST /events", "produce orders", "deliver orders-to-fulfilment", "deliver orders-webhook"}
        return spans if wanted <= names and any(span.kind == CONSUMER for span in spans) else None

    spans = wait_until(whole_trace, "the event's whole trace")
    by_name = {span.name: span for span in spans}
    api, produce = by_name["POST /events"], by_name["produce orders"]
    (consume,) = [span for span in spans if span.kind == CONSUMER]
    assert (api.kind, produce.kind) == (SERVER, PRODUCER)
    assert api.resource["service.name"] == produce.resource["service.name"] == ingest
    assert consume.resource["service.name"] == consumer
    assert produce.parent_span_id == api.span_id
    assert consume.parent_span_id == produce.span_id
    assert by_name["deliver orders-webhook"].parent_span_id == consume.span_id
    assert by_name["deliver orders-to-fulfilment"].parent_span_id == consume.span_id
    # still exactly once now that the whole path has been traced (a late duplicate would show here)
    assert len(deliveries_of(bus, event["id"])) == 1
    assert not [m for m in bus.queue_messages(bus.fulfilment_queue) if json.loads(m["Body"])["id"] == event["id"]]


def test_a_table_write_flows_through_cdc_to_a_subscriber_with_cdc_metrics(bus: LocalBus) -> None:
    table = bus.deployment["outputs"]["OrdersTableName"]
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    bus.client("dynamodb").put_item(
        TableName=table, Item={"order_id": {"S": order_id}, "status": {"S": "new"}, "total": {"N": "12.5"}}
    )

    def change_delivered() -> list[dict[str, Any]]:
        changes = [d for d in bus.webhook_deliveries() if d["event"]["type"].startswith("cdc.")]
        return [d for d in changes if (d["event"].get("data") or {}).get("key") == {"order_id": order_id}]

    (delivery,) = wait_until(change_delivered, "the change event at the webhook", timeout=60)
    change = delivery["event"]
    assert change["data"]["after"] == {"order_id": order_id, "status": "new", "total": 12.5}
    assert change["data"]["operation"] == "created"

    cdc = bus.service("CdcFunction")
    assert cdc == "event-bus-cdc", "a stable service name, not the generated function name"

    def cdc_metrics() -> tuple[float, float] | None:
        events = bus.prometheus(f'sum(cdc_events_total{{job="{cdc}"}})')
        lag = bus.prometheus(f'sum(cdc_lag_seconds_count{{job="{cdc}"}})')
        if events and lag and float(events[0]["value"][1]) >= 1 and float(lag[0]["value"][1]) >= 1:
            return float(events[0]["value"][1]), float(lag[0]["value"][1])
        return None

    changes, lags = wait_until(cdc_metrics, "cdc_events_total and cdc_lag_seconds in Prometheus", timeout=60)
    assert changes >= 1
    assert lags >= 1


def test_a_poison_record_ends_in_the_dlq_with_its_reason(bus: LocalBus) -> None:
    poison = f"not a cloud event {uuid.uuid4()}".encode()
    producer = Producer({"bootstrap.servers": bus.state.address("kafka")})
    producer.produce("orders", key=b"poison", value=poison)
    assert producer.flush(10) == 0

    def dead_letter() -> list[dict[str, Any]]:
        return [
            message
            for message in bus.queue_messages(bus.dead_letter_queue)
            if base64.b64decode(json.loads(message["Body"]).get("value_base64", "")) == poison
        ]

    (letter,) = wait_until(dead_letter, "the poison record in the DLQ", timeout=60)
    body = json.loads(letter["Body"])
    assert body["topic"] == "orders"
    assert letter["MessageAttributes"]["reason"]["StringValue"] == body["reason"]
    assert body["reason"]


def test_a_failed_delivery_is_retried_through_the_retry_queue_not_the_partition(bus: LocalBus) -> None:
    bus.fail_webhook(1, status=503)
    event = cloud_event("com.example.payment.captured", "/shop/payments", {"order_id": "o-retry"})
    assert bus.http("POST", "/events", event).status == 202

    def settled() -> list[dict[str, Any]] | None:
        found = deliveries_of(bus, event["id"])
        return found if any(d["status"] == 200 for d in found) else None

    attempts = wait_until(settled, "the retried delivery", timeout=60)
    assert [d["status"] for d in attempts] == [503, 200]
    # parked in the retry queue and delivered by the function's SQS event (LocalStack's own mapping): the Kafka
    # trigger was never asked to rewind the partition, so nothing behind the event waited for it
    trigger_log = (bus.state_dir_path / "logs" / "kafka-trigger.log").read_text()
    assert "partial:" not in trigger_log
    first, retried = (attempt["headers"]["traceparent"].split("-")[1] for attempt in attempts)
    assert retried == first, "the retry continues the event's trace (the ticket carries its context)"


def test_an_unhandled_error_is_captured_with_an_event_id_in_cloudwatch_logs(bus: LocalBus) -> None:
    answer = bus.http("GET", "/api/error", query={"type": "value"})
    assert answer.status == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    event_id = answer.body["event_id"]

    def logged() -> list[dict[str, Any]]:
        lines = bus.function_log_lines("IngestFunction")
        return [json.loads(line) for line in lines if event_id in line and line.startswith("{")]

    (record,) = wait_until(logged, "the error's log line in CloudWatch Logs", timeout=30)
    assert record["event_id"] == event_id
    assert record["trace_id"]
    assert record["error_type"] == "ValueError"


def test_the_functions_flush_after_the_response_through_the_layers_extension(bus: LocalBus) -> None:
    assert bus.http("GET", "/health").status == 200
    ready = "EXTENSION\tName: eventbus-telemetry\tState: Ready\tEvents: [INVOKE]"
    lines = wait_until(
        lambda: [line for line in bus.function_log_lines("IngestFunction") if line == ready],
        "the layer's extension in IngestFunction's CloudWatch logs",
    )
    assert lines


def test_a_reaped_environment_pushes_its_final_values_and_leaves_its_group(bus: LocalBus) -> None:
    """LocalStack stops a function's environments when its configuration changes: the executor stops the sandbox,
    the runtime gets SIGTERM (the layer's extension is registered) and the layer pushes its final values. The group
    stays (a delete would lose what Prometheus has not scraped yet); MaintenanceFunction deletes it once stale."""
    function, job = bus.resource("MaintenanceFunction"), bus.service("MaintenanceFunction")
    functions = bus.client("lambda")
    assert functions.invoke(FunctionName=function, Payload=b'{"source": "aws.events"}')["StatusCode"] == 200

    def push_time() -> float | None:
        for group in gateway.groups(bus.state.address("pushgateway")):
            if group["labels"].get("job") == job:
                return float(group["push_time_seconds"]["metrics"][0]["value"])
        return None

    before = wait_until(push_time, "the function's Pushgateway group")
    variables = functions.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    functions.update_function_configuration(FunctionName=function, Environment={"Variables": {**variables, "E2E": "1"}})
    wait_until(lambda: (push_time() or 0) > before, "the final push at shutdown", timeout=20)
