"""The shipped Prometheus config and alert rules pass promtool, and the rules use catalog metrics only."""

from __future__ import annotations

import re
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hoststack.servers import PROMETHEUS_ASSETS
from lambda_event_bus.telemetry.metrics import CATALOG
from samhost.processes import binary


def test_config_and_rules_pass_promtool(tmp_path: Path):
    config = string.Template((PROMETHEUS_ASSETS / "prometheus.yml").read_text()).substitute(
        PUSHGATEWAY="127.0.0.1:9091"
    )
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "alerts.yml").write_text((PROMETHEUS_ASSETS / "alerts.yml").read_text())
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout + result.stderr


PUSHGATEWAY_OWN = {"push_time_seconds"}  # the Pushgateway's own series, one per group


def test_alert_rules_only_reference_catalog_metrics():
    expressions = " ".join(rule["expr"] for rule in RULES.values())
    referenced = set(re.findall(r"\b([a-z_]+(?:_total|_seconds|_status))(?:_bucket)?\b", expressions))
    catalog = {spec.name for spec in CATALOG}
    assert referenced
    assert referenced <= catalog | PUSHGATEWAY_OWN, referenced - catalog


RULES: dict[str, dict[str, Any]] = {
    rule["alert"]: rule
    for group in yaml.safe_load((PROMETHEUS_ASSETS / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]
}
CONSUMER = 'job="event-bus-consumer", instance="env-1"'
# alert: (input series, interval, evaluated at, the alert's labels, its summary, or None: the quiet case)
CASES: list[tuple[str, dict[str, str], str, str, dict[str, str], str | None]] = [
    (
        "EventBusHttpErrorRate",
        {
            'http_requests_total{job="event-bus-ingest", instance="a", status="503"}': "0+10x30",
            'http_requests_total{job="event-bus-ingest", instance="b", status="202"}': "0+10x30",
        },
        "1m",
        "15m",
        {"job": "event-bus-ingest"},
        "event-bus-ingest: more than 5% of HTTP requests fail with 5xx",
    ),
    (
        "EventBusHttpErrorRate",
        {'http_requests_total{job="event-bus-ingest", instance="b", status="202"}': "0+10x30"},
        "1m",
        "15m",
        {},
        None,
    ),
    (
        "EventProcessingErrors",
        {
            f'event_processing_errors_total{{{CONSUMER}, event_type="unknown", source="unknown", '
            'error_type="PoisonRecordError"}': "0+1x30"
        },
        "1m",
        "20m",
        {"job": "event-bus-consumer", "event_type": "unknown", "error_type": "PoisonRecordError"},
        "event-bus-consumer: unknown events fail with PoisonRecordError",
    ),
    (
        "EventBusDeadLetters",
        {
            f'deliveries_total{{{CONSUMER}, subscription="orders-webhook", target_type="webhook", '
            'outcome="dead_lettered"}': "0x5 1x10",
            f'deliveries_total{{{CONSUMER}, subscription="orders-webhook", target_type="webhook", '
            'outcome="delivered"}': "0+5x15",
        },
        "1m",
        "10m",
        {"job": "event-bus-consumer", "subscription": "orders-webhook"},
        "orders-webhook: deliveries were dead-lettered",
    ),
    (
        "EventBusDeadLetters",
        {f'deliveries_total{{{CONSUMER}, subscription="s", target_type="sqs", outcome="delivered"}}': "0+5x15"},
        "1m",
        "10m",
        {},
        None,
    ),
    (
        "KafkaConsumerLagHigh",
        {
            f'kafka_consumer_lag_seconds_bucket{{{CONSUMER}, topic="orders", le="60"}}': "0x30",
            f'kafka_consumer_lag_seconds_bucket{{{CONSUMER}, topic="orders", le="600"}}': "0+10x30",
            f'kafka_consumer_lag_seconds_bucket{{{CONSUMER}, topic="orders", le="+Inf"}}': "0+10x30",
        },
        "1m",
        "20m",
        {"topic": "orders"},
        "Records on orders are processed more than 5 minutes after they were written",
    ),
    (
        "KafkaConsumerLagHigh",
        {
            f'kafka_consumer_lag_seconds_bucket{{{CONSUMER}, topic="orders", le="60"}}': "0+10x30",
            f'kafka_consumer_lag_seconds_bucket{{{CONSUMER}, topic="orders", le="+Inf"}}': "0+10x30",
        },
        "1m",
        "20m",
        {},
        None,
    ),
    (
        "CdcLagHigh",
        {
            'cdc_lag_seconds_bucket{job="event-bus-cdc", connector="pg", table="orders", le="60"}': "0x30",
            'cdc_lag_seconds_bucket{job="event-bus-cdc", connector="pg", table="orders", le="3600"}': "0+4x30",
            'cdc_lag_seconds_bucket{job="event-bus-cdc", connector="pg", table="orders", le="+Inf"}': "0+4x30",
        },
        "1m",
        "20m",
        {"connector": "pg", "table": "orders"},
        "Changes of orders (pg) reach the bus late",
    ),
    (
        "CdcConnectorDown",
        {'cdc_connector_status{job="event-bus-maintenance", connector="orders-db"}': "0x20"},
        "1m",
        "10m",
        {"connector": "orders-db"},
        "CDC connector orders-db is not running",
    ),
    (
        "CdcConnectorDown",
        {'cdc_connector_status{job="event-bus-maintenance", connector="orders-db"}': "1x20"},
        "1m",
        "10m",
        {},
        None,
    ),
    (
        "TelemetryBackendFailing",
        {'telemetry_export_failures_total{job="event-bus-ingest", backend="otlp", reason="timeout"}': "0+1x10"},
        "1m",
        "5m",
        {"job": "event-bus-ingest", "backend": "otlp"},
        "event-bus-ingest cannot export telemetry to otlp",
    ),
    (
        "MetricLabelCardinalityOverflow",
        {
            'metric_label_overflow_total{job="event-bus-ingest", metric="http_requests_total", label="endpoint"}': (
                "0+1x10"
            )
        },
        "1m",
        "10m",
        {"job": "event-bus-ingest", "metric": "http_requests_total", "label": "endpoint"},
        "http_requests_total: label endpoint hit its value limit; new values are folded",
    ),
    (
        "PushgatewayGroupsStale",
        {'push_time_seconds{job="event-bus-ingest", instance="gone"}': "0x320"},
        "5m",
        "26h",
        {},
        "1 Pushgateway groups have not been pushed for a day",
    ),
    (
        "PushgatewayGroupsStale",
        {'push_time_seconds{job="event-bus-ingest", instance="alive"}': "0+300x320"},
        "5m",
        "26h",
        {},
        None,
    ),
]


def test_every_rule_has_a_runbook_and_a_promtool_case():
    assert all(rule["annotations"].get("runbook") for rule in RULES.values())
    assert {case[0] for case in CASES} == set(RULES)


@pytest.mark.parametrize("case", CASES, ids=[f"{case[0]}-{'fires' if case[5] else 'quiet'}" for case in CASES])
def test_each_rule_fires_on_its_series_and_stays_quiet_otherwise(tmp_path: Path, case):
    """`promtool test rules`: the rule evaluated over synthetic series, as Prometheus would."""
    alert, series, interval, at, labels, summary = case
    rule = RULES[alert]
    expected = (
        [
            {
                "exp_labels": {**labels, **rule["labels"]},
                "exp_annotations": {"summary": summary, "runbook": rule["annotations"]["runbook"]},
            }
        ]
        if summary
        else []
    )
    tests = {
        "rule_files": [str(PROMETHEUS_ASSETS / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": interval,
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(tmp_path / "test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
