"""KafkaConsumerFunction under test: moto's SQS, SNS and DynamoDB set up as its targets, its dead-letter and
retry queues and its table; a webhook receiver; its environment; records shaped as the mapping sends them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from localbus.webhook import WebhookReceiver
from moto import mock_aws
from samhost.kafka_events import lambda_event, lambda_record
from support.context import LambdaContext
from support.functions import load_function
from support.kafka import header, read_topic
from support.moto import use_moto_credentials

REGION = "us-east-1"
SECRET = "webhook-secret"


@dataclass
class Aws:
    sqs: Any
    sns: Any
    target_queue: str
    topic_queue: str
    topic_arn: str
    dlq: str
    retries: str

    def messages(self, queue_url: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    use_moto_credentials(monkeypatch, REGION)
    with mock_aws():
        sqs, sns = boto3.client("sqs", region_name=REGION), boto3.client("sns", region_name=REGION)
        target_queue = sqs.create_queue(QueueName="fulfilment")["QueueUrl"]
        topic_queue = sqs.create_queue(QueueName="crm-mirror")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="bus-dlq")["QueueUrl"]
        retries = sqs.create_queue(QueueName="bus-retries")["QueueUrl"]
        topic_arn = sns.create_topic(Name="crm")["TopicArn"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=topic_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName="idempotency",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield Aws(sqs, sns, target_queue, topic_queue, topic_arn, dlq, retries)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(SECRET)
    yield receiver
    receiver.stop()


def consumer_env(bootstrap: str, aws: Aws, subs: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "consumer-test",
        "AWS_LAMBDA_FUNCTION_NAME": "consumer",
        "SUBSCRIPTIONS": subs,
        "DLQ_URL": aws.dlq,
        "RETRY_QUEUE_URL": aws.retries,
        "RETRY_BASE_DELAY_SECONDS": "0",
        "RETRY_MAX_DELAY_SECONDS": "1",
        "WEBHOOK_SECRET": SECRET,
        **extra,
    }


def load_consumer(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    return load_function("consumer", "consumer", env, monkeypatch)


def raw_record(
    topic: str,
    offset: int,
    value: bytes | str | None,
    headers: list[tuple[str, bytes]] = (),
    *,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """A record as the event source mapping sends it (written now, unless `timestamp_ms` says otherwise)."""
    encoded = value if isinstance(value, str) or value is None else base64.b64encode(value).decode()
    return {
        "topic": topic,
        "partition": 0,
        "offset": offset,
        "key": base64.b64encode(key).decode() if key is not None else None,
        "timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        "timestampType": "CREATE_TIME",
        "value": encoded,
        "headers": [{name: list(data)} for name, data in headers],
    }


# events and batches for tests/functional/test_consumer*.py


def subscriptions(aws: Aws, webhook_url: str, copy_topic: str) -> str:
    return json.dumps(
        [
            {
                "name": "fulfilment",
                "match": {"type": "com.example.order.*"},
                "target": {"type": "sqs", "url": aws.target_queue},
            },
            {
                "name": "order-copy",
                "match": {"type": "com.example.order.created"},
                "target": {"type": "kafka", "topic": copy_topic},
            },
            {
                "name": "billing-hook",
                "match": {"type": "com.example.payment.*", "source": "/shop/payments"},
                "target": {"type": "webhook", "url": webhook_url},
            },
            {
                "name": "crm",
                "match": {"type": "com.example.customer.updated"},
                "target": {"type": "sns", "arn": aws.topic_arn},
            },
        ]
    )


def produce_through_ingest(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, events: list[dict[str, Any]], trace_id: str
) -> None:
    ingest = load_function(
        "ingest", "ingest", {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OTEL_TRACES_EXPORTER": "none"}, monkeypatch
    )
    for event in events:
        request = {
            "resource": "/events",
            "path": "/events",
            "httpMethod": "POST",
            "headers": {
                "Content-Type": "application/cloudevents+json",
                "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
            },
            "requestContext": {"requestId": uuid.uuid4().hex},
            "body": json.dumps(event),
            "isBase64Encoded": False,
        }
        response = ingest.handler(request, LambdaContext(function_name="ingest"))
        assert response["statusCode"] == 202, response


def batch_for(
    bootstrap: str, events: list[dict[str, Any]], topics: dict[str, str], source: str = "aws:kafka"
) -> dict[str, Any]:
    records = []
    for event in events:
        (message,) = read_topic(
            bootstrap,
            topics[event["id"]],
            1,
            accept=lambda m, event_id=event["id"]: header(m, "ce_id") == event_id.encode(),
        )
        records.append(lambda_record(message))
    return lambda_event(records, source=source, bootstrap=bootstrap)


def order(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/shop/orders",
        "type": "com.example.order.created",
        "subject": f"o-{uuid.uuid4().hex[:6]}",
        "data": {"order_id": "o-1", "amount": 10, "currency": "EUR"},
        **extra,
    }


def payment(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/shop/payments",
        "type": "com.example.payment.captured",
        "subject": "o-1",
        "data": {"order_id": "o-1", "method": "card"},
        **extra,
    }


def customer() -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/crm",
        "type": "com.example.customer.updated",
        "data": {"tier": "gold"},
    }


def header_text(record: dict[str, Any], name: str) -> str:
    for item in record["headers"]:
        if name in item:
            return bytes(item[name]).decode()
    raise KeyError(name)
