"""At the end of an execution environment (SIGTERM in Lambda) the layer pushes its final values and leaves its
Pushgateway group (deleting it would throw away what was pushed since Prometheus last scraped it; the group is
MaintenanceFunction's to delete once it is stale), and exits within Lambda's shutdown phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import pushgateway as gateway

pytestmark = pytest.mark.servers

LAYER = Path(__file__).resolve().parents[2] / "functions" / "observability_layer"

ENVIRONMENT_PROCESS = """
import sys, time
from lambda_event_bus.telemetry import get_telemetry

telemetry = get_telemetry()
telemetry.lambda_handler(lambda event, context: None)({}, None)
telemetry.record_business_metric("orders_after_the_last_flush", 1, kind="counter")  # only the final push has it
print(telemetry.instance_id, flush=True)
time.sleep(60)
"""


def final_orders(pushgateway: str, instance: str) -> float | None:
    for sample in gateway.samples(pushgateway):
        if sample.name.startswith("orders_after_the_last_flush") and sample.labels.get("instance") == instance:
            return sample.value
    return None


def test_sigterm_pushes_the_final_values_leaves_the_group_and_exits_promptly(pushgateway):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(LAYER),
        "AWS_LAMBDA_FUNCTION_NAME": "shutdown-probe",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "OTEL_TRACES_EXPORTER": "none",
        "PUSHGATEWAY_URL": pushgateway,
    }
    process = subprocess.Popen([sys.executable, "-c", ENVIRONMENT_PROCESS], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        instance = process.stdout.readline().strip()
        assert instance in {group["labels"].get("instance") for group in gateway.groups(pushgateway)}
        assert final_orders(pushgateway, instance) is None

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 0.5, "inside Lambda's 500 ms shutdown phase"
        assert instance in {group["labels"].get("instance") for group in gateway.groups(pushgateway)}, "left"
        assert final_orders(pushgateway, instance) == 1, "the final push carries what came after the last flush"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
