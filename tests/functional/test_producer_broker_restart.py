"""The idempotent producer when the broker forgets it: tansu (memory storage) killed and started again on the same
port no longer knows the producer's id, and librdkafka's answer to UNKNOWN_PRODUCER_ID with a gap in its sequence
is a fatal error. confluent-kafka raises that error out of flush() (a SystemError when a delivery report follows
it) and never hands it to error_cb; every later produce() fails with `Local: Fatal error`. The producer must be
replaced, nothing may surface as an exception, no record may be called refused for good, and the deep health
check must say the producer cannot produce."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from hoststack import servers
from localbus.client import wait_until
from samhost.processes import port_of
from support.functions import load_function

pytestmark = pytest.mark.servers


class Broker:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.server = servers.start_tansu(log_dir)
        self.port = port_of(self.server.url)

    @property
    def bootstrap(self) -> str:
        return self.server.url

    def kill(self) -> None:
        self.server.process.kill()  # SIGKILL: what it acknowledged in memory is gone

    def start_again(self) -> None:
        self.server = servers.start_tansu(self.log_dir, port=self.port)

    def create(self, topic: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    yield broker
    broker.server.stop()


@pytest.fixture
def topic(broker: Broker) -> str:
    name = f"orders-{uuid.uuid4().hex[:6]}"
    broker.create(name)
    return name


@pytest.fixture
def producer(broker: Broker, make_telemetry):
    from lambda_event_bus.bus.kafka_settings import KafkaSettings
    from lambda_event_bus.bus.producer import EventProducer

    return EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), make_telemetry(), delivery_timeout_s=5)


def record(topic: str):
    from lambda_event_bus.bus.records import KafkaRecord

    return KafkaRecord(topic=topic, value=b"{}", key=b"k", event_id=uuid.uuid4().hex, event_type="t", source="/s")


def forget_the_producer(broker: Broker, topic: str, producer) -> None:
    """Kill the broker, leave a gap in the producer's sequence (records purged while it is down), start it again."""
    assert all(delivery.ok for delivery in producer.send([record(topic)] * 2, timeout_s=5))
    broker.kill()
    assert not any(delivery.ok for delivery in producer.send([record(topic)] * 2, timeout_s=0.3))
    broker.start_again()
    broker.create(topic)
    raw = producer._producer

    def back() -> bool:
        try:
            return bool(raw.list_topics(timeout=0.5).brokers)
        except KafkaException:  # every connection still down: librdkafka answers at once instead of waiting
            return False

    wait_until(back, "the client back on the broker")


def test_a_producer_the_broker_forgot_is_replaced_and_nothing_raises(broker, topic, producer):
    forget_the_producer(broker, topic, producer)
    first = producer.send([record(topic)] * 2, timeout_s=2)  # meets UNKNOWN_PRODUCER_ID: fatal
    assert all(not delivery.ok and not delivery.permanent for delivery in first), first
    second = producer.send([record(topic)] * 2, timeout_s=2)
    assert [delivery.outcome for delivery in second] == ["delivered", "delivered"], second


def test_the_deep_health_check_sees_a_producer_that_cannot_produce(broker, topic, producer):
    from lambda_event_bus.bus.producer import ProducerFailedError

    forget_the_producer(broker, topic, producer)
    raw = producer._producer
    raw.produce(topic, b"{}")  # as if a send had met the fatal error since the last call: nothing served it yet
    time.sleep(0.5)
    assert raw.list_topics(timeout=1).brokers, "metadata still answers: it cannot tell"
    with pytest.raises(ProducerFailedError, match="fatal"):
        producer.ping(1.0)
    assert producer.ping(1.0) == 1, "replaced: the next check and send work"
    assert producer.send([record(topic)], timeout_s=2)[0].ok


def test_ingest_recovers_from_a_broker_restart_without_a_500_and_health_tells_the_truth(broker, monkeypatch):
    from functional.test_ingest import api_request, base_env, call, cloud_event

    ingest = load_function("ingest", "ingest", base_env(broker.bootstrap, PRODUCE_TIMEOUT_MS="1500"), monkeypatch)
    broker.create("orders")

    def post() -> int:
        body = json.dumps(cloud_event())
        return call(ingest, api_request(body=body, headers={"Content-Type": "application/cloudevents+json"}))[0]

    assert post() == 202
    broker.kill()
    assert post() == 503
    broker.start_again()
    broker.create("orders")
    statuses = [post() for _ in range(4)]
    assert 500 not in statuses, statuses
    assert statuses[-2:] == [202, 202], f"the producer was replaced: {statuses}"
    status, _, body = call(ingest, api_request(method="GET", resource="/health", query={"deep": "1"}))
    assert (status, body["kafka"]["brokers"]) == (200, 1)
