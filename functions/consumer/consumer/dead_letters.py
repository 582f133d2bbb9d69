"""The dead-letter queue: records that cannot be delivered go to SQS (DLQ_URL) with the reason, the error's
event id, where they were (topic, partition, offset) and their original bytes."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from consumer.decoding import RawRecord

MAX_MESSAGE_BYTES = 1024 * 1024 - 8 * 1024
"""SQS's message limit (1 MiB, message attributes included) less room for the attributes we set."""


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

    @classmethod
    def of(
        cls,
        record: RawRecord | dict[str, Any],
        reason: str,
        error_event_id: str,
        *,
        subscription: str | None = None,
        event: dict[str, str] | None = None,
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

    def body(self, limit: int = MAX_MESSAGE_BYTES) -> str:
        """The letter as JSON within `limit` bytes: the value, then the key, then the headers are left out
        (the value's SHA-256 still identifies it) until it fits; the metadata always does."""
        letter = {key: value for key, value in self.__dict__.items() if value is not None}
        text = json.dumps(letter, separators=(",", ":"))
        for field_name, note in (
            ("value_base64", "value_omitted"),
            ("key_base64", "key_omitted"),
            ("headers", "headers_omitted"),
        ):
            if len(text.encode()) <= limit:
                break
            if letter.pop(field_name, None) is not None:
                letter[note] = "too large for an SQS message"
                text = json.dumps(letter, separators=(",", ":"))
        return text


class DeadLetterQueue:
    def __init__(self, url: str | None, sqs: Any) -> None:  # noqa: ANN401 - a boto3 client
        self.url = url
        self._sqs = sqs

    def send(self, letter: DeadLetter) -> None:
        """Raises when the letter could not be sent (or no DLQ is configured): the caller must then keep the
        record for a retry, never drop it."""
        if not self.url:
            raise RuntimeError("no DLQ_URL is configured")
        self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=letter.body(),
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": letter.reason[:256]},
                "error_event_id": {"DataType": "String", "StringValue": letter.error_event_id},
                "topic": {"DataType": "String", "StringValue": letter.topic},
            },
        )
