"""The shipped Prometheus config scrapes the Pushgateway with each environment's labels intact, and the
catalog aggregates across execution environments the way dashboards and alerts query it."""

from __future__ import annotations

import time

import pytest
from support.context import LambdaContext

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


def test_the_dashboard_check_reports_queries_that_fail_or_come_back_empty(prometheus):
    """localbus.dashboards.run, which the end-to-end suite runs over every panel, against a real Prometheus."""
    from localbus.dashboards import PanelQuery, run

    made = [
        PanelQuery("d", "D", number, "panel", "A", expression, expression)
        for number, expression in enumerate(["sum(vector(1))", "sum(no_such_metric_anywhere)", "sum(rate(x[1m]"])
    ]
    problems = run(prometheus.url, made)
    assert [(query.expr, why.split(":")[0]) for query, why in problems] == [
        ("sum(no_such_metric_anywhere)", "empty"),
        ("sum(rate(x[1m]", "error"),
    ]


def test_the_dashboard_pictures_draw_each_panel_from_prometheus(prometheus, pushgateway, make_telemetry, tmp_path):
    """make dashboard-pictures: a panel's range query returns the environments' traffic, summed, and each
    dashboard is drawn to a PNG."""
    import json

    from localbus import dashboard_pictures
    from localbus.dashboards import DASHBOARDS

    telemetry = make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="ingest")
    handler = telemetry.http_handler(lambda event, context: {"statusCode": 202})
    for _ in range(3):
        handler({"httpMethod": "POST", "resource": "/events", "path": "/events"}, LambdaContext())
    wait_for(prometheus, f'sum(http_requests_total{{job="{telemetry.settings.service_name}"}})', 3)

    ingest = json.loads((DASHBOARDS / "ingest.json").read_text())
    (panel,) = [panel for panel in ingest["panels"] if panel["title"] == "Request rate by endpoint and status"]
    job = telemetry.settings.service_name
    expression = {
        panel["targets"][0]["refId"]: f'sum by (method, endpoint, status) (http_requests_total{{job="{job}"}})'
    }
    now = time.time()
    series = dashboard_pictures.panel_series(prometheus.url, panel, expression, (now - 60, now))
    assert [line.label for line in series] == ["POST /events 202"]
    assert series[0].values[-1] >= 3

    for path in sorted(DASHBOARDS.glob("*.json")):
        picture = dashboard_pictures.draw(prometheus.url, path, 2.0, tmp_path)
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(tmp_path.glob("dashboard-*.png"))) == 4
