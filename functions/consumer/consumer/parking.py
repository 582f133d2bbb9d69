"""Parking a delivery for a retry: a ticket in the retry queue (SQS, RETRY_QUEUE_URL), delayed by the backoff.

A ticket carries everything a retry needs, so that it survives any change of execution environment: the
subscription's name, the Kafka record as the event source mapping delivered it (so the retry decodes the very
same event, and a dead letter carries the same bytes), the attempts made, when the first failed and the last
error. The same function takes tickets from the queue (its SQS event) when their delay ends.

SQS delays a message by 15 minutes at most, so that is the longest step of the backoff: exponential from
RETRY_BASE_DELAY_SECONDS, capped at RETRY_MAX_DELAY_SECONDS (900), with jitter (each delay is drawn between
half and all of its step, so that retries of many events spread out), and never past the end of the
subscription's retry window.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from consumer.decoding import RawRecord

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

TICKET_VERSION = 1
MAX_SQS_DELAY_S = 900
MAX_TICKET_BYTES = 256 * 1024 - 8 * 1024  # an SQS message (its batch's limit too), less room for attributes


@dataclass(frozen=True)
class Ticket:
    """A parked delivery."""

    subscription: str
    lane: str
    seq: str
    record: dict[str, Any]  # the record in the event source mapping's shape (base64 key and value)
    attempts: int  # failed attempts so far (0: parked without one, e.g. behind an earlier event of its key)
    first_failed_at: float  # unix time of the first failed attempt (or of the parking)
    last_error: str = ""
    ordered: bool = True  # the ticket waits its turn in its lane (ordering: key, with a lane store)

    def body(self) -> str:
        return json.dumps({"v": TICKET_VERSION, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> Ticket:
        """The ticket in a retry message; ValueError when it is not one."""
        document = json.loads(text)
        if not isinstance(document, dict) or document.pop("v", None) != TICKET_VERSION:
            raise ValueError("not a retry ticket of this version")
        try:
            ticket = cls(**document)
        except TypeError as error:
            raise ValueError(f"not a retry ticket: {error}") from None
        if not isinstance(ticket.record, dict) or not isinstance(ticket.attempts, int):
            raise ValueError("not a retry ticket: bad record or attempts")  # noqa: TRY004 - one error for callers
        return ticket

    def then(self, error: str) -> Ticket:
        """This ticket after one more failed attempt."""
        return replace(self, attempts=self.attempts + 1, last_error=error[:1000])


def record_of(raw: RawRecord) -> dict[str, Any]:
    """A raw record in the event source mapping's shape again (what `decoding.read_record` reads)."""
    return {
        "topic": raw.topic,
        "partition": raw.partition,
        "offset": raw.offset,
        "timestamp": raw.timestamp_ms,
        "key": base64.b64encode(raw.key).decode() if raw.key is not None else None,
        "value": base64.b64encode(raw.value).decode() if raw.value is not None else None,
        "headers": [{name: list(value)} for name, value in raw.headers],
    }


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = MAX_SQS_DELAY_S

    def delay_s(self, attempts: int, *, time_left_s: float, rng: random.Random | None = None) -> int:
        """The delay before retry number `attempts` + 1 (after `attempts` failures), in whole seconds."""
        step = min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1))
        drawn = (rng or random).uniform(step / 2, step)
        return max(0, min(MAX_SQS_DELAY_S, int(min(drawn, time_left_s))))


class RetryQueue:
    """The retry queue: SendMessageBatch of tickets, each with its own delay."""

    def __init__(self, url: str | None, sqs: SQSClient) -> None:
        self.url = url
        self._sqs = sqs

    def send(self, tickets: Sequence[tuple[Ticket, int, Mapping[str, str]]]) -> list[str | None]:
        """Park each (ticket, delay seconds, message attributes): for each, None or why it was not parked."""
        if not self.url:
            return ["no retry queue (RETRY_QUEUE_URL) is configured"] * len(tickets)
        errors: list[str | None] = [None] * len(tickets)
        bodies = [ticket.body() for ticket, _, _ in tickets]
        chunk: list[int] = []
        size = 0
        for index, body in enumerate(bodies):
            if len(body.encode()) > MAX_TICKET_BYTES:
                errors[index] = f"the record is too large to park for a retry ({len(body)} bytes as a ticket)"
                continue
            if len(chunk) == 10 or size + len(body) > MAX_TICKET_BYTES:
                self._send(chunk, tickets, bodies, errors)
                chunk, size = [], 0
            chunk.append(index)
            size += len(body) + 1024
        if chunk:
            self._send(chunk, tickets, bodies, errors)
        return errors

    def _send(
        self,
        chunk: Sequence[int],
        tickets: Sequence[tuple[Ticket, int, Mapping[str, str]]],
        bodies: Sequence[str],
        errors: list[str | None],
    ) -> None:
        if not self.url:
            return
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": bodies[index],
                "DelaySeconds": max(0, min(MAX_SQS_DELAY_S, tickets[index][1])),
                "MessageAttributes": {
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in list(tickets[index][2].items())[:10]
                    if value
                },
            }
            for index in chunk
        ]
        try:
            response = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        except Exception as error:
            for index in chunk:
                errors[index] = f"the retry queue did not take it: {type(error).__name__}: {error}"[:500]
            return
        for failed in response.get("Failed", []):
            errors[int(failed["Id"])] = f"the retry queue refused it: {failed.get('Code')}: {failed.get('Message')}"
