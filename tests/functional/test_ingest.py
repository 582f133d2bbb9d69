"""IngestFunction in-process with real API Gateway REST events against the real broker (tansu): records
land on the right topic with the right key, `ce_*` headers and the request's trace; every error status
comes from a real bad input; a broker that is down gives a bounded 503; a duplicate is produced once."""

from __future__ import annotations

import base64
import json
import time
import uuid
from types import ModuleType
from typing import Any

import boto3
import pytest
from localbus.context import LambdaContext
from localbus.processes import free_port
from moto import mock_aws
from support.events import load_event
from support.functions import load_function
from support.kafka import header, read_topic

pytestmark = pytest.mark.servers

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


@pytest.fixture
def ingest(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_function("ingest", "ingest", base_env(kafka_bootstrap, DEMO_ROUTES="enabled"), monkeypatch)


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


class TestAccepted:
    def test_structured_event_lands_with_topic_key_headers_and_the_requests_trace(self, ingest, kafka_bootstrap):
        event = cloud_event()
        status, _, body = call(
            ingest,
            api_request(
                body=json.dumps(event),
                headers={"Content-Type": "application/cloudevents+json", "traceparent": TRACEPARENT},
            ),
        )
        assert status == 202, body
        assert body["accepted"] == [event["id"]]
        (result,) = body["results"]
        assert (result["status"], result["topic"]) == ("accepted", "orders")
        (record,) = records_with_id(kafka_bootstrap, "orders", event["id"])
        assert (record.partition(), record.offset()) == (result["partition"], result["offset"])
        assert record.key() == b"order-42", "the subject is the partition key"
        assert header(record, "ce_type") == b"com.example.order.created"
        assert header(record, "ce_source") == b"/shop/orders"
        assert header(record, "ce_specversion") == b"1.0"
        assert header(record, "content-type") == b"application/json"
        assert json.loads(record.value()) == event["data"]
        traceparent = header(record, "traceparent").decode()
        assert traceparent.split("-")[1] == TRACE_ID, "the record continues the request's trace"
        assert traceparent.split("-")[2] != "00f067aa0ba902b7", "its parent is the produce span, not the caller"

    def test_binary_mode_with_partitionkey_extension(self, ingest, kafka_bootstrap):
        event_id = uuid.uuid4().hex
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/billing",
            "ce-type": "com.example.payment.captured",
            "ce-partitionkey": "customer-7",
            "Content-Type": "text/plain",
        }
        status, _, body = call(ingest, api_request(body="paid in full", headers=headers))
        assert status == 202, body
        (record,) = records_with_id(kafka_bootstrap, "payments", event_id)
        assert record.key() == b"customer-7"
        assert record.value() == b"paid in full"
        assert header(record, "ce_partitionkey") == b"customer-7"

    def test_batch_goes_to_each_events_topic_and_unrouted_types_to_the_default(self, ingest, kafka_bootstrap):
        events = [
            cloud_event(type="com.example.customer.updated", data={"tier": "gold"}),
            cloud_event(),
            cloud_event(type="com.acme.unrouted", subject=None, data=[1, 2, 3]),
        ]
        batch = json.dumps([{k: v for k, v in e.items() if v is not None} for e in events])
        status, _, body = call(
            ingest, api_request(body=batch, headers={"Content-Type": "application/cloudevents-batch+json"})
        )
        assert status == 202, body
        assert [result["topic"] for result in body["results"]] == ["customers", "orders", "events"]
        (unrouted,) = records_with_id(kafka_bootstrap, "events", events[2]["id"])
        assert unrouted.key() == events[2]["id"].encode(), "no partitionkey or subject: the id is the key"
        assert json.loads(unrouted.value()) == [1, 2, 3]

    def test_plain_json_takes_type_and_source_from_the_query(self, ingest, kafka_bootstrap):
        status, _, body = call(
            ingest,
            api_request(
                body=json.dumps({"hello": "world"}),
                headers={"Content-Type": "application/json"},
                query={"type": "demo.plain", "source": "/curl", "subject": "s-1"},
            ),
        )
        assert status == 202, body
        (record,) = records_with_id(kafka_bootstrap, "events", body["accepted"][0])
        assert json.loads(record.value()) == {"hello": "world"}
        assert record.key() == b"s-1"

    def test_data_and_extensions_follow_the_kafka_binding(self, ingest, kafka_bootstrap):
        text_event = cloud_event(type="demo.text", data="hello", flagged=True, attempt=3)
        status, _, body = call(
            ingest, api_request(body=json.dumps(text_event), headers={"Content-Type": "application/cloudevents+json"})
        )
        assert status == 202, body
        (record,) = records_with_id(kafka_bootstrap, "events", text_event["id"])
        assert record.value() == b'"hello"', "JSON data stays JSON: a string is written as a JSON string"
        assert (header(record, "ce_flagged"), header(record, "ce_attempt")) == (b"true", b"3")

    def test_binary_mode_keeps_the_body_byte_for_byte(self, ingest, kafka_bootstrap):
        event_id = uuid.uuid4().hex
        raw = b'{"amount": 1.50, "note": "not re-encoded"}'
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/s",
            "ce-type": "demo.raw",
            "Content-Type": "application/json",
        }
        assert call(ingest, api_request(body=raw, headers=headers))[0] == 202
        (record,) = records_with_id(kafka_bootstrap, "events", event_id)
        assert record.value() == raw

    def test_an_event_just_under_the_size_limit_is_accepted(self, ingest, kafka_bootstrap):
        big = cloud_event(type="demo.big", data={"blob": "x" * 999_000})
        status, _, body = call(
            ingest, api_request(body=json.dumps(big), headers={"Content-Type": "application/cloudevents+json"})
        )
        assert status == 202, body

    def test_base64_bodies_from_api_gateway_are_decoded(self, ingest):
        event = cloud_event()
        status, _, body = call(
            ingest,
            api_request(body=json.dumps(event).encode(), headers={"Content-Type": "application/cloudevents+json"}),
        )
        assert status == 202, body


class TestRejected:
    @pytest.mark.parametrize(
        ("body", "headers", "expected", "detail"),
        [
            ("{not json", {"Content-Type": "application/cloudevents+json"}, 400, "not valid JSON"),
            (json.dumps({**cloud_event(), "id": None}), {"Content-Type": "application/cloudevents+json"}, 400, "id"),
            (
                json.dumps({k: v for k, v in cloud_event().items() if k != "id"}),
                {"Content-Type": "application/cloudevents+json"},
                400,
                "'id' is required",
            ),
            (
                json.dumps({k: v for k, v in cloud_event().items() if k != "source"}),
                {"Content-Type": "application/cloudevents+json"},
                400,
                "source",
            ),
            (
                json.dumps(cloud_event(specversion="0.3")),
                {"Content-Type": "application/cloudevents+json"},
                400,
                "specversion",
            ),
            (
                json.dumps(cloud_event(time="yesterday")),
                {"Content-Type": "application/cloudevents+json"},
                400,
                "RFC 3339 timestamp such as 2026-01-31T12:00:00Z (got 'yesterday')",
            ),
            ("[" * 10_000 + "]" * 10_000, {"Content-Type": "application/cloudevents-batch+json"}, 400, "nested"),
            (
                json.dumps(cloud_event(data=_nested(100))),
                {"Content-Type": "application/cloudevents+json"},
                400,
                "nested more than 64 levels deep",
            ),
            ("[1, 2]", {"Content-Type": "application/cloudevents+json"}, 400, "JSON object"),
            ("{}", {"Content-Type": "application/cloudevents-batch+json"}, 400, "JSON array"),
            ("{}", {"Content-Type": "application/json"}, 400, "?type="),
            ("hello", {"Content-Type": "text/plain"}, 415, "text/plain is not accepted"),
            ("hello", {}, 415, "no Content-Type"),
            (
                json.dumps(cloud_event(data={"order_id": "o-1", "amount": -5, "currency": "EUR"})),
                {"Content-Type": "application/cloudevents+json"},
                422,
                "amount",
            ),
            (
                json.dumps(cloud_event(data="not an object")),
                {"Content-Type": "application/cloudevents+json"},
                422,
                "",
            ),
        ],
    )
    def test_bad_input_gets_its_problem(self, ingest, body, headers, expected, detail):
        status, response_headers, problem = call(ingest, api_request(body=body, headers=headers))
        assert_problem(status, response_headers, problem, expected)
        assert detail in problem["detail"]

    def test_a_batch_with_one_invalid_event_is_rejected_whole_with_per_event_errors(self, ingest, kafka_bootstrap):
        good, bad = cloud_event(), cloud_event(specversion="2.0")
        status, headers, problem = call(
            ingest,
            api_request(body=json.dumps([good, bad]), headers={"Content-Type": "application/cloudevents-batch+json"}),
        )
        assert_problem(status, headers, problem, 400)
        assert [(error["index"], error["id"]) for error in problem["errors"]] == [(1, bad["id"])]
        assert records_with_id(kafka_bootstrap, "orders", good["id"], timeout=2) == [], "nothing half-accepted"

    def test_an_event_over_the_size_limit_is_413(self, kafka_bootstrap, monkeypatch):
        module = load_function("ingest", "ingest", base_env(kafka_bootstrap, MAX_EVENT_BYTES="2048"), monkeypatch)
        big = cloud_event(type="demo.big", data={"blob": "x" * 4000})
        status, headers, problem = call(
            module, api_request(body=json.dumps(big), headers={"Content-Type": "application/cloudevents+json"})
        )
        assert_problem(status, headers, problem, 413)
        assert "limit is 2048" in problem["detail"]

    def test_a_request_over_the_size_limit_is_413(self, kafka_bootstrap, monkeypatch):
        module = load_function("ingest", "ingest", base_env(kafka_bootstrap, MAX_REQUEST_BYTES="1024"), monkeypatch)
        status, headers, problem = call(
            module,
            api_request(
                body=json.dumps(cloud_event(data={"x": "y" * 2000})), headers={"Content-Type": "application/json"}
            ),
        )
        assert_problem(status, headers, problem, 413)

    @pytest.mark.parametrize(
        ("attributes", "detail"),
        [
            ({"id": "\ud800"}, "lone surrogate"),
            ({"data": {"note": "a\ud800b"}}, "lone surrogate"),
            ({"data": {"a\udfff": 1}}, "lone surrogate"),
            ({"id": "order\u0000-1"}, "attribute 'id' contains a control character (U+0000)"),
            ({"type": "com.example\n.created"}, "attribute 'type' contains a control character (U+000A)"),
            ({"source": "/shop\u007f"}, "attribute 'source' contains a control character (U+007F)"),
            ({"subject": "order\u0085"}, "attribute 'subject' contains a control character (U+0085)"),
            ({"subject": "a\udfffb"}, "lone surrogate"),
            ({"myext": {"a": 1}}, "extension 'myext'"),
            ({"myext": 1.5}, "extension 'myext'"),
            ({"myext": 2**40}, "extension 'myext'"),
        ],
    )
    def test_attributes_kafka_cannot_carry_are_400(self, ingest, attributes, detail):
        body = json.dumps(cloud_event(**attributes))  # json escapes lone surrogates as \udXXX
        status, headers, problem = call(
            ingest, api_request(body=body, headers={"Content-Type": "application/cloudevents+json"})
        )
        assert_problem(status, headers, problem, 400)
        assert detail in problem["detail"]

    def test_unknown_routes_and_methods(self, ingest):
        assert_problem(*call(ingest, api_request(method="GET", resource="/nowhere")), 404)
        status, headers, problem = call(ingest, api_request(method="GET", resource="/events"))
        assert_problem(status, headers, problem, 405)
        assert headers["Allow"] == "POST"


class TestBrokerDown:
    def test_little_time_left_answers_503_before_the_lambda_timeout(self, monkeypatch):
        module = load_function("ingest", "ingest", base_env(f"127.0.0.1:{free_port()}"), monkeypatch)
        started = time.monotonic()
        status, headers, problem = call(
            module,
            api_request(body=json.dumps(cloud_event()), headers={"Content-Type": "application/cloudevents+json"}),
            timeout_s=0.8,
        )
        assert_problem(status, headers, problem, 503)
        assert time.monotonic() - started < 0.8, "answered inside the invocation's time"

    def test_503_inside_the_bound_with_per_event_results_and_nothing_accepted(self, monkeypatch):
        env = base_env(f"127.0.0.1:{free_port()}", PRODUCE_TIMEOUT_MS="500")
        module = load_function("ingest", "ingest", env, monkeypatch)
        events = [cloud_event(), cloud_event(type="com.example.customer.updated")]
        started = time.monotonic()
        status, headers, problem = call(
            module, api_request(body=json.dumps(events), headers={"Content-Type": "application/cloudevents-batch+json"})
        )
        elapsed = time.monotonic() - started
        assert_problem(status, headers, problem, 503)
        assert headers["Retry-After"] == "2"
        assert elapsed < 0.5 + 0.3 + 0.5, "the produce bound, the telemetry flush bound, and slack"
        assert [(result["id"], result["status"]) for result in problem["results"]] == [
            (events[0]["id"], "failed"),
            (events[1]["id"], "failed"),
        ]
        assert "retry exactly those" in problem["detail"]

    def test_deep_health_fails_and_shallow_health_still_answers(self, monkeypatch):
        env = base_env(f"127.0.0.1:{free_port()}", HEALTH_TIMEOUT_MS="300")
        module = load_function("ingest", "ingest", env, monkeypatch)
        assert call(module, api_request(method="GET", resource="/health"))[0] == 200
        assert_problem(*call(module, api_request(method="GET", resource="/health", query={"deep": "1"})), 503)


class TestIdempotency:
    @pytest.fixture
    def with_table(self, kafka_bootstrap, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            boto3.client("dynamodb", region_name="eu-west-1").create_table(
                TableName="idempotency",
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            yield load_function(
                "ingest", "ingest", base_env(kafka_bootstrap, IDEMPOTENCY_TABLE="idempotency"), monkeypatch
            )

    def test_a_repeated_event_is_acknowledged_without_being_produced_twice(self, with_table, kafka_bootstrap):
        event = cloud_event()
        request = api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
        first_status, _, first = call(with_table, request)
        second_status, _, second = call(with_table, request)
        assert (first_status, second_status) == (202, 202)
        assert first["results"][0]["status"] == "accepted"
        assert second["results"][0]["status"] == "duplicate"
        assert second["results"][0]["offset"] == first["results"][0]["offset"], "the first delivery is reported"
        records = records_with_id(kafka_bootstrap, "orders", event["id"], count=2, timeout=3)
        assert len(records) == 1

    def test_an_event_another_request_is_producing_is_409(self, with_table):
        from eventbus.idempotency import DynamoDBIdempotency

        event = cloud_event()
        other_request = DynamoDBIdempotency("idempotency", 3600, function_name="ingest")
        assert other_request.claim({"source": event["source"], "id": event["id"]}, 60_000).state.value == "new"
        status, headers, problem = call(
            with_table, api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
        )
        assert_problem(status, headers, problem, 409)
        assert problem["errors"][0]["status"] == "in_progress"
        assert int(headers["Retry-After"]) >= 1

    def test_a_batch_retry_produces_only_the_missing_events(self, with_table, kafka_bootstrap):
        first, second = cloud_event(), cloud_event()
        call(with_table, api_request(body=json.dumps(first), headers={"Content-Type": "application/cloudevents+json"}))
        status, _, body = call(
            with_table,
            api_request(
                body=json.dumps([first, second]), headers={"Content-Type": "application/cloudevents-batch+json"}
            ),
        )
        assert status == 202
        assert [result["status"] for result in body["results"]] == ["duplicate", "accepted"]


def test_an_unreachable_idempotency_table_is_503_without_internals(kafka_bootstrap, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():  # no table was created
        module = load_function("ingest", "ingest", base_env(kafka_bootstrap, IDEMPOTENCY_TABLE="missing"), monkeypatch)
        event = cloud_event()
        status, headers, problem = call(
            module, api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
        )
    assert_problem(status, headers, problem, 503)
    (result,) = problem["results"]
    assert (result["status"], result["detail"]) == (
        "failed",
        "the idempotency store did not answer; nothing was done",
    )
    assert "ResourceNotFound" not in json.dumps(problem)
    assert records_with_id(kafka_bootstrap, "orders", event["id"], timeout=2) == []


class TestRoutes:
    def test_every_answer_says_nosniff(self, ingest):
        requests = [
            api_request(body=json.dumps(cloud_event()), headers={"Content-Type": "application/cloudevents+json"}),
            api_request(method="GET", resource="/health"),
            api_request(method="GET", resource="/nowhere"),
            api_request(method="GET", resource="/api/error"),  # the layer's own 500
        ]
        answers = [call(ingest, request) for request in requests]
        assert [status for status, _, _ in answers] == [202, 200, 404, 500]
        assert all(headers.get("X-Content-Type-Options") == "nosniff" for _, headers, _ in answers), answers

    def test_shallow_and_deep_health(self, ingest):
        status, _, body = call(ingest, api_request(method="GET", resource="/health"))
        assert (status, body) == (200, {"status": "ok"})
        status, _, body = call(ingest, api_request(method="GET", resource="/health", query={"deep": "1"}))
        assert status == 200
        assert body["kafka"]["brokers"] >= 1

    def test_demo_routes(self, ingest, kafka_bootstrap):
        status, _, body = call(
            ingest, api_request(method="GET", resource="/api/events", query={"type": "demo.clicked", "source": "/web"})
        )
        assert status == 202
        assert body["results"][0]["topic"] == "events"

        topic = f"demo-{uuid.uuid4().hex[:6]}"
        status, _, body = call(
            ingest, api_request(method="GET", resource="/api/kafka", query={"operation": "produce", "topic": topic})
        )
        assert status == 202
        assert records_with_id(kafka_bootstrap, topic, body["accepted"][0])
        assert_problem(
            *call(ingest, api_request(method="GET", resource="/api/kafka", query={"operation": "drop"})), 400
        )

        query = {"connector": "orders-db", "table": "orders", "operation": "delete"}
        status, _, body = call(ingest, api_request(method="GET", resource="/api/cdc", query=query))
        assert (status, body) == (200, {"recorded": query})
        labels = {"connector": "orders-db", "table": "orders", "operation": "delete"}
        assert ingest.telemetry.metrics.value("cdc_events_total", **labels) == 1

        status, headers, problem = call(ingest, api_request(method="GET", resource="/api/error", query={"type": "key"}))
        assert status == 500
        assert headers["Content-Type"] == "application/problem+json"
        assert len(problem["event_id"]) == 32
        assert ingest.telemetry.metrics.value("errors_captured_total", component="http", error_type="KeyError") == 1

    def test_the_demo_routes_do_not_exist_unless_turned_on(self, kafka_bootstrap, monkeypatch):
        """DEMO_ROUTES is off by default (the template's DemoRoutes=disabled): /api/kafka would produce to any
        topic its caller names."""
        module = load_function("ingest", "ingest", base_env(kafka_bootstrap), monkeypatch)
        topic = f"demo-off-{uuid.uuid4().hex[:6]}"
        for resource, query in [
            ("/api/events", {}),
            ("/api/kafka", {"operation": "produce", "topic": topic}),
            ("/api/cdc", {}),
            ("/api/error", {"type": "key"}),
        ]:
            status, headers, problem = call(module, api_request(method="GET", resource=resource, query=query))
            assert_problem(status, headers, problem, 404)
            assert problem["detail"] == f"no route for {resource}"
        assert module.telemetry.metrics.value("errors_captured_total", component="http", error_type="KeyError") is None
        produced = {"event_type": "demo.kafka", "topic": topic, "source": "/demo/kafka"}
        assert module.telemetry.metrics.value("events_produced_total", **produced) is None

    def test_metrics_of_an_accepted_event(self, ingest):
        event = cloud_event()
        call(ingest, api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"}))
        metrics = ingest.telemetry.metrics
        labels = {"event_type": event["type"], "topic": "orders", "source": event["source"]}
        assert metrics.value("events_produced_total", **labels) == 1
        assert metrics.value("kafka_operations_total", operation="produce", topic="orders", status="success") == 1
        assert metrics.value("kafka_message_size_bytes", operation="produce", topic="orders") == 1
        assert metrics.value("http_requests_total", method="POST", endpoint="/events", status="202") == 1
