"""Every sample event in tests/events/ is accepted by the function it is for, loaded in-process the way Lambda
loads it: the same files feed `python -m samhost.invoke` and `sam local invoke -e`, so a sample that drifts
from what its function decodes fails here first."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws
from support.context import LambdaContext
from support.events import EVENTS_DIR, load_event
from support.functions import load_function
from support.kafka import header, read_topic
from support.moto import use_moto_credentials

pytestmark = pytest.mark.servers

REGION = "us-east-1"
KAFKA_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"  # the traceparent headers of the Kafka samples
CHANGE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the traceparent of the API and CDC samples

# samples checked by the tests below, by function
SAMPLES = {
    "kafka_self_managed_orders": "KafkaConsumerFunction",
    "kafka_msk_orders": "KafkaConsumerFunction",
    "dynamodb_stream_orders": "CdcFunction",
    "kinesis_debezium_orders": "CdcFunction",
    "scheduled_event": "MaintenanceFunction",
    "apigw_rest_post_order_created": "IngestFunction",
    "apigw_rest_get_health": "IngestFunction",
}
# not a function's input as they stand: templates other tests fill in
TEMPLATES = {
    "apigw_rest_post_events": "test_ingest.py's request template (no Content-Type; data without amount, currency)",
    "apigw_http_api_post_item": "an HTTP API (v2) payload; EventBusApi is a REST API",
}


@dataclass
class Aws:
    sqs: Any
    target_queue: str
    dlq: str

    def bodies(self, queue_url: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """(body, message attributes) of every message on the queue."""
        found: list[tuple[dict[str, Any], dict[str, str]]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", []):
            found.extend(
                (
                    json.loads(message["Body"]),
                    {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()},
                )
                for message in batch
            )
        return found


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    use_moto_credentials(monkeypatch, REGION)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        yield Aws(
            sqs, sqs.create_queue(QueueName="fulfilment")["QueueUrl"], sqs.create_queue(QueueName="dlq")["QueueUrl"]
        )


def telemetry_env(name: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": f"{name}-samples",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_DEFAULT_REGION": REGION,
    }


def invoke(module: ModuleType, sample: str, name: str) -> Any:
    result = module.handler(load_event(sample), LambdaContext(function_name=name))
    json.dumps(result)  # what Lambda returns must serialise
    return result


def test_every_sample_is_checked_here() -> None:
    names = {path.stem for path in EVENTS_DIR.glob("*.json")}
    assert names == set(SAMPLES) | set(TEMPLATES), "a new sample needs a test below (or a reason in TEMPLATES)"


class TestKafkaConsumerFunction:
    @pytest.mark.parametrize(
        ("sample", "event_ids"),
        [
            ("kafka_self_managed_orders", ["o-1001-created", "o-1002-created"]),  # structured mode
            ("kafka_msk_orders", ["o-1003-created"]),  # binary mode, as IngestFunction produces
        ],
    )
    def test_the_batch_is_delivered_to_the_matching_subscription_in_the_records_trace(
        self, sample, event_ids, aws, monkeypatch
    ):
        subscriptions = [
            {
                "name": "fulfilment",
                "match": {"type": "com.example.order.*"},
                "target": {"type": "sqs", "url": aws.target_queue},
            }
        ]
        env = {**telemetry_env("consumer"), "SUBSCRIPTIONS": json.dumps(subscriptions), "DLQ_URL": aws.dlq}
        consumer = load_function("consumer", "consumer", env, monkeypatch)

        assert invoke(consumer, sample, "consumer") == {"batchItemFailures": []}

        delivered = aws.bodies(aws.target_queue)
        assert [body["id"] for body, _ in delivered] == event_ids
        assert all(body["type"] == "com.example.order.created" for body, _ in delivered)
        assert all(body["data"]["currency"] == "EUR" for body, _ in delivered)
        assert all(attributes["traceparent"].split("-")[1] == KAFKA_TRACE_ID for _, attributes in delivered), (
            "each delivery continues its record's trace"
        )
        assert aws.bodies(aws.dlq) == []


class TestCdcFunction:
    @pytest.mark.parametrize(
        ("sample", "key", "source"),
        [
            ("dynamodb_stream_orders", b'{"order_id":"o-1001"}', "/cdc/dynamodb/orders"),
            ("kinesis_debezium_orders", b'{"order_id":"o-2001"}', "/cdc/shop-postgres/shop/orders"),
        ],
    )
    def test_insert_update_delete_become_three_ordered_change_events(
        self, sample, key, source, kafka_bootstrap, aws, monkeypatch
    ):
        topic = f"cdc-samples-{uuid.uuid4().hex[:8]}"
        env = {**telemetry_env("cdc"), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CDC_TOPIC": topic}
        cdc = load_function("cdc", "cdc", {**env, "DLQ_URL": aws.dlq}, monkeypatch)

        assert invoke(cdc, sample, "cdc") == {"batchItemFailures": []}

        published = read_topic(kafka_bootstrap, topic, 3)
        assert [header(record, "ce_type") for record in published] == [
            b"cdc.orders.created",
            b"cdc.orders.updated",
            b"cdc.orders.deleted",
        ]
        assert {record.key() for record in published} == {key}, "one row: one key, so one partition, in order"
        assert {header(record, "ce_source") for record in published} == {source.encode()}
        created, updated, deleted = (json.loads(record.value()) for record in published)
        assert created["before"] is None
        assert (updated["before"]["status"], updated["after"]["status"]) == ("new", "paid")
        assert "status" in updated["changed"]
        assert deleted["after"] is None
        assert header(published[1], "traceparent").decode().split("-")[1] == CHANGE_TRACE_ID, (
            "the update carries its writer's traceparent column"
        )
        assert aws.bodies(aws.dlq) == []


class TestMaintenanceFunction:
    def test_the_schedule_runs_a_maintenance_pass(self, monkeypatch):
        for name in ("KAFKA_CONNECT_URL", "MSK_CONNECT_CONNECTOR_ARNS", "PUSHGATEWAY_URL"):
            monkeypatch.delenv(name, raising=False)
        maintenance = load_function("maintenance", "maintenance", telemetry_env("maintenance"), monkeypatch)
        assert invoke(maintenance, "scheduled_event", "maintenance") == {
            "connectors": {},
            "deleted_groups": [],
            "kept_groups": 0,
            "errors": [],
        }


class TestIngestFunction:
    @pytest.fixture
    def ingest(self, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
        env = {**telemetry_env("ingest"), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
        return load_function("ingest", "ingest", env, monkeypatch)

    def test_the_posted_order_is_accepted_onto_the_orders_topic(self, ingest, kafka_bootstrap):
        response = invoke(ingest, "apigw_rest_post_order_created", "ingest")

        assert response["statusCode"] == 202, response["body"]
        body = json.loads(response["body"])
        assert body["accepted"] == ["o-1001-created"]
        assert body["results"][0]["topic"] == "orders"
        (record,) = read_topic(
            kafka_bootstrap, "orders", 1, accept=lambda message: header(message, "ce_id") == b"o-1001-created"
        )
        assert record.key() == b"o-1001"
        assert header(record, "traceparent").decode().split("-")[1] == CHANGE_TRACE_ID

    def test_the_deep_health_check_reaches_the_broker(self, ingest):
        response = invoke(ingest, "apigw_rest_get_health", "ingest")

        assert response["statusCode"] == 200, response["body"]
        body = json.loads(response["body"])
        assert body["status"] == "ok"
        assert body["kafka"]["brokers"] >= 1
