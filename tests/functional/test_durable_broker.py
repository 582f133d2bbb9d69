"""The local stack's broker on durable storage: tansu over SeaweedFS's S3 API keeps its topics (with their partition
counts), the records it acknowledged and the committed offsets when it is killed and started again, and when its
object store is too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hoststack import servers
from samhost.processes import port_of

pytestmark = pytest.mark.servers


class DurableBroker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = servers.start_object_store(root, root / "data")
        self.broker = servers.start_tansu(root, object_store=self.store.url)
        self.port = port_of(self.broker.url)

    @property
    def bootstrap(self) -> str:
        return self.broker.url

    def kill_broker(self) -> None:
        self.broker.process.kill()

    def kill_store(self) -> None:
        self.store.process.kill()

    def start_store_again(self) -> None:
        self.store = servers.start_object_store(self.root, self.store.data_dir, ports=self.store.ports)

    def start_broker_again(self) -> None:
        self.broker = servers.start_tansu(self.root, port=self.port, object_store=self.store.url)

    def stop(self) -> None:
        self.broker.stop()
        self.store.stop()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableBroker]:
    broker = DurableBroker(tmp_path)
    yield broker
    broker.stop()


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for n in range(count):
        producer.produce(topic, key=str(n).encode(), value=f"record {n}".encode(), partition=n % 3)
    assert producer.flush(15) == 0, "every record acknowledged"


def read(bootstrap: str, topic: str, group: str, want: int, timeout: float = 20.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def partitions(bootstrap: str, topic: str) -> int:
    return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions)


def test_topics_records_and_offsets_survive_the_broker_and_its_store_being_killed(durable):
    topic, group = f"orders-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": durable.bootstrap})  # kept until the answer is in
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)
    produce(durable.bootstrap, topic, 30)
    assert len(read(durable.bootstrap, topic, group, 20)) >= 20  # committed part of the way

    durable.kill_broker()
    durable.kill_store()
    durable.start_store_again()
    durable.start_broker_again()

    assert partitions(durable.bootstrap, topic) == 3, "the topic's layout is kept, not auto-created anew"
    everything = read(durable.bootstrap, topic, f"new-{group}", 30)
    assert sorted(everything) == sorted(f"record {n}".encode() for n in range(30)), "every acknowledged record"
    consumer = Consumer({"bootstrap.servers": durable.bootstrap, "group.id": group})
    committed = consumer.committed([TopicPartition(topic, n) for n in range(3)], timeout=10)
    consumer.close()
    assert sum(max(0, tp.offset) for tp in committed) >= 20, "the group's committed offsets are kept"
