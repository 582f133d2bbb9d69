"""IngestFunction under test: its environment, API Gateway REST events, calling the handler, checking a
problem+json answer, and reading what it produced (tests/functional/test_ingest*.py)."""

from __future__ import annotations

import base64
import json
import uuid
from types import ModuleType
from typing import Any

import pytest
from support.context import LambdaContext
from support.events import load_event
from support.functions import load_function
from support.kafka import header, read_topic

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def base_env(bootstrap: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "ingest-test",
        "AWS_LAMBDA_FUNCTION_NAME": "ingest",
        "AWS_DEFAULT_REGION": "eu-west-1",
        **extra,
    }


def api_request(
    method: str = "POST",
    resource: str = "/events",
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = load_event("apigw_rest_post_events", httpMethod=method, resource=resource, path=resource)
    event["headers"] = {"Host": "api.example.com", **(headers or {})}
    event["multiValueHeaders"] = {key: [value] for key, value in event["headers"].items()}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()} or None
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"], event["isBase64Encoded"] = body, False
    return event


def cloud_event(**overrides: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/shop/orders",
        "type": "com.example.order.created",
        "subject": "order-42",
        "datacontenttype": "application/json",
        "data": {"order_id": "o-42", "amount": 12.5, "currency": "EUR"},
    }
    event.update(overrides)
    return event


def call(module: ModuleType, event: dict[str, Any], timeout_s: float = 30.0) -> tuple[int, dict[str, str], Any]:
    response = module.handler(event, LambdaContext(function_name="ingest", timeout_s=timeout_s))
    body = json.loads(response["body"]) if response.get("body") else None
    return response["statusCode"], response.get("headers", {}), body


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"child": value}
    return value


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert body["status"] == expected
    assert body["type"].startswith("urn:eventbus:problem:")
    assert body["title"]
    assert body["detail"]


def records_with_id(bootstrap: str, topic: str, event_id: str, count: int = 1, timeout: float = 10.0) -> list:
    return read_topic(bootstrap, topic, count, timeout, accept=lambda m: header(m, "ce_id") == event_id.encode())


@pytest.fixture
def ingest(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """IngestFunction loaded in-process against the suite's broker, demo routes on."""
    return load_function("ingest", "ingest", base_env(kafka_bootstrap, DEMO_ROUTES="enabled"), monkeypatch)
