"""IngestFunction in-process with real API Gateway REST events against the real broker (tansu): records
land on the right topic with the right key, `ce_*` headers and the request's trace; every error status
comes from a real bad input; a broker that is down gives a bounded 503; a duplicate is produced once."""

from __future__ import annotations

import json
import uuid

import pytest
from support.functions import load_function
from support.ingest import (
    TRACE_ID,
    TRACEPARENT,
    _nested,
    api_request,
    assert_problem,
    base_env,
    call,
    cloud_event,
    records_with_id,
)
from support.kafka import header

pytestmark = pytest.mark.servers


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
