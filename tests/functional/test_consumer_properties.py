"""Property: whatever bytes and headers the records carry, the consumer never raises, and every record ends
delivered, reported for retry, or dead-lettered (never dropped silently)."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_label
from hypothesis import strategies as st
from moto import mock_aws
from samhost.kafka_events import lambda_event
from support.context import LambdaContext
from support.functions import load_function
from support.moto import use_moto_credentials

pytestmark = pytest.mark.servers

REGION = "us-east-1"
# fresh offsets for every example: plain JSON records get ids from them, and a repeated id would rightly be
# skipped as a redelivery by the consumer's idempotency
OFFSETS = itertools.count(100, 100)
HEADER_NAMES = st.sampled_from(
    ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type", "traceparent", "other", "CE_ID"]
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"1.0",
            b"0.3",
            b"com.example.order.created",
            b"/s",
            b"application/json",
            b"application/cloudevents+json",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ]
    ),
    st.binary(max_size=12),
)
VALUES = st.one_of(
    st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(max_size=20),  # mostly not base64
    st.fixed_dictionaries(
        {
            "specversion": st.sampled_from(["1.0", "2"]),
            "id": st.text(max_size=5),
            "type": st.sampled_from(["com.example.order.created", "x"]),
            "source": st.just("/s"),
        }
    ).map(lambda document: base64.b64encode(json.dumps(document).encode()).decode()),
    st.integers().map(lambda n: base64.b64encode(str(n).encode()).decode()),
)
RECORDS = st.lists(
    st.tuples(VALUES, st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5), st.integers(-3, 3)),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def aws_and_consumer(kafka_bootstrap: str) -> Iterator[tuple[object, str, str, ModuleType]]:
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        use_moto_credentials(monkeypatch, REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        target, dlq = sqs.create_queue(QueueName="all")["QueueUrl"], sqs.create_queue(QueueName="dlq")["QueueUrl"]
        subscriptions = [{"name": "everything", "match": {"type": "*"}, "target": {"type": "sqs", "url": target}}]
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "consumer-properties",
            "SUBSCRIPTIONS": json.dumps(subscriptions),
            "DLQ_URL": dlq,
        }
        yield sqs, target, dlq, load_function("consumer", "consumer", env, monkeypatch)


def header_bytes(data: bytes, *, signed: bool) -> list[int]:
    """Header values as the event source mapping sends them; Java producers' bytes arrive signed."""
    return [value - 256 if signed and value > 127 else value for value in data]


def drain(sqs, queue_url: str) -> list[dict]:
    found: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        found.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS)
def test_every_record_is_delivered_retried_or_dead_lettered(aws_and_consumer, records):
    sqs, target, dlq, consumer = aws_and_consumer
    batch = lambda_event(
        [
            {
                "topic": "orders",
                "partition": 0,
                "offset": offset,
                "timestamp": 1_795_000_000_000,
                "timestampType": "CREATE_TIME",
                "value": value,
                "headers": [{name: header_bytes(data, signed=sign < 0)} for name, data in headers],
            }
            for offset, (value, headers, sign) in enumerate(records, start=next(OFFSETS))
        ]
    )
    labels = {"subscription": "everything", "target_type": "sqs", "outcome": "duplicate"}
    duplicates_before = consumer.telemetry.metrics.value("deliveries_total", **labels) or 0
    response = consumer.handler(batch, LambdaContext(function_name="consumer"))
    failed = {failure["itemIdentifier"]["offset"] for failure in response["batchItemFailures"]}
    # an event id seen in an earlier example is a redelivery: skipped, which counts as delivered
    duplicates = (consumer.telemetry.metrics.value("deliveries_total", **labels) or 0) - duplicates_before
    delivered = drain(sqs, target) + [{}] * int(duplicates)
    letters = {json.loads(message["Body"])["offset"] for message in drain(sqs, dlq)}
    event_label(f"{len(delivered)} delivered, {len(letters)} dead-lettered, {len(failed)} retried")
    assert failed.isdisjoint(letters)
    assert len(delivered) + len(letters) + len(failed) == len(records), (response, letters)
