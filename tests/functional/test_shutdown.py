"""At the end of an execution environment (SIGTERM in Lambda) the layer deletes its Pushgateway group
and exits within Lambda's shutdown phase."""

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
from observability import get_telemetry

telemetry = get_telemetry()
telemetry.lambda_handler(lambda event, context: None)({}, None)
print(telemetry.instance_id, flush=True)
time.sleep(60)
"""


def test_sigterm_deletes_the_group_and_exits_promptly(pushgateway):
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

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 0.5, "inside Lambda's 500 ms shutdown phase"
        assert instance not in {group["labels"].get("instance") for group in gateway.groups(pushgateway)}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
