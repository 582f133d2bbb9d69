"""The Kafka side of the trigger: consumers of each mapping's own group (one per partition of its topic), batches
gathered as Lambda's pollers gather them, offsets committed only past records that are done, partitions rewound
to what is not."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from samhost.kafka_trigger.batches import MAX_PAYLOAD_BYTES, Attempts, Position, Record, settle, spans
from samhost.kafka_trigger.delivery import Delivery, FailureDestination, Invoker, RetryPolicy
from samhost.kafka_trigger.mappings import KafkaMapping

logger = logging.getLogger("samhost.kafka_trigger")

EVENT_OVERHEAD_BYTES = 1024  # the event's envelope around its records, with room to spare
MAX_POLLERS_PER_MAPPING = 8  # a local stack on a few cores gains nothing from more


@dataclass(frozen=True)
class PollerSettings:
    # tansu's group join takes about session.timeout.ms / 2 (LOCAL_STACK.md): keep it short
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # an invoke with its retries may outlast librdkafka's default 5 min between polls; the group must not
    # drop this consumer meanwhile (heartbeats go on in librdkafka's own thread)
    max_poll_interval_ms: int = 3_600_000
    poll_timeout_s: float = 0.25
    invoke_timeout_margin_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    consumer_config: Mapping[str, str | int] = field(default_factory=dict)  # extra librdkafka settings


class MappingPoller:
    """Polls one mapping's topic and invokes its function until `stop` is set."""

    def __init__(
        self,
        mapping: KafkaMapping,
        invoker: Invoker,
        destination: FailureDestination | None,
        *,
        settings: PollerSettings | None = None,
        stop: threading.Event | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.mapping = mapping
        # None: subscribe (the group assigns the topic's partitions); else these partitions, assigned directly
        # (several pollers of one mapping: tansu's rebalancing of a group with several members can take
        # minutes, so the trigger splits the partitions itself and only commits through the group)
        self.partitions = tuple(partitions) if partitions is not None else None
        self.settings = settings or PollerSettings()
        self.stop = stop or threading.Event()
        self.attempts = Attempts()
        self.delivery = Delivery(
            mapping,
            invoker,
            destination,
            attempts=self.attempts,
            stop=self.stop,
            retry=self.settings.retry,
            invoke_timeout_margin_s=self.settings.invoke_timeout_margin_s,
            now_ms=now_ms,
        )

    def consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.mapping.bootstrap_servers,
            "group.id": self.mapping.group_id,
            "client.id": f"kafka-trigger-{self.mapping.logical_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.mapping.auto_offset_reset,
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": self.settings.heartbeat_interval_ms,
            "max.poll.interval.ms": self.settings.max_poll_interval_ms,
            **self.settings.consumer_config,
        }

    def run(self) -> None:
        """Consume until stopped; an unexpected error closes the consumer and starts a new one, which reads again
        from the committed offsets (nothing undone is skipped)."""
        failures = 0
        while not self.stop.is_set():
            try:
                self._consume()
            except Exception:
                failures += 1
                logger.exception(
                    "%s: the poller failed; restarting from the committed offsets", self.mapping.logical_id
                )
                self.stop.wait(self.settings.retry.delay(failures) or 1.0)

    def _consume(self) -> None:
        consumer = Consumer(self.consumer_config(), logger=logging.getLogger("samhost.kafka_trigger.librdkafka"))
        if self.partitions is None:
            consumer.subscribe([self.mapping.topic])
        else:  # from each partition's committed offset (else auto.offset.reset)
            consumer.assign([TopicPartition(self.mapping.topic, partition) for partition in self.partitions])
        logger.info(
            "%s: polling %s%s (group %s) for %s",
            self.mapping.logical_id,
            self.mapping.topic,
            "" if self.partitions is None else f" partitions {list(self.partitions)}",
            self.mapping.group_id,
            self.mapping.function_name,
        )
        try:
            while not self.stop.is_set():
                records = self._gather(consumer)
                if not records:
                    continue
                report = self.delivery.deliver(records)
                self._settle(consumer, records, report.done)
                if report.redeliver_after_s > 0:
                    self.stop.wait(report.redeliver_after_s)
        finally:
            # no commit here: what is not done stays uncommitted and is read again after a restart
            consumer.close()

    def _gather(self, consumer: Consumer) -> list[Record]:
        """Up to BatchSize records, or what came within the batching window after the first one, or less than
        Lambda's payload limit."""
        batch: list[Record] = []
        size = EVENT_OVERHEAD_BYTES
        deadline: float | None = None
        while not self.stop.is_set() and len(batch) < self.mapping.batch_size:
            if deadline is None:
                timeout = self.settings.poll_timeout_s
            else:
                timeout = min(self.settings.poll_timeout_s, deadline - time.monotonic())
                if timeout < 0:
                    break
            message = consumer.poll(timeout)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("%s: %s", self.mapping.logical_id, error)
                continue
            record = Record.from_message(message)
            if batch and size + record.size + 1 > self.settings.max_payload_bytes:
                # the record starts the next batch: read it again from there
                consumer.seek(TopicPartition(*record.position))
                break
            batch.append(record)
            size += record.size + 1
            if deadline is None:
                deadline = time.monotonic() + self.mapping.batching_window_s
        return batch

    def _settle(self, consumer: Consumer, records: Iterable[Record], done: frozenset[Position]) -> None:
        records = list(records)
        settlement = settle(records, done)
        if settlement.commits:
            offsets = [TopicPartition(*partition, offset) for partition, offset in settlement.commits.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:
                # e.g. the partition went to another member: it reads these records again
                logger.warning("%s: commit failed (%s)", self.mapping.logical_id, error)
            else:
                self.attempts.forget_committed(settlement.commits)
        for partition, offset in settlement.rewinds.items():
            try:
                consumer.seek(TopicPartition(*partition, offset))
            except KafkaException as error:
                # going on from the consumer's position would commit past the undone records later: start over
                # from the committed offsets instead (run() makes a new consumer)
                logger.warning("%s: rewind of %s to %d failed (%s)", self.mapping.logical_id, partition, offset, error)
                raise
        logger.debug(
            "%s %s: committed %s, rewound %s",
            self.mapping.logical_id,
            spans(records),
            {str(partition): offset for partition, offset in settlement.commits.items()},
            {str(partition): offset for partition, offset in settlement.rewinds.items()},
        )


def partition_count(mapping: KafkaMapping, timeout_s: float = 10.0) -> int:
    """How many partitions the mapping's topic has (1 when the broker cannot say yet)."""
    try:
        metadata = AdminClient({"bootstrap.servers": mapping.bootstrap_servers}).list_topics(
            mapping.topic, timeout=timeout_s
        )
    except KafkaException as error:
        logger.warning("%s: no metadata for %s (%s); one poller", mapping.logical_id, mapping.topic, error)
        return 1
    topic = metadata.topics.get(mapping.topic)
    return len(topic.partitions) if topic is not None and topic.error is None and topic.partitions else 1


def start_pollers(
    mappings: Iterable[KafkaMapping],
    invoker: Invoker,
    destination_for: Callable[[KafkaMapping], FailureDestination | None],
    *,
    settings: PollerSettings | None = None,
    stop: threading.Event,
    pollers_for: Callable[[KafkaMapping], int] = partition_count,
) -> list[threading.Thread]:
    """Per mapping, one poller per partition of its topic (up to MAX_POLLERS_PER_MAPPING, each then taking every
    n-th partition), committing through the mapping's group: their batches are invoked side by side, as Lambda
    scales a Kafka mapping up to one concurrent invocation per partition. Daemon threads: one stuck in an
    invoke must not keep the process alive at exit."""
    threads = []
    for mapping in mappings:
        partitions = max(1, pollers_for(mapping))
        count = min(partitions, MAX_POLLERS_PER_MAPPING)
        destination = destination_for(mapping)
        for number in range(count):
            mine = None if count == 1 else range(number, partitions, count)
            poller = MappingPoller(mapping, invoker, destination, settings=settings, stop=stop, partitions=mine)
            name = f"kafka-trigger-{mapping.logical_id}" + (f"-{number}" if count > 1 else "")
            thread = threading.Thread(target=poller.run, name=name, daemon=True)
            thread.start()
            threads.append(thread)
    return threads
