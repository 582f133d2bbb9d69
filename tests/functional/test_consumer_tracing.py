"""KafkaConsumerFunction's traces: one consumer span per batch linked to each producer, record spans in the
producers' traces, and records whose producer sampled out get no span while their deliveries carry its trace on."""

from __future__ import annotations

import json
import uuid

import pytest
from samhost.kafka_events import lambda_event
from support.consumer import (
    batch_for,
    consumer_env,
    header_text,
    load_consumer,
    order,
    payment,
    produce_through_ingest,
    raw_record,
    subscriptions,
)
from support.context import LambdaContext

pytestmark = pytest.mark.servers


class TestTracing:
    def test_one_consumer_span_per_batch_linked_to_each_producer_and_record_spans_in_their_traces(
        self, kafka_bootstrap, otlp_receiver, aws, webhook, monkeypatch, service_name
    ):
        events = [order(), order(), payment()]
        trace_ids = [uuid.uuid4().hex for _ in events]
        for event, trace_id in zip(events, trace_ids, strict=True):
            produce_through_ingest(kafka_bootstrap, monkeypatch, [event], trace_id)
        topics = {e["id"]: "payments" if "payment" in e["type"] else "orders" for e in events}
        batch = batch_for(kafka_bootstrap, events, topics)
        producers = {
            tuple(header_text(record, "traceparent").split("-")[1:3])
            for records in batch["records"].values()
            for record in records
        }
        env = consumer_env(kafka_bootstrap, aws, subscriptions(aws, webhook.start(), "x"))
        env |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint}
        env["OTEL_SERVICE_NAME"] = service_name
        consumer = load_consumer(monkeypatch, env)
        assert consumer.handler(batch, LambdaContext(function_name="consumer")) == {"batchItemFailures": []}

        spans = otlp_receiver.store.wait_for(
            lambda found: sum(span.name.startswith("process com.example") for span in found) == 3, service_name
        )
        (batch_span,) = [span for span in spans if span.links and span.name.startswith("process ")]
        assert batch_span.kind == 5  # CONSUMER
        assert set(batch_span.links) == producers
        assert batch_span.attributes["messaging.batch.message_count"] == 3
        record_spans = [span for span in spans if span.name.startswith("process com.example")]
        assert {(span.trace_id, span.parent_span_id) for span in record_spans} == producers
        assert {span.trace_id for span in record_spans} == set(trace_ids), "each delivery sits in its request's trace"
        deliveries = [span for span in spans if span.name.startswith("deliver ")]
        record_span_ids = {(span.trace_id, span.span_id) for span in record_spans}
        for delivery in deliveries:  # a delivery's span is in its event's trace, or (a batch call) links to them
            assert delivery.trace_id in trace_ids or set(delivery.links) <= record_span_ids, delivery.name

    def test_records_whose_producer_sampled_out_get_no_span_and_their_deliveries_carry_its_trace_on(
        self, kafka_bootstrap, otlp_receiver, aws, webhook, monkeypatch, service_name
    ):
        """A record whose traceparent says its producer did not sample it starts no span (it would record
        nothing), yet its webhook delivery still carries the producer's trace, unsampled; a sampled record in
        the same batch keeps its span and its link."""
        sampled, unsampled = (uuid.uuid4().hex, uuid.uuid4().hex[:16]), (uuid.uuid4().hex, uuid.uuid4().hex[:16])
        records = [
            raw_record(
                "payments",
                offset,
                json.dumps(event).encode(),
                [
                    ("content-type", b"application/cloudevents+json"),
                    ("traceparent", f"00-{ids[0]}-{ids[1]}-{flags}".encode()),
                ],
            )
            for offset, (event, ids, flags) in enumerate([(payment(), unsampled, "00"), (payment(), sampled, "01")])
        ]
        env = consumer_env(kafka_bootstrap, aws, subscriptions(aws, webhook.start(), "x"))
        env |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint}
        env["OTEL_SERVICE_NAME"] = service_name
        consumer = load_consumer(monkeypatch, env)
        answer = consumer.handler(lambda_event(records, bootstrap=kafka_bootstrap), LambdaContext(function_name="c"))
        assert answer == {"batchItemFailures": []}

        carried = {
            delivery["headers"]["traceparent"].split("-")[1]: delivery["headers"]["traceparent"]
            for delivery in webhook.received
        }
        assert set(carried) == {sampled[0], unsampled[0]}, "both events were delivered, each in its own trace"
        assert carried[unsampled[0]].endswith("-00")
        assert carried[sampled[0]].endswith("-01")
        spans = otlp_receiver.store.wait_for(
            lambda found: any(s.name.startswith("deliver ") for s in found), service_name
        )
        assert {span.trace_id for span in spans if span.name.startswith("process com.example")} == {sampled[0]}
        assert unsampled[0] not in {span.trace_id for span in spans}, "nothing of the sampled-out trace is exported"
        (batch_span,) = [span for span in spans if span.name == "process payments"]
        assert set(batch_span.links) == {sampled}
