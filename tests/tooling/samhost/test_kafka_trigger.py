"""The local Kafka trigger against the real broker (tansu): the mapping read from template.yaml polls a topic and
invokes KafkaConsumerFunction's real handler in-process (or a recording invoker for the failure paths), commits
only what is done, redelivers partial failures, bisects, dead-letters to a real SQS queue (moto), survives a
restart, and its command line stops cleanly on SIGTERM."""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from localbus.client import wait_until as localbus_wait_until
from moto import mock_aws
from samhost.kafka_trigger import (
    DeadLetter,
    InvokeResult,
    KafkaMapping,
    MappingPoller,
    PollerSettings,
    RetryPolicy,
    SqsDestination,
    kafka_mappings,
    start_pollers,
)
from support.context import LambdaContext
from support.functions import load_function
from support.moto import use_moto_credentials

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
# a short session: tansu's group join takes about half of it
FAST = PollerSettings(session_timeout_ms=2000, heartbeat_interval_ms=500, retry=RetryPolicy(base_delay_s=0.05))


# the broker


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"trigger-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(10)
    return topic


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for item in records:
        producer.produce(topic, **item)
    assert producer.flush(10) == 0


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()


wait_until = functools.partial(localbus_wait_until, timeout=15.0, every=0.05)


@contextmanager
def running(poller: MappingPoller) -> Iterator[MappingPoller]:
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        yield poller
    finally:
        poller.stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the poller stops when asked"


# AWS (moto) and the invokers


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_moto_credentials(monkeypatch, REGION)
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def messages(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        found.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
        )
    return found


@dataclass
class HandlerInvoker:
    """Runs a function's handler in this process as Lambda would for a RequestResponse invoke."""

    handler: Callable[[dict[str, Any], Any], Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, function_name: str, payload: bytes, *, timeout_s: float) -> InvokeResult:
        event = json.loads(payload)
        self.events.append(event)
        try:
            answer = self.handler(event, LambdaContext(function_name=function_name, timeout_s=timeout_s))
        except Exception as error:
            body = {"errorMessage": str(error), "errorType": type(error).__name__}
            return InvokeResult(200, json.dumps(body).encode(), function_error="Unhandled")
        return InvokeResult(200, json.dumps(answer).encode())


def offsets(event: dict[str, Any]) -> dict[str, list[int]]:
    return {key: [r["offset"] for r in records] for key, records in event["records"].items()}


def values(event: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(r["value"]) for records in event["records"].values() for r in records]


def recording(answer: Callable[[dict[str, Any]], Any]) -> HandlerInvoker:
    return HandlerInvoker(lambda event, context: answer(event))


def mapping_for(bootstrap: str, topic: str, window: str = "0.2", **overrides: Any) -> KafkaMapping:
    """The consumer's first mapping as template.yaml declares it, for this topic and broker (a short batching
    window: records produced before the poller starts come in the first fetch, one partition at a time)."""
    (mapping,) = kafka_mappings(
        TEMPLATE,
        {
            "Stage": "local",
            "KafkaTopics": topic,
            "KafkaBootstrapServers": bootstrap,
            "KafkaConsumerGroupId": f"g-{uuid.uuid4().hex[:8]}",
            "KafkaBatchWindowSeconds": window,
        },
        {"KafkaConsumerFunction": "consumer", "DeadLetterQueue.Arn": f"arn:aws:sqs:{REGION}:123456789012:dlq"},
    )
    return replace(mapping, **overrides)


def cloud_event(event_type: str, **data: Any) -> dict[str, Any]:
    """A record as ingest produces it: CloudEvents' Kafka binary mode."""
    event_id = uuid.uuid4().hex
    return {
        "key": event_id.encode(),
        "value": json.dumps(data).encode(),
        "headers": [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_source", b"/shop/orders"),
            ("ce_type", event_type.encode()),
            ("content-type", b"application/json"),
        ],
    }


def load_consumer(monkeypatch: pytest.MonkeyPatch, bootstrap: str, target_url: str, dlq_url: str) -> ModuleType:
    subscriptions = [
        {"name": "fulfilment", "match": {"type": "com.example.order.*"}, "target": {"type": "sqs", "url": target_url}}
    ]
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "consumer-trigger-test",
        "AWS_LAMBDA_FUNCTION_NAME": "consumer",
        "SUBSCRIPTIONS": json.dumps(subscriptions),
        "DLQ_URL": dlq_url,
    }
    return load_function("consumer", "consumer", environ, monkeypatch)


# the tests


def test_the_real_consumer_function_gets_the_records_and_the_offsets_are_committed(kafka_bootstrap, sqs, monkeypatch):
    topic = create_topic(kafka_bootstrap, partitions=2)
    target_url, _ = queue(sqs, "fulfilment")
    dlq_url, dlq_arn = queue(sqs, "bus-dlq")
    events = [cloud_event("com.example.order.created", n=n) for n in range(3)]
    produce(
        kafka_bootstrap,
        topic,
        [{**events[0], "partition": 0}, {**events[1], "partition": 1}, {**events[2], "partition": 0}],
    )
    consumer = load_consumer(monkeypatch, kafka_bootstrap, target_url, dlq_url)
    invoker = HandlerInvoker(consumer.handler)
    mapping = mapping_for(kafka_bootstrap, topic, window="0.5", on_failure_destination=dlq_arn)

    with running(MappingPoller(mapping, invoker, SqsDestination(dlq_arn), settings=FAST)):
        delivered = wait_until(lambda: len(found := messages(sqs, target_url)) == 3 and found, what="3 deliveries")
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 2) == {0: 2, 1: 1}, what="commits")

    assert sorted(json.loads(m["Body"])["id"] for m in delivered) == sorted(e["key"].decode() for e in events)
    (event,) = invoker.events
    assert (event["eventSource"], event["bootstrapServers"]) == ("SelfManagedKafka", kafka_bootstrap)
    assert offsets(event) == {f"{topic}-0": [0, 1], f"{topic}-1": [0]}
    first = event["records"][f"{topic}-0"][0]
    assert base64.b64decode(first["key"]) == events[0]["key"]
    assert {"ce_type": list(b"com.example.order.created")} in first["headers"]
    assert first["timestampType"] == "CREATE_TIME"
    assert messages(sqs, dlq_url) == []


def test_a_partial_failure_redelivers_its_partition_from_the_failed_record_while_others_move_on(kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, [{"value": f"p0-{n}".encode(), "partition": 0} for n in range(3)])
    produce(kafka_bootstrap, topic, [{"value": f"p1-{n}".encode(), "partition": 1} for n in range(2)])
    failed_once: list[int] = []

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        if not failed_once:
            failed_once.append(1)
            return {"batchItemFailures": [{"itemIdentifier": {"partition": f"{topic}-0", "offset": 1}}]}
        return {"batchItemFailures": []}

    invoker = recording(answer)
    mapping = mapping_for(kafka_bootstrap, topic, window="0.5")
    with running(MappingPoller(mapping, invoker, None, settings=FAST)):
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 2) == {0: 3, 1: 2}, what="commits")

    first, second = invoker.events
    assert offsets(first) == {f"{topic}-0": [0, 1, 2], f"{topic}-1": [0, 1]}
    assert offsets(second) == {f"{topic}-0": [1, 2]}, "the failed record and the rest of its partition, nothing else"


def test_bisection_isolates_a_poison_record_which_reaches_the_dead_letter_queue(kafka_bootstrap, sqs):
    topic = create_topic(kafka_bootstrap)
    dlq_url, dlq_arn = queue(sqs, "bus-dlq")
    produce(
        kafka_bootstrap,
        topic,
        [{"value": v, "key": b"k", "headers": [("h", b"\x00\x01")]} for v in (b"a", b"b", b"poison", b"c")],
    )

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        if b"poison" in values(event):
            raise RuntimeError("cannot process")
        return {"batchItemFailures": []}

    invoker = recording(answer)
    mapping = mapping_for(kafka_bootstrap, topic, max_retry_attempts=2, on_failure_destination=dlq_arn)
    with running(MappingPoller(mapping, invoker, SqsDestination(dlq_arn), settings=FAST)):
        (letter,) = wait_until(lambda: messages(sqs, dlq_url), what="a dead letter")
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 1) == {0: 4}, what="commit past it")

    body = json.loads(letter["Body"])
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["requestContext"]["approximateInvokeCount"] == 3
    assert body["requestContext"]["functionArn"] == mapping.function_arn
    assert body["responseContext"]["functionError"] == "Unhandled"
    assert body["KafkaBatchInfo"]["recordsInfo"] == {
        f"{topic}-0": body["KafkaBatchInfo"]["recordsInfo"][f"{topic}-0"]
        | {"firstRecordOffset": "2", "lastRecordOffset": "2"}
    }
    (dead,) = body["payload"]["records"][f"{topic}-0"]
    assert (dead["offset"], base64.b64decode(dead["value"]), dead["headers"]) == (2, b"poison", [{"h": [0, 1]}])
    poison_alone = [event for event in invoker.events if offsets(event) == {f"{topic}-0": [2]}]
    assert len(poison_alone) == 3, "the first try and two retries"
    assert [offsets(event) for event in invoker.events][:3] == [
        {f"{topic}-0": [0, 1, 2, 3]},
        {f"{topic}-0": [0, 1]},
        {f"{topic}-0": [2, 3]},
    ]


def test_records_older_than_the_maximum_age_are_dead_lettered_without_an_invoke(kafka_bootstrap, sqs):
    topic = create_topic(kafka_bootstrap)
    dlq_url, dlq_arn = queue(sqs, "bus-dlq")
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    produce(kafka_bootstrap, topic, [{"value": b"old", "timestamp": ten_minutes_ago}, {"value": b"new"}])
    invoker = recording(lambda event: None)
    mapping = mapping_for(kafka_bootstrap, topic, max_record_age_s=60, on_failure_destination=dlq_arn)

    with running(MappingPoller(mapping, invoker, SqsDestination(dlq_arn), settings=FAST)):
        (letter,) = wait_until(lambda: messages(sqs, dlq_url), what="a dead letter")
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 1) == {0: 2}, what="commits")

    body = json.loads(letter["Body"])
    assert body["requestContext"]["condition"] == "RecordAgeExceeded"
    assert body["requestContext"]["approximateInvokeCount"] == 0
    assert [values(event) for event in invoker.events] == [[b"new"]]


class CountingDestination:
    """The real SQS destination, counting what was tried and what went through."""

    def __init__(self, inner: SqsDestination) -> None:
        self.inner = inner
        self.attempts = 0
        self.sent = 0

    def send(self, letter: DeadLetter) -> None:
        self.attempts += 1
        self.inner.send(letter)
        self.sent += 1


def test_nothing_is_committed_while_the_dead_letter_queue_is_missing_and_a_restart_redelivers(kafka_bootstrap, sqs):
    topic = create_topic(kafka_bootstrap)
    produce(kafka_bootstrap, topic, [{"value": b"poison"}])
    dlq_arn = f"arn:aws:sqs:{REGION}:123456789012:late-dlq"  # the queue does not exist yet
    invoker = recording(lambda event: (_ for _ in ()).throw(RuntimeError("cannot process")))
    mapping = mapping_for(kafka_bootstrap, topic, max_retry_attempts=0, on_failure_destination=dlq_arn)

    destination = CountingDestination(SqsDestination(dlq_arn))
    with running(MappingPoller(mapping, invoker, destination, settings=FAST)):
        wait_until(lambda: destination.attempts >= 2, what="failed sends to the missing queue")
    assert destination.sent == 0
    assert committed(kafka_bootstrap, mapping.group_id, topic, 1) == {}, "a record that is not done is never committed"
    assert len(invoker.events) == 1, "its retries are exhausted: only the destination is tried again"

    dlq_url, _ = queue(sqs, "late-dlq")
    with running(MappingPoller(mapping, invoker, SqsDestination(dlq_arn), settings=FAST)):
        (letter,) = wait_until(lambda: messages(sqs, dlq_url), what="a dead letter")
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 1) == {0: 1}, what="commit")
    assert len(invoker.events) == 2, "the new poller read the record again (its retry count starts over)"
    assert json.loads(letter["Body"])["payload"]["records"][f"{topic}-0"][0]["offset"] == 0


def test_the_command_line_polls_the_template_mappings_and_stops_on_sigterm(kafka_bootstrap, tmp_path):
    topic = create_topic(kafka_bootstrap)
    produce(kafka_bootstrap, topic, [{"value": b"x"}])
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "trigger.json"
    config.write_text(
        json.dumps(
            {
                "template": str(TEMPLATE),
                "samconfig": str(ROOT / "samconfig.toml"),
                "parameters": {
                    "KafkaTopics": topic,
                    "KafkaBootstrapServers": kafka_bootstrap,
                    "KafkaConsumerGroupId": group,
                },
                "physical": {"KafkaConsumerFunction": "consumer", "DeadLetterQueue.Arn": f"arn:aws:sqs:{REGION}:0:dlq"},
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            }
        )
    )
    environ = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: every invoke fails before the function runs
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "samhost.kafka_trigger", "--config", str(config)],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("invoke failed" in line for line in lines), what="an invoke attempt")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    log = "".join(lines)
    assert f"KafkaConsumerSelfManagedMapping: polling {topic} (group {group}-{topic}) for consumer" in log
    assert f"{topic}-0@0 (1 records): invoke failed" in log
    assert "SIGTERM: stopping" in log
    assert log.rstrip().endswith("stopped")
    assert committed(kafka_bootstrap, f"{group}-{topic}", topic, 1) == {}, "the record was never done"


def test_each_partition_gets_a_poller_of_its_own_and_their_batches_are_invoked_side_by_side(kafka_bootstrap):
    topic = create_topic(kafka_bootstrap, partitions=2)
    lock = threading.Lock()
    in_flight: list[int] = []
    overlapped: list[set[int]] = []  # the partitions of invocations that ran at the same time

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        partitions = {int(key.rsplit("-", 1)[1]) for key in event["records"]}
        with lock:
            in_flight.extend(partitions)
            if len(in_flight) > len(partitions):
                overlapped.append(set(in_flight))
        time.sleep(0.3)
        with lock:
            for partition in partitions:
                in_flight.remove(partition)
        return {"batchItemFailures": []}

    invoker = recording(answer)
    mapping = mapping_for(kafka_bootstrap, topic, window="0.1")
    stop = threading.Event()
    threads = start_pollers([mapping], invoker, lambda _: None, settings=FAST, stop=stop)
    try:
        assert len(threads) == 2, "one poller per partition"
        sent = 0

        def side_by_side() -> bool:
            nonlocal sent
            produce(kafka_bootstrap, topic, [{"value": f"r{sent}".encode(), "partition": p} for p in (0, 1)])
            sent += 1
            return bool(overlapped)

        wait_until(side_by_side, what="two partitions' batches invoked at once", timeout=30, every=0.2)
        wait_until(lambda: committed(kafka_bootstrap, mapping.group_id, topic, 2) == {0: sent, 1: sent}, what="commits")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert overlapped[0] == {0, 1}
    delivered = sorted(value for event in invoker.events for value in values(event))
    assert delivered == sorted(f"r{n}".encode() for n in range(sent) for _ in (0, 1)), "each record once"

    # started again (a redeploy): each poller goes on from its partitions' committed offsets, at once
    stop = threading.Event()
    threads = start_pollers([mapping], invoker, lambda _: None, settings=FAST, stop=stop)
    try:
        produce(kafka_bootstrap, topic, [{"value": b"after", "partition": p} for p in (0, 1)])
        wait_until(lambda: sum(values(e).count(b"after") for e in invoker.events) == 2, what="records after a restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    again = sorted(value for event in invoker.events for value in values(event))
    assert again == sorted([*delivered, b"after", b"after"]), "nothing committed was delivered again"
