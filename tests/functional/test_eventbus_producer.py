"""The shared producer against the real broker: delivery reports, CloudEvents binary headers, the
producer span's traceparent on each record, and a bounded failure when the broker is down."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from cloudevents.core.v1.event import CloudEvent
from lambda_event_bus.bus.contract import to_kafka_record
from lambda_event_bus.bus.kafka_settings import KafkaSettings
from lambda_event_bus.bus.producer import NOT_ACKNOWLEDGED, EventProducer
from lambda_event_bus.telemetry import Telemetry, TelemetrySettings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from samhost.processes import free_port
from support.kafka import read_topic

pytestmark = pytest.mark.servers


@pytest.fixture
def telemetry_with_spans():
    exporter = InMemorySpanExporter()
    settings = TelemetrySettings.from_env({"OTEL_SERVICE_NAME": "producer-test", "OTEL_TRACES_EXPORTER": "otlp"})
    telemetry = Telemetry(settings, otlp_exporter=exporter)
    yield telemetry, exporter
    telemetry.tracing.shutdown()


def test_records_are_delivered_with_cloudevents_headers_and_traceparent(kafka_bootstrap, telemetry_with_spans):
    telemetry, exporter = telemetry_with_spans
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), telemetry)
    events = [
        CloudEvent({"id": f"e-{n}", "source": "/shop", "type": "order.created", "specversion": "1.0"}, {"n": n})
        for n in range(3)
    ]
    deliveries = producer.send([to_kafka_record(event, topic, key="order-7") for event in events], timeout_s=10)
    assert all(delivery.ok for delivery in deliveries)
    assert [delivery.offset for delivery in deliveries] == sorted(delivery.offset for delivery in deliveries)

    messages = read_topic(kafka_bootstrap, topic, 3)
    assert [message.key() for message in messages] == [b"order-7"] * 3
    headers = dict(messages[0].headers())
    assert (headers["ce_id"], headers["ce_type"], headers["ce_source"]) == (b"e-0", b"order.created", b"/shop")
    assert messages[0].value() == b'{"n":0}' or messages[0].value() == b'{"n": 0}'
    telemetry.flush()
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    trace_id = format(spans[0].context.trace_id, "032x")
    span_id = format(spans[0].context.span_id, "016x")
    assert headers["traceparent"].decode().startswith(f"00-{trace_id}-{span_id}-")
    assert (
        telemetry.metrics.value("events_produced_total", event_type="order.created", topic=topic, source="/shop") == 3
    )
    assert telemetry.metrics.value("kafka_connection_status", broker=kafka_bootstrap) == 1


def test_an_unreachable_broker_fails_every_record_inside_the_deadline(telemetry_with_spans):
    telemetry, _ = telemetry_with_spans
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    producer = EventProducer(settings, telemetry, delivery_timeout_s=5)
    event = CloudEvent({"id": "e-1", "source": "/s", "type": "t", "specversion": "1.0"}, None)
    started = time.monotonic()
    deliveries = producer.send([to_kafka_record(event, "orders", key="k")] * 2, timeout_s=0.5)
    assert time.monotonic() - started < 1.0
    assert [delivery.ok for delivery in deliveries] == [False, False]
    assert all(delivery.error for delivery in deliveries)
    assert NOT_ACKNOWLEDGED in deliveries[0].error or "purge" in deliveries[0].error.lower()
    labels = {"operation": "produce", "topic": "orders", "status": "error"}
    assert telemetry.metrics.value("kafka_operations_total", **labels) == 2


def test_the_producer_has_its_id_before_its_first_record(kafka_bootstrap, telemetry_with_spans):
    """The idempotent producer's id comes only over a connection to a broker (not the bootstrap address), and
    librdkafka retries getting it on a 500 ms timer. A producer that opened the leader's connection only for its
    first record made an environment's first request wait 0.5-1 s (CdcFunction's first call: ~900 ms against
    tansu; ~30 ms since). Now the connections open at init: librdkafka's first statistics report, 250 ms after
    the producer was made and before that timer, already shows a broker up and the id assigned."""
    telemetry, _ = telemetry_with_spans
    stats: list[dict] = []
    producer = EventProducer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        telemetry,
        extra_config={"statistics.interval.ms": 250, "stats_cb": lambda text: stats.append(json.loads(text))},
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not stats:
        producer.send([], timeout_s=0.05)  # no record: serves librdkafka's callbacks (the statistics) only
    first = stats[0]
    states = {broker["nodeid"]: broker["state"] for broker in first["brokers"].values()}
    assert any(node >= 0 and state == "UP" for node, state in states.items()), states
    assert first["eos"]["idemp_state"] == "Assigned"
    assert first["txmsgs"] == 0
