"""The conformance suite's harness: IngestFunction over HTTP to the real broker, KafkaConsumerFunction over
batches shaped as the event source mapping sends them to SQS (moto) and a real webhook (tests/functional/
test_conformance_*.py).

Every case names where its rule comes from: the CloudEvents specification (`spec.md`), its JSON event format
(`json-format.md`), its HTTP and Kafka protocol bindings, or a scenario of the CloudEvents conformance suite
(github.com/cloudevents/conformance, `features/*.feature`), whose inputs are reproduced as it states them.
CDC's cases (Debezium's keyless tables) are in test_cdc.py with the rest of CDC's harness.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from localbus.webhook import WebhookReceiver
from moto import mock_aws
from samhost.kafka_events import lambda_event, lambda_record
from support.consumer import raw_record
from support.context import LambdaContext
from support.functions import load_function
from support.moto import use_moto_credentials

REGION = "us-east-1"
STRUCTURED_TYPE, BATCH_TYPE = "application/cloudevents+json", "application/cloudevents-batch+json"
SECRET = "conformance-secret"
HELLO = b'{\n    "message": "Hello World!"\n}'
"""The conformance suite's data, as its HTTP scenarios send it."""


@dataclass
class Bus:
    """Ingest producing every event to one topic, and a consumer delivering every event to SQS and a webhook."""

    ingest: ModuleType
    consumer: ModuleType
    topic: str
    sqs: Any
    queue: str
    dlq: str
    webhook: WebhookReceiver
    reader: Consumer
    seen: dict[str, Message] = field(default_factory=dict)
    offsets: Iterator[int] = field(default_factory=lambda: iter(range(1_000, 10**9, 10)))

    def post(self, body: bytes | str, headers: dict[str, str]) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else body.encode()
        request = {
            "resource": "/events",
            "path": "/events",
            "httpMethod": "POST",
            "headers": headers,
            "requestContext": {"requestId": uuid.uuid4().hex},
            "body": base64.b64encode(raw).decode(),
            "isBase64Encoded": True,
        }
        response = self.ingest.handler(request, LambdaContext(function_name="ingest"))
        return response["statusCode"], json.loads(response["body"])

    def find(self, wanted: Callable[[dict[str, bytes]], bool], timeout_s: float = 10.0) -> Message:
        """The first record read from the topic whose headers `wanted` accepts."""
        return self._read(
            lambda: next((m for m in self.seen.values() if wanted(dict(m.headers() or []))), None), timeout_s
        )

    def on_kafka(self, event_id: str, timeout_s: float = 10.0) -> Message:
        """The record ingest produced for this event id, read from the broker."""
        return self._read(lambda: self.seen.get(event_id), timeout_s)

    def _read(self, found: Callable[[], Message | None], timeout_s: float) -> Message:
        if not self.reader.assignment():  # the topic exists once something has produced to it
            partitions = self.reader.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            self.reader.assign([TopicPartition(self.topic, number, OFFSET_BEGINNING) for number in partitions])
        for _ in range(int(timeout_s / 0.2)):
            if (message := found()) is not None:
                return message
            polled = self.reader.poll(0.2)
            if polled is not None and not polled.error():
                self.seen[(dict(polled.headers() or []).get("ce_id") or b"").decode()] = polled
        raise AssertionError(f"not on {self.topic} within {timeout_s} s")

    def deliver(self, records: list[dict[str, Any]], source: str = "aws:kafka") -> dict[str, Any]:
        """Run the consumer over the records; what reached SQS and the webhook, by event id, and the dead
        letters, by offset."""
        hooked = len(self.webhook.received)
        response = self.consumer.handler(lambda_event(records, source=source), LambdaContext(function_name="c"))
        assert response == {"batchItemFailures": []}
        queued = [json.loads(message["Body"]) for message in drain(self.sqs, self.queue)]
        hooks = [delivery["event"] for delivery in self.webhook.received[hooked:]]
        letters = [json.loads(message["Body"]) for message in drain(self.sqs, self.dlq)]
        delivered = {document["id"]: document for document in queued}
        assert delivered == {document["id"]: document for document in hooks}, "SQS and the webhook get the same"
        return {
            "delivered": delivered,
            "dead": {letter["offset"]: letter["reason"] for letter in letters},
        }

    def record(self, value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = None) -> dict:
        return raw_record(self.topic, next(self.offsets), value, headers, key=key)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        found.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return found


@contextlib.contextmanager
def conformance_bus(kafka_bootstrap: str) -> Iterator[Bus]:
    """Ingest and the consumer loaded in-process, one fresh topic, SQS in moto, a real webhook receiver."""
    topic = f"conformance-{uuid.uuid4().hex[:8]}"
    webhook = WebhookReceiver(SECRET)
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        use_moto_credentials(monkeypatch, REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue, dlq = sqs.create_queue(QueueName="all")["QueueUrl"], sqs.create_queue(QueueName="dlq")["QueueUrl"]
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "OTEL_TRACES_EXPORTER": "none"}
        ingest = load_function("ingest", "ingest", {**common, "TOPIC_ROUTES": json.dumps({"*": topic})}, monkeypatch)
        subscriptions = [
            {"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": queue}},
            {"name": "hook", "match": {"type": "*"}, "target": {"type": "webhook", "url": webhook.start()}},
        ]
        environment = {**common, "SUBSCRIPTIONS": json.dumps(subscriptions), "DLQ_URL": dlq, "WEBHOOK_SECRET": SECRET}
        consumer = load_function("consumer", "consumer", environment, monkeypatch)
        reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"conformance-{uuid.uuid4().hex}"})
        try:
            yield Bus(ingest, consumer, topic, sqs, queue, dlq, webhook, reader)
        finally:
            reader.close()
            webhook.stop()


def ce_headers(message: Message) -> dict[str, str]:
    """A record's attributes as it carries them: `ce_*` headers and content-type, decoded."""
    return {
        name: value.decode()
        for name, value in message.headers() or []
        if name.startswith("ce_") or name == "content-type"
    }


def unique(**attributes: Any) -> dict[str, Any]:
    """A structured event with a fresh id (the consumer rightly skips an id it has delivered)."""
    return {"specversion": "1.0", "id": uuid.uuid4().hex, **attributes}


def accepted_and_delivered(bus: Bus, body: bytes | str, headers: dict[str, str], event_id: str) -> tuple:
    status, answer = bus.post(body, headers)
    assert status == 202, answer
    message = bus.on_kafka(event_id)
    outcome = bus.deliver([lambda_record(message)])
    return message, outcome["delivered"][event_id]
