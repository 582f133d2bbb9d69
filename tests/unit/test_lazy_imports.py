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
from lambda_event_bus.telemetry import get_telemetry

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
modules = (
    "sentry_sdk",
    "grpc",
    "opentelemetry.propagators.aws",
    "lambda_event_bus.telemetry.tracing.otlp_http",
    "opentelemetry.exporter.otlp.proto.http",
    "requests",
    "google.protobuf",
    "boto3",
    "opentelemetry.propagate",
    "snapshot_restore_py",
)
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
        # OTLP/HTTP goes through the layer's own sender: neither the SDK's exporter nor `requests` (~45 ms)
        "lambda_event_bus.telemetry.tracing.otlp_http": True,
        "opentelemetry.exporter.otlp.proto.http": False,
        "requests": False,
        # its spans are written by the layer's encoder: protobuf's runtime and the OTLP classes stay unloaded
        "google.protobuf": False,
        "boto3": False,
        # its import scans every package's entry points; nothing here needs the global propagator
        "opentelemetry.propagate": False,
        # SnapStart's hooks only when this environment is initialised for a snapshot
        "snapshot_restore_py": False,
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


FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
DEPLOYED = {
    # what template.yaml gives every function (Globals) and each its own, with nothing listening anywhere
    "AWS_LAMBDA_FUNCTION_NAME": "probe",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "probe",
    "AWS_SECRET_ACCESS_KEY": "probe",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_PROPAGATORS": "tracecontext,baggage",
    "PUSHGATEWAY_URL": "http://127.0.0.1:9",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "KAFKA_SECURITY": "plaintext",
    "IDEMPOTENCY_TABLE": "probe-idempotency",
    "DLQ_URL": "http://127.0.0.1:9/000000000000/dlq",
    "RETRY_QUEUE_URL": "http://127.0.0.1:9/000000000000/retry",
}
FUNCTION_PROBE = """
import json, sys
import app
from lambda_event_bus.bus import aws
modules = (
    "boto3", "requests", "opentelemetry.propagate", "opentelemetry.exporter.otlp.proto.http", "sentry_sdk",
    "google.protobuf",
)
loaded = {name: name in sys.modules for name in modules}
loaded["clients"] = sorted(client.meta.service_model.service_name for client in aws._clients)
print(json.dumps(loaded))
sys.stdout.flush()
import os
os._exit(0)  # not the producer's flush at exit: nothing listens
"""


@pytest.mark.parametrize(
    ("function", "clients"),
    [
        ("ingest", ["dynamodb"]),
        # the shipped subscriptions target SQS and Kafka: no SNS client (~10 ms, ~1 MiB)
        ("consumer", ["dynamodb", "dynamodb", "sqs"]),
        ("cdc", ["sqs"]),
    ],
)
def test_a_function_in_its_deployed_configuration_loads_no_boto3_requests_or_entry_point_scan(
    function: str, clients: list[str]
):
    """botocore's clients without boto3 (~55 ms), the layer's OTLP sender without `requests` (~45 ms) or protobuf,
    and only the clients its configuration uses."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{LAYER}:{FUNCTIONS / function}",
        **DEPLOYED,
    }
    result = subprocess.run(
        [sys.executable, "-c", FUNCTION_PROBE], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "boto3": False,
        "requests": False,
        "opentelemetry.propagate": False,
        "opentelemetry.exporter.otlp.proto.http": False,
        "sentry_sdk": False,
        "google.protobuf": False,
        "clients": clients,
    }


def test_the_layers_propagator_becomes_the_global_one_when_instrumentation_loaded_it_first():
    """Third-party instrumentation imported before the layer finds the layer's propagator (e.g. xray) in use."""
    probe = """
from opentelemetry import propagate
from lambda_event_bus.telemetry import get_telemetry
telemetry = get_telemetry()
print(propagate.get_global_textmap() is telemetry.tracing.propagator)
"""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(LAYER), "OTEL_TRACES_EXPORTER": "none"}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "True"
