"""IngestFunction under SnapStart, emulated (samhost.snapstart): initialised once, snapshotted, restored into two
environments that each answer a request. Restored environments must not share what init left in memory: each
draws its own trace ids, pushes to its own Pushgateway group, and produces to Kafka over its own connection."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from functional.test_ingest import api_request, base_env, cloud_event
from samhost.snapstart import restore
from support.kafka import header, read_topic
from support.pushgateway import groups

pytestmark = pytest.mark.servers

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
INGEST = FUNCTIONS / "ingest"
LAYER = FUNCTIONS / "observability_layer"


def test_two_restored_environments_have_their_own_ids_groups_and_connections(
    kafka_bootstrap, pushgateway, otlp_receiver, service_name
):
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **base_env(
            kafka_bootstrap,
            OTEL_SERVICE_NAME=service_name,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.http_endpoint,
            PUSHGATEWAY_URL=pushgateway,
        ),
    }
    events = [cloud_event(id=f"snap-{uuid.uuid4().hex}") for _ in range(2)]
    requests = [
        [api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})]
        for event in events
    ]

    restored = restore(
        INGEST, "app.handler", environment, requests, layers=[LAYER], observe="telemetry.instance_id", timeout_s=60
    )

    assert [env.calls[0]["answer"]["statusCode"] for env in restored] == [202, 202]
    first, second = restored
    assert first.observed != second.observed, "each restored environment has an id of its own"
    records = [
        read_topic(kafka_bootstrap, "orders", 1, 15, accept=lambda m, e=event: header(m, "ce_id") == e["id"].encode())
        for event in events
    ]
    trace_ids = [header(found[0], "traceparent").decode().split("-")[1] for found in records]
    assert trace_ids[0] != trace_ids[1], "trace ids drawn from a random state both environments restored"
    instances = {
        group["labels"].get("instance") for group in groups(pushgateway) if group["labels"].get("job") == service_name
    }
    assert instances == {first.observed, second.observed}
