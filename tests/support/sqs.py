"""SQS as Lambda sees it: received messages as an `aws:sqs` event, and a drain of the retry queue through
KafkaConsumerFunction's handler (its SQS event) until no ticket is left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def sqs_event(
    messages: list[dict[str, Any]], queue_arn: str = "arn:aws:sqs:us-east-1:000000000000:retries"
) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {
                    name: {"stringValue": value.get("StringValue"), "dataType": value.get("DataType", "String")}
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
            }
            for message in messages
        ]
    }


def receive(sqs: Any, queue_url: str, *, wait_s: float = 0.0) -> list[dict[str, Any]]:
    """What the queue shows now (waiting up to `wait_s` for a first message); the messages stay invisible
    for their visibility timeout, as with the event source mapping."""
    deadline = time.monotonic() + wait_s
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        ).get("Messages", [])
        if messages or time.monotonic() >= deadline:
            return messages
        time.sleep(0.1)


def drain(
    sqs: Any,
    queue_url: str,
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    context: Any,
    *,
    quiet_s: float = 2.5,
    limit_s: float = 60.0,
) -> int:
    """Feed the queue's messages to `handler` as the SQS event source mapping would (deleting what it did not
    report as failed) until the queue has been empty for `quiet_s`; returns the invocations made."""
    invocations = 0
    deadline = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        messages = receive(sqs, queue_url)
        if not messages:
            if time.monotonic() - quiet_since >= quiet_s:
                return invocations
            time.sleep(0.1)
            continue
        response = handler(sqs_event(messages), context)
        invocations += 1
        failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        quiet_since = time.monotonic()
    raise AssertionError(f"the retry queue did not drain in {limit_s} s")
