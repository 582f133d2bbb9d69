"""The dead-letter queue: records that cannot be delivered go to SQS (DLQ_URL) with the reason, the error's
event id, where they were (topic, partition, offset) and their original bytes; a delivery whose retries ran
out also says which subscription, how many attempts were made, when the first failed and the last error."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambda_event_bus.bus.dead_letters import DeadLetterQueue as SharedQueue
from lambda_event_bus.bus.dead_letters import fit

from consumer.decoding import RawRecord

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    error_event_id: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    subscription: str | None = None
    event: dict[str, str] | None = None
    key_base64: str | None = None
    value_base64: str | None = None
    value_sha256: str | None = None
    value_bytes: int = 0
    headers: list[list[str]] | None = None
    attempts: int | None = None
    first_failed_at: float | None = None
    last_error: str | None = None

    @classmethod
    def of(
        cls,
        record: RawRecord | dict[str, Any],
        reason: str,
        error_event_id: str,
        *,
        subscription: str | None = None,
        event: dict[str, str] | None = None,
        attempts: int | None = None,
        first_failed_at: float | None = None,
        last_error: str | None = None,
    ) -> DeadLetter:
        if isinstance(record, RawRecord):
            value = record.value or b""
            return cls(
                reason=reason,
                error_event_id=error_event_id,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                subscription=subscription,
                event=event,
                key_base64=base64.b64encode(record.key).decode() if record.key is not None else None,
                value_base64=base64.b64encode(value).decode() if record.value is not None else None,
                value_sha256=hashlib.sha256(value).hexdigest(),
                value_bytes=len(value),
                headers=[[name, base64.b64encode(data).decode()] for name, data in record.headers],
                attempts=attempts,
                first_failed_at=first_failed_at,
                last_error=last_error,
            )
        # a record whose bytes did not even decode: keep the event source mapping's fields as they came
        return cls(
            reason=reason,
            error_event_id=error_event_id,
            topic=str(record.get("topic")),
            partition=int(record.get("partition") or 0),
            offset=int(record.get("offset") or 0),
            timestamp_ms=record.get("timestamp") if isinstance(record.get("timestamp"), int) else None,
            subscription=subscription,
            key_base64=record.get("key") if isinstance(record.get("key"), str) else None,
            value_base64=record.get("value") if isinstance(record.get("value"), str) else None,
            headers=[
                [str(k), json.dumps(v)]
                for item in record.get("headers") or []
                if isinstance(item, dict)
                for k, v in item.items()
            ]
            if isinstance(record.get("headers"), list)
            else None,
        )

    def body(self) -> str:
        """The letter as JSON that fits an SQS message (value, then key, then headers give way)."""
        letter = {key: value for key, value in self.__dict__.items() if value is not None}
        return fit(letter, ("value_base64", "key_base64", "headers"))


class DeadLetterQueue:
    def __init__(self, url: str | None, sqs: SQSClient) -> None:
        self._queue = SharedQueue(url, sqs)
        self.url = url

    def send(self, letter: DeadLetter) -> None:
        """Raises when the letter could not be sent: the caller keeps the record for a retry instead."""
        self._queue.send(
            letter.body(),
            {"reason": letter.reason, "error_event_id": letter.error_event_id, "topic": letter.topic},
        )
