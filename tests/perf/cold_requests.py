"""What a cold-start child calls its handler with: a Lambda context, and requests with fresh event ids.

Imported by the child before its clock starts (only json, base64 and uuid: nothing a measured case would load
for itself). Event ids are new in every child, so that an idempotency claim is a first claim in every run.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "events"


class LambdaContext:
    """The attributes and method of the Lambda runtime's context object; 30 s left, always."""

    function_name = "bench-fn"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:bench-fn"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/bench-fn"
    log_stream_name = "2026/01/01/[$LATEST]0123456789abcdef"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


def http_request() -> dict[str, Any]:
    """API Gateway (REST) POST /events with one structured CloudEvent of a new id."""
    event = _load("apigw_rest_post_events")
    cloud_event = json.loads(base64.b64decode(event["body"]))
    cloud_event["id"] = str(uuid.uuid4())
    event["body"] = base64.b64encode(json.dumps(cloud_event).encode()).decode()
    event["headers"] = {**event.get("headers", {}), "Content-Type": "application/cloudevents+json"}
    event["multiValueHeaders"] = {}
    return event


def kafka_batch() -> dict[str, Any]:
    """An MSK batch (binary-mode CloudEvents, a subscription matches them) whose records have new ids."""
    event = _load("kafka_msk_orders")
    for records in event["records"].values():
        for record in records:
            new_id = list(f"bench-{uuid.uuid4()}".encode())
            record["headers"] = [{"ce_id": new_id} if "ce_id" in header else header for header in record["headers"]]
    return event


def stream_batch() -> dict[str, Any]:
    """A DynamoDB Streams batch (CdcFunction publishes each change to its topic)."""
    return _load("dynamodb_stream_orders")


REQUESTS = {"http": http_request, "kafka": kafka_batch, "stream": stream_batch}
