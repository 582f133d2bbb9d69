"""The cold-start benchmark's child harness still runs: a case's init, its two calls and its peak memory come back
(make bench is not part of the suite; this keeps its harness from breaking unseen)."""

from __future__ import annotations

import os

from perf import cold_start


def test_a_cold_start_child_reports_init_two_calls_and_peak_memory():
    closed = "http://127.0.0.1:9"  # nothing listens: each flush fails fast, the calls still answer
    telemetry_env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": closed, "PUSHGATEWAY_URL": closed}
    cases = {case.key: case for case in cold_start.cases(lambda code_uri: {}, telemetry_env)}
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_LAMBDA_FUNCTION_NAME": "bench-fn"}

    layer = cold_start.run_once(cases["layer"], base)
    assert layer["init"] > 0
    assert len(layer["calls"]) == 2
    assert "'statusCode': 202" in layer["answer"]
    assert layer["hwm"] > cold_start.run_once(cases["baseline"], base)["hwm"]
