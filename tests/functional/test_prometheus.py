"""The shipped Prometheus config scrapes the Pushgateway with each environment's labels intact, and the
catalog aggregates across execution environments the way dashboards and alerts query it."""

from __future__ import annotations

import time

import pytest
from localbus.context import LambdaContext

pytestmark = pytest.mark.servers


def wait_for(prometheus, expression: str, expected: float, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = prometheus.query(expression)
        if result and float(result[0]["value"][1]) == expected:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{expression} never reached {expected}: {result}")


def test_invocations_of_two_environments_sum_up_in_prometheus(prometheus, pushgateway, make_telemetry, service_name):
    environments = [make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="ingest") for _ in range(2)]
    for count, telemetry in zip((2, 3), environments, strict=True):
        handler = telemetry.http_handler(lambda event, context: {"statusCode": 202})
        for _ in range(count):
            handler({"httpMethod": "POST", "resource": "/events", "path": "/events"}, LambdaContext())

    total = f'sum(http_requests_total{{job="{service_name}", endpoint="/events", status="202"}})'
    wait_for(prometheus, total, 5)
    per_instance = prometheus.query(f'http_requests_total{{job="{service_name}"}}')
    assert {sample["metric"]["instance"] for sample in per_instance} == {t.instance_id for t in environments}
    assert {sample["metric"]["function_name"] for sample in per_instance} == {"ingest"}
