"""The functions' AWS clients: botocore's own, from one session whose data loader looks up only the services asked
for (botocore lists all ~450 it ships before loading one), with the same answers for known and unknown services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[2] / "functions" / "observability_layer"

PROBE = """
import sys, time
from lambda_event_bus.bus import aws
import botocore.exceptions, botocore.loaders

calls = []
scan = botocore.loaders.Loader.list_available_services


def counted(self, type_name):
    calls.append(type_name)
    return scan(self, type_name)


botocore.loaders.Loader.list_available_services = counted
sqs = aws.client("sqs")
dynamodb = aws.client("dynamodb")
print(sqs.meta.service_model.service_name, dynamodb.meta.service_model.api_version, sqs.meta.region_name)
print("full scans:", len(calls))
try:
    aws.client("no-such-service")
except botocore.exceptions.UnknownServiceError as error:
    print("unknown:", "no-such-service" in str(error), "dynamodb" in str(error), "sqs" in str(error))
"""


@pytest.fixture
def environ() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(LAYER),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "probe",
        "AWS_SECRET_ACCESS_KEY": "probe",
    }


def test_clients_are_made_without_listing_every_service_and_unknown_ones_still_fail(environ):
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "sqs 2012-08-10 eu-west-1"
    assert lines[1] == "full scans: 0"
    assert lines[2] == "unknown: True True True", "the error lists what botocore knows"
