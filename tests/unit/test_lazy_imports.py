"""Cold start: optional SDKs are imported only when the configuration asks for them.

Measured in a fresh interpreter each time (a warm sys.modules would prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[2] / "functions" / "observability_layer"

PROBE = """
import json, sys
from observability import get_telemetry

telemetry = get_telemetry()

class Context:
    aws_request_id = "r-1"
    function_name = "probe"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:probe"
    def get_remaining_time_in_millis(self):
        return 5000

@telemetry.http_handler
def handler(event, context):
    raise ValueError("boom")

handler({"httpMethod": "GET", "resource": "/x", "path": "/x"}, Context())
modules = ("sentry_sdk", "grpc", "opentelemetry.propagators.aws", "opentelemetry.exporter.otlp.proto.http")
print(json.dumps({name: name in sys.modules for name in modules}))
"""


def loaded_modules(**environ: str) -> dict[str, bool]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(LAYER),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: export fails fast
        "TELEMETRY_FLUSH_TIMEOUT_MS": "200",
        **environ,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_defaults_import_neither_sentry_nor_grpc_nor_xray():
    modules = loaded_modules()
    assert modules == {
        "sentry_sdk": False,
        "grpc": False,
        "opentelemetry.propagators.aws": False,
        "opentelemetry.exporter.otlp.proto.http": True,
    }


@pytest.mark.parametrize(
    ("environ", "module"),
    [
        ({"SENTRY_DSN": "http://key@127.0.0.1:9/1"}, "sentry_sdk"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_PROPAGATORS": "tracecontext,xray"}, "opentelemetry.propagators.aws"),
    ],
)
def test_each_optional_sdk_loads_when_configured(environ: dict[str, str], module: str):
    assert loaded_modules(**environ)[module] is True
