"""IngestFunction's routes: every answer's headers, the health route, the demo routes and what is not a route."""

from __future__ import annotations

import json
import uuid

import pytest
from support.functions import load_function
from support.ingest import (
    api_request,
    assert_problem,
    base_env,
    call,
    cloud_event,
    records_with_id,
)

pytestmark = pytest.mark.servers


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
