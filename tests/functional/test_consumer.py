"""KafkaConsumerFunction in-process: events produced by IngestFunction on the real broker (tansu) are read
back, shaped exactly as the event source mapping sends them, and delivered to SQS and SNS (moto), a real
local webhook receiver that checks the signature, and another Kafka topic; traces continue the producing
requests'; poison records are dead-lettered; a target that is down gets exactly its deliveries parked for a
retry (tests/functional/test_delivery_retries.py follows them through the retry function)."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from samhost.kafka_events import lambda_event
from samhost.processes import free_port
from support.consumer import (
    batch_for,
    consumer_env,
    customer,
    load_consumer,
    order,
    payment,
    produce_through_ingest,
    raw_record,
    subscriptions,
)
from support.context import LambdaContext
from support.kafka import header, read_topic
from support.sqs import receive

pytestmark = pytest.mark.servers


class TestDelivery:
    def test_ingested_events_reach_sqs_sns_a_signed_webhook_and_kafka(self, kafka_bootstrap, aws, webhook, monkeypatch):
        trace_id = uuid.uuid4().hex
        events = [order(), payment(), customer()]
        produce_through_ingest(kafka_bootstrap, monkeypatch, events, trace_id)
        topics = {events[0]["id"]: "orders", events[1]["id"]: "payments", events[2]["id"]: "customers"}
        batch = batch_for(kafka_bootstrap, events, topics)
        copy_topic = f"orders-copy-{uuid.uuid4().hex[:6]}"
        consumer = load_consumer(
            monkeypatch, consumer_env(kafka_bootstrap, aws, subscriptions(aws, webhook.start(), copy_topic))
        )

        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}

        (queued,) = aws.messages(aws.target_queue)
        body = json.loads(queued["Body"])
        assert (body["id"], body["type"], body["data"]) == (events[0]["id"], events[0]["type"], events[0]["data"])
        assert queued["MessageAttributes"]["traceparent"]["StringValue"].split("-")[1] == trace_id
        (hooked,) = webhook.received
        assert hooked["event"]["id"] == events[1]["id"]
        assert hooked["headers"]["traceparent"].split("-")[1] == trace_id, "the delivery continues the request's trace"
        assert webhook.rejected == 0
        (mirrored,) = aws.messages(aws.topic_queue)
        assert json.loads(mirrored["Body"])["id"] == events[2]["id"]
        (copied,) = read_topic(kafka_bootstrap, copy_topic, 1)
        assert header(copied, "ce_id") == events[0]["id"].encode()
        assert header(copied, "traceparent").decode().split("-")[1] == trace_id
        assert aws.messages(aws.dlq) == []

        metrics = consumer.telemetry.metrics
        labels = {"event_type": "com.example.order.created", "topic": "orders", "source": "/shop/orders"}
        assert metrics.value("events_consumed_total", **labels) == 1
        assert metrics.value("kafka_operations_total", operation="consume", topic="orders", status="success") == 1
        assert metrics.value("kafka_consumer_lag_seconds", topic="orders") == 1
        assert (
            metrics.value("deliveries_total", subscription="billing-hook", target_type="webhook", outcome="delivered")
            == 1
        )

    def test_self_managed_kafka_events_are_handled_the_same(self, kafka_bootstrap, aws, webhook, monkeypatch):
        events = [payment()]
        produce_through_ingest(kafka_bootstrap, monkeypatch, events, uuid.uuid4().hex)
        batch = batch_for(kafka_bootstrap, events, {events[0]["id"]: "payments"}, source="SelfManagedKafka")
        assert "eventSourceArn" not in batch
        consumer = load_consumer(
            monkeypatch, consumer_env(kafka_bootstrap, aws, subscriptions(aws, webhook.start(), "x"))
        )
        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        assert [hook["event"]["id"] for hook in webhook.received] == [events[0]["id"]]


class TestFailures:
    def test_poison_records_are_dead_lettered_with_their_reason_and_not_retried(
        self, kafka_bootstrap, aws, monkeypatch
    ):
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, "[]", MAX_RECORD_BYTES="2048"))
        records = [
            raw_record("orders", 10, "!!not base64!!"),
            raw_record("orders", 11, b"{not json"),
            raw_record(
                "orders", 12, b'{"x": 1}', [("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"/s")]
            ),
            raw_record("orders", 13, b"x" * 5000),
        ]
        response = consumer.handler(lambda_event(records), LambdaContext(function_name="consumer"))
        assert response == {"batchItemFailures": []}
        letters = {json.loads(m["Body"])["offset"]: json.loads(m["Body"]) for m in aws.messages(aws.dlq)}
        assert sorted(letters) == [10, 11, 12, 13]
        assert "not valid base64" in letters[10]["reason"]
        assert "neither a CloudEvent nor JSON" in letters[11]["reason"]
        assert "invalid CloudEvent" in letters[12]["reason"]
        assert "the limit is 2048" in letters[13]["reason"]
        assert base64.b64decode(letters[11]["value_base64"]) == b"{not json", "the original bytes travel along"
        assert all(len(letter["error_event_id"]) == 32 and letter["topic"] == "orders" for letter in letters.values())
        metrics = consumer.telemetry.metrics
        unknown = {"event_type": "unknown", "source": "unknown", "error_type": "PoisonRecordError"}
        assert metrics.value("event_processing_errors_total", **unknown) == 4, "poison counts as a processing error"
        assert metrics.value("errors_captured_total", component="consumer", error_type="PoisonRecordError") == 4

    def test_a_target_that_is_down_gets_exactly_its_deliveries_parked(self, kafka_bootstrap, aws, monkeypatch):
        events = [payment(), order(), payment()]
        produce_through_ingest(kafka_bootstrap, monkeypatch, events, uuid.uuid4().hex)
        topics = {e["id"]: "payments" if "payment" in e["type"] else "orders" for e in events}
        batch = batch_for(kafka_bootstrap, events, topics)
        down = f"http://127.0.0.1:{free_port()}/hook"
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, subscriptions(aws, down, "x")))

        response = consumer.handler(batch, LambdaContext(function_name="consumer"))

        assert response == {"batchItemFailures": []}, "nothing is left to the event source mapping"
        assert [json.loads(m["Body"])["id"] for m in aws.messages(aws.target_queue)] == [events[1]["id"]]
        tickets = [json.loads(m["Body"]) for m in receive(aws.sqs, aws.retries, wait_s=3)]
        tickets += [json.loads(m["Body"]) for m in receive(aws.sqs, aws.retries, wait_s=1)]
        assert sorted(t["subscription"] for t in tickets) == ["billing-hook", "billing-hook"]
        first, second = sorted(tickets, key=lambda ticket: ticket["seq"])  # both payments are of order o-1
        assert (first["attempts"], second["attempts"]) == (1, 0)
        assert "ConnectionRefusedError" in first["last_error"]
        assert second["last_error"].startswith("behind "), "its key's earlier event failed: it waits behind it"
        assert aws.messages(aws.dlq) == []

    def test_an_unexpected_failure_is_parked_and_blocks_no_other_subscription(self, kafka_bootstrap, aws, monkeypatch):
        subs = json.dumps(
            [
                {"name": "to-kafka", "match": {"type": "a"}, "target": {"type": "kafka", "topic": "elsewhere"}},
                {"name": "to-sqs", "match": {"type": "b"}, "target": {"type": "sqs", "url": aws.target_queue}},
            ]
        )
        # the Kafka target's producer cannot be built (SCRAM without credentials): not a DeliveryError
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, subs, KAFKA_SECURITY="scram"))
        records = [
            raw_record(
                "orders", 1, json.dumps({"specversion": "1.0", "id": "a1", "type": "a", "source": "/s"}).encode()
            ),
            raw_record(
                "orders", 2, json.dumps({"specversion": "1.0", "id": "b1", "type": "b", "source": "/s"}).encode()
            ),
        ]
        response = consumer.handler(lambda_event(records), LambdaContext(function_name="consumer"))
        assert response == {"batchItemFailures": []}
        assert [json.loads(m["Body"])["id"] for m in aws.messages(aws.target_queue)] == ["b1"]
        (ticket,) = [json.loads(m["Body"]) for m in receive(aws.sqs, aws.retries, wait_s=3)]
        assert ticket["subscription"] == "to-kafka"
        assert ticket["last_error"].startswith("unexpected ")

    def test_what_sqs_cannot_take_goes_back_to_the_mapping_with_the_rest_of_its_partition(
        self, kafka_bootstrap, aws, monkeypatch
    ):
        down = f"http://127.0.0.1:{free_port()}/hook"
        subs = json.dumps([{"name": "down", "match": {"type": "*"}, "target": {"type": "webhook", "url": down}}])
        missing = aws.dlq.rsplit("/", 1)[0] + "/no-such-queue"
        consumer = load_consumer(
            monkeypatch, consumer_env(kafka_bootstrap, aws, subs, RETRY_QUEUE_URL=missing, DLQ_URL=missing)
        )
        records = [
            raw_record(
                "orders",
                n,
                json.dumps({"specversion": "1.0", "id": f"u{n}", "type": "x", "source": "/s"}).encode(),
                key=f"k{n}".encode(),
            )
            for n in (1, 2, 3)
        ]
        response = consumer.handler(lambda_event(records), LambdaContext(function_name="consumer"))
        assert sorted(f["itemIdentifier"]["offset"] for f in response["batchItemFailures"]) == [1, 2, 3]

    def test_without_a_retry_queue_a_failed_delivery_is_dead_lettered_with_why(self, kafka_bootstrap, aws, monkeypatch):
        down = f"http://127.0.0.1:{free_port()}/hook"
        subs = json.dumps([{"name": "down", "match": {"type": "*"}, "target": {"type": "webhook", "url": down}}])
        env = consumer_env(kafka_bootstrap, aws, subs)
        del env["RETRY_QUEUE_URL"]
        consumer = load_consumer(monkeypatch, env)
        event = {"specversion": "1.0", "id": "e-no-queue", "type": "x", "source": "/s"}
        response = consumer.handler(
            lambda_event([raw_record("orders", 1, json.dumps(event).encode())]), LambdaContext(function_name="c")
        )
        assert response == {"batchItemFailures": []}
        (letter,) = [json.loads(m["Body"]) for m in aws.messages(aws.dlq)]
        assert letter["subscription"] == "down"
        assert "no retry queue (RETRY_QUEUE_URL) is configured" in letter["reason"]
        assert "ConnectionRefusedError" in letter["last_error"]

    def test_an_event_older_than_its_retry_window_is_dead_lettered_not_parked(self, kafka_bootstrap, aws, monkeypatch):
        down = f"http://127.0.0.1:{free_port()}/hook"
        hook = {
            "name": "down",
            "match": {"type": "*"},
            "target": {"type": "webhook", "url": down},
            "retry_policy": {"maximum_event_age_seconds": 60},
        }
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([hook])))
        event = {"specversion": "1.0", "id": "e-old", "type": "x", "source": "/s"}
        old = int((time.time() - 120) * 1000)
        consumer.handler(
            lambda_event([raw_record("orders", 1, json.dumps(event).encode(), timestamp_ms=old)]),
            LambdaContext(function_name="c"),
        )
        (letter,) = [json.loads(m["Body"]) for m in aws.messages(aws.dlq)]
        assert "older than its retry window (60 s)" in letter["reason"]
        assert receive(aws.sqs, aws.retries) == []

    def test_a_refusing_webhook_is_dead_lettered_at_once(self, kafka_bootstrap, aws, webhook, monkeypatch):
        webhook.status = 422
        events = [payment()]
        produce_through_ingest(kafka_bootstrap, monkeypatch, events, uuid.uuid4().hex)
        batch = batch_for(kafka_bootstrap, events, {events[0]["id"]: "payments"})
        consumer = load_consumer(
            monkeypatch, consumer_env(kafka_bootstrap, aws, subscriptions(aws, webhook.start(), "x"))
        )
        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        (letter,) = [json.loads(m["Body"]) for m in aws.messages(aws.dlq)]
        assert "refused" in letter["reason"]
        assert "HTTP 422" in letter["reason"]

    def test_a_slow_target_stops_the_batch_before_the_lambda_timeout_and_parks_the_rest(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        webhook.delay_s = 1.0
        slow = {
            "name": "slow",
            "match": {"type": "*"},
            "target": {"type": "webhook", "url": webhook.start()},
            "max_concurrency": 1,
        }
        consumer = load_consumer(
            monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([slow]), WEBHOOK_TIMEOUT_MS="1500")
        )
        records = [
            raw_record(
                f"t{n}", n, json.dumps({"specversion": "1.0", "id": f"s{n}", "type": "x", "source": "/s"}).encode()
            )
            for n in range(5)
        ]
        started = time.monotonic()
        response = consumer.handler(lambda_event(records), LambdaContext(function_name="consumer", timeout_s=6.0))
        assert time.monotonic() - started < 6.0
        assert response == {"batchItemFailures": []}
        parked = [json.loads(m["Body"]) for m in receive(aws.sqs, aws.retries, wait_s=1)]
        assert 0 < len(parked) < 5
        assert all(ticket["attempts"] == 0 for ticket in parked), "not attempted: no attempt counted"
        assert len(webhook.delivered) + len(parked) == 5, "every delivery is done or parked"

    def test_a_record_kafka_refuses_goes_to_the_dlq_at_once(self, kafka_bootstrap, aws, monkeypatch):
        subs = json.dumps([{"name": "copy", "match": {"type": "*"}, "target": {"type": "kafka", "topic": "copies"}}])
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, subs, MAX_RECORD_BYTES="3000000"))
        big = json.dumps({"blob": "x" * 1_500_000}).encode()  # over the producer's 1 MB message.max.bytes
        response = consumer.handler(
            lambda_event([raw_record("orders", 5, big)]), LambdaContext(function_name="consumer")
        )
        assert response == {"batchItemFailures": []}
        (letter,) = [json.loads(m["Body"]) for m in aws.messages(aws.dlq)]
        assert "refused" in letter["reason"]
        assert letter["subscription"] == "copy"


class TestIdempotency:
    def test_without_a_table_redeliveries_to_the_same_environment_are_skipped(self, kafka_bootstrap, aws, monkeypatch):
        down = f"http://127.0.0.1:{free_port()}/hook"
        subs = json.dumps(
            [
                {"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": aws.target_queue}},
                {"name": "down", "match": {"type": "*"}, "target": {"type": "webhook", "url": down}},
            ]
        )
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, subs))
        batch = lambda_event(
            [
                raw_record(
                    "orders", 1, json.dumps({"specversion": "1.0", "id": "e1", "type": "x", "source": "/s"}).encode()
                )
            ]
        )
        for _ in range(2):  # the mapping delivers the batch twice (e.g. the first invocation timed out)
            assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        assert len(aws.messages(aws.target_queue)) == 1

    def test_a_dead_lettered_delivery_is_not_dead_lettered_again(self, kafka_bootstrap, aws, webhook, monkeypatch):
        webhook.status = 422
        subs = json.dumps(
            [{"name": "refuses", "match": {"type": "*"}, "target": {"type": "webhook", "url": webhook.start()}}]
        )
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, subs, IDEMPOTENCY_TABLE="idempotency"))
        batch = lambda_event(
            [
                raw_record(
                    "orders", 1, json.dumps({"specversion": "1.0", "id": "e2", "type": "x", "source": "/s"}).encode()
                )
            ]
        )
        for _ in range(3):
            assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        assert len(aws.messages(aws.dlq)) == 1
        assert len(webhook.received) == 1

    def test_a_store_that_does_not_answer_parks_the_delivery_with_why(self, kafka_bootstrap, aws, monkeypatch):
        subs = json.dumps(
            [{"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": aws.target_queue}}]
        )
        env = consumer_env(kafka_bootstrap, aws, subs, IDEMPOTENCY_TABLE="no-such-table")
        consumer = load_consumer(monkeypatch, env)
        event = {"specversion": "1.0", "id": "e-store", "type": "x", "source": "/s"}
        batch = lambda_event([raw_record("orders", 1, json.dumps(event).encode())])

        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        (ticket,) = [json.loads(m["Body"]) for m in receive(aws.sqs, aws.retries, wait_s=3)]
        assert ticket["subscription"] == "queue"
        assert ticket["last_error"] in (
            "parked: the lane store did not answer: ResourceNotFoundException",
            "deferred: the idempotency store did not answer; nothing was done",
        )
        assert aws.messages(aws.target_queue) == [], "nothing is delivered blind"

    def test_events_are_counted_once_and_redeliveries_apart(self, kafka_bootstrap, aws, monkeypatch):
        down = f"http://127.0.0.1:{free_port()}/hook"
        queue = {"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": aws.target_queue}}
        flaky = {"name": "flaky", "match": {"type": "flaky"}, "target": {"type": "webhook", "url": down}}
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([queue, flaky])))
        steady = {"specversion": "1.0", "id": "e-steady", "type": "steady", "source": "/s"}
        retried = {"specversion": "1.0", "id": "e-retried", "type": "flaky", "source": "/s"}
        batch = lambda_event(
            [
                raw_record("orders", 1, json.dumps(steady).encode()),
                raw_record("events", 1, json.dumps(retried).encode()),
            ]
        )
        metrics = consumer.telemetry.metrics

        def consumed(event_type: str, topic: str) -> float:
            return metrics.value("events_consumed_total", event_type=event_type, topic=topic, source="/s") or 0

        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        assert (consumed("steady", "orders"), consumed("flaky", "events")) == (1, 1), "settled: delivered or parked"
        hook = {"subscription": "flaky", "target_type": "webhook"}
        assert metrics.value("deliveries_total", outcome="parked", **hook) == 1
        consumer.handler(batch, LambdaContext(function_name="consumer"))  # the mapping delivers the batch again
        assert consumed("steady", "orders") == 1, "a redelivery is not a second event"
        labels = {"event_type": "steady", "topic": "orders", "source": "/s"}
        assert metrics.value("events_redelivered_total", **labels) == 1

    def test_a_redelivered_batch_delivers_nothing_twice(self, kafka_bootstrap, aws, webhook, monkeypatch):
        events = [order(), payment()]
        produce_through_ingest(kafka_bootstrap, monkeypatch, events, uuid.uuid4().hex)
        topics = {events[0]["id"]: "orders", events[1]["id"]: "payments"}
        batch = batch_for(kafka_bootstrap, events, topics)
        env = consumer_env(
            kafka_bootstrap,
            aws,
            subscriptions(aws, webhook.start(), f"c-{uuid.uuid4().hex[:6]}"),
            IDEMPOTENCY_TABLE="idempotency",
        )
        consumer = load_consumer(monkeypatch, env)
        for _ in range(2):
            assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}
        assert len(aws.messages(aws.target_queue)) == 1
        assert len(webhook.received) == 1
        metrics = consumer.telemetry.metrics
        assert metrics.value("deliveries_total", subscription="fulfilment", target_type="sqs", outcome="duplicate") == 1
