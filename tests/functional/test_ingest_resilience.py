"""IngestFunction when its dependencies fail: a broker that is down gives a bounded 503 before the Lambda
timeout, a duplicate is produced once, and an idempotency table that does not answer is a 503 without internals."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws
from samhost.processes import free_port
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
        from lambda_event_bus.bus.idempotency import DynamoDBIdempotency

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
