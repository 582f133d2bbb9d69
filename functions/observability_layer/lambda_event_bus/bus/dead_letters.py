"""The bus's dead-letter queue (SQS, `DLQ_URL`): what cannot be processed goes there with its reason."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["MAX_MESSAGE_BYTES", "DeadLetterQueue", "fit"]

MAX_MESSAGE_BYTES = 1024 * 1024 - 8 * 1024
"""SQS's message limit (1 MiB, message attributes included) less room for the attributes we set."""


def fit(letter: Mapping[str, Any], drop_order: Sequence[str], limit: int = MAX_MESSAGE_BYTES) -> str:
    """The letter as JSON within `limit` bytes: the named fields are left out, in order, until it fits (each
    leaves an `<name>_omitted` note); the rest is metadata, which always fits."""
    letter = dict(letter)
    text = json.dumps(letter, separators=(",", ":"), default=str)
    for name in drop_order:
        if len(text.encode()) <= limit:
            break
        if letter.pop(name, None) is not None:
            letter[f"{name}_omitted"] = "too large for an SQS message"
            text = json.dumps(letter, separators=(",", ":"), default=str)
    return text


class DeadLetterQueue:
    def __init__(self, url: str | None, sqs: SQSClient) -> None:
        self.url = url
        self._sqs = sqs

    def send(self, body: str, attributes: Mapping[str, str]) -> None:
        """Raises when the letter could not be sent (or no DLQ is configured): the caller must then keep the
        record for a retry, never drop it."""
        if not self.url:
            raise RuntimeError("no DLQ_URL is configured")
        self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value[:256]} for name, value in attributes.items() if value
            },
        )
