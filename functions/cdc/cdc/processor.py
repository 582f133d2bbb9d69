"""One batch from a stream trigger (DynamoDB Streams, Kinesis, or Kafka): every record is decoded into a
change, published as a CloudEvent, and either acknowledged, dead-lettered (undecodable: never retried), or
reported in `batchItemFailures` with its stream's identifier (`SequenceNumber` for DynamoDB Streams and
Kinesis, `{"partition", "offset"}` for Kafka) when publishing failed; the batch never fails whole for one
bad record."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lambda_event_bus.base import LambdaContext
from lambda_event_bus.bus.contract import to_kafka_record
from lambda_event_bus.bus.dead_letters import DeadLetterQueue, fit
from lambda_event_bus.bus.producer import EventProducer
from lambda_event_bus.telemetry import Telemetry
from lambda_event_bus.telemetry.tracing import kafka_headers_as_text, span_context_of
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from cdc import debezium, dynamodb
from cdc.events import to_cloud_event
from cdc.model import Change, UndecodableChangeError
from cdc.settings import CdcSettings


@dataclass
class StreamRecord:
    """One record of the batch, whatever the source, with how to name it in a partial batch response."""

    source: str  # aws:dynamodb, aws:kinesis or kafka
    identifier: str | dict[str, Any]
    raw: Mapping[str, Any]
    change: Change | None = None
    parent: Context = field(default_factory=Context)


class CdcProcessor:
    def __init__(
        self,
        settings: CdcSettings,
        telemetry: Telemetry,
        *,
        producer: EventProducer,
        dead_letters: DeadLetterQueue,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._producer = producer
        self._dead_letters = dead_letters

    def handle(self, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        records = _records(event)
        failures: list[dict[str, Any]] = []
        with self.telemetry.span(
            "cdc batch",
            kind=SpanKind.CONSUMER,
            attributes={"cdc.batch.size": len(records), "cdc.source": records[0].source if records else "none"},
        ) as batch_span:
            batch_link = [trace.Link(batch_span.get_span_context())]
            publishable: list[StreamRecord] = []
            for record in records:
                try:
                    record.change = self._decode(record)
                except UndecodableChangeError as error:
                    if not self._dead_letter(record, error):
                        failures.append({"itemIdentifier": record.identifier})
                    continue
                if record.change is not None:  # None: a tombstone, nothing to publish
                    publishable.append(record)
            failures += self._publish(publishable, batch_link, context)
        return {"batchItemFailures": failures}

    def _decode(self, record: StreamRecord) -> Change | None:
        raw, settings = record.raw, self.settings
        if record.source == "aws:dynamodb":
            return dynamodb.decode(
                raw, connector=settings.dynamodb_connector, traceparent_attribute=settings.traceparent_attribute
            )
        if record.source not in ("aws:kinesis", "kafka"):
            raise UndecodableChangeError(f"unknown event source {record.source!r}")
        if record.source == "aws:kinesis":
            kinesis = raw.get("kinesis")
            if not isinstance(kinesis, Mapping):
                raise UndecodableChangeError("the record has no kinesis section")
            data = _base64(kinesis.get("data"), "Kinesis data")
            partition_key = kinesis.get("partitionKey")
            key = partition_key.encode() if isinstance(partition_key, str) and partition_key else None
            return debezium.decode(data, key, traceparent_column=settings.traceparent_attribute)
        headers = kafka_headers_as_text(raw.get("headers"))
        return debezium.decode(
            _base64(raw.get("value"), "record value"),
            _base64(raw.get("key"), "record key"),
            traceparent=headers.get("traceparent"),
            traceparent_column=settings.traceparent_attribute,
        )

    def _publish(
        self, records: Sequence[StreamRecord], batch_link: list[trace.Link], context: LambdaContext | None
    ) -> list[dict[str, Any]]:
        if not records:
            return []
        kafka_records, parents, sendable = [], [], []
        failures: list[dict[str, Any]] = []
        for record in records:
            change = record.change
            if change is None:
                continue
            extracted = self.telemetry.tracing.extract({"traceparent": change.traceparent or ""})
            # none, or not a valid one: a new trace linked to the batch
            carried = extracted if span_context_of(extracted) is not None else None
            with self.telemetry.cdc_operation(
                change.connector,
                change.table,
                change.operation,
                context=carried if carried is not None else Context(),  # else a new trace...
                links=None if carried is not None else batch_link,  # ...linked to the batch
            ) as operation:
                if change.source_time_ms is not None:
                    operation.record_source_time(change.source_time_ms / 1000)
                try:
                    event = to_cloud_event(change, self.settings.event_type_prefix)
                    kafka_record = to_kafka_record(event, self.settings.topic, change.key_text)
                except Exception as error:  # a value JSON cannot carry: this change will never encode
                    if not self._dead_letter(record, UndecodableChangeError(f"the change does not encode: {error}")):
                        failures.append({"itemIdentifier": record.identifier})
                    continue
                kafka_records.append(kafka_record)
                sendable.append(record)
                parents.append(trace.set_span_in_context(operation.span) if operation.span else Context())
        if not kafka_records:
            return failures
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 30.0
        timeout = min(self.settings.publish_timeout_s, remaining - self.telemetry.settings.flush_timeout_s - 0.5)
        deliveries = self._producer.send(kafka_records, timeout_s=max(0.0, timeout), parents=parents)
        for record, delivery in zip(sendable, deliveries, strict=True):
            if delivery.ok:
                continue
            if delivery.permanent:  # the broker or client refused it for good: a retry would only block the shard
                refused = UndecodableChangeError(f"the change was refused by Kafka: {delivery.error}")
                if self._dead_letter(record, refused):
                    continue
            failures.append({"itemIdentifier": record.identifier})
        return failures

    def _dead_letter(self, record: StreamRecord, error: UndecodableChangeError) -> bool:
        event_id = self.telemetry.capture_error(
            error,
            "cdc",
            "decode",
            {"source": record.source, "identifier": str(record.identifier), "reason": error.reason},
        )
        reason = error.reason if error.reason.startswith("the change") else f"undecodable change: {error.reason}"
        letter: dict[str, Any] = {
            "reason": reason,
            "error_event_id": event_id,
            "source": record.source,
            "identifier": record.identifier,
            "record": dict(record.raw),
        }
        try:
            self._dead_letters.send(fit(letter, ("record",)), {"reason": reason, "error_event_id": event_id})
        except Exception as failure:
            self.telemetry.capture_error(failure, "cdc", "dead-letter", {"source": record.source})
            return False
        return True


def _base64(value: object, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UndecodableChangeError(f"the {what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableChangeError(f"the {what} is not valid base64") from None


def _records(event: Mapping[str, Any]) -> list[StreamRecord]:
    """The batch's records in order, whatever the trigger."""
    found: list[StreamRecord] = []
    stream_records = event.get("Records")
    if isinstance(stream_records, list):
        for raw in stream_records:
            if not isinstance(raw, Mapping):
                continue
            source = str(raw.get("eventSource"))
            section = raw.get("dynamodb") if source == "aws:dynamodb" else raw.get("kinesis")
            sequence = ""
            if isinstance(section, Mapping):
                sequence = str(section.get("SequenceNumber") or section.get("sequenceNumber") or "")
            found.append(StreamRecord(source, sequence, raw))
        return found
    kafka_batches = event.get("records")
    if isinstance(kafka_batches, Mapping):
        for batch in kafka_batches.values():
            for raw in batch if isinstance(batch, list) else []:
                if isinstance(raw, Mapping):
                    identifier = {
                        "partition": f"{raw.get('topic')}-{raw.get('partition')}",
                        "offset": raw.get("offset"),
                    }
                    found.append(StreamRecord("kafka", identifier, raw))
    return found
