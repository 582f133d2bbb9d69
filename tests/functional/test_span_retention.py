"""Spans whose export failed are kept and exported once the collector answers again: a real OTLP receiver
(rotel) stopped and started on the same ports, spans from before and during the outage, at the next flush and
at shutdown; a down collector still costs an invocation no more than the flush budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hoststack import servers
from samhost.processes import port_of
from support.context import LambdaContext

pytestmark = pytest.mark.servers

BUDGET_MS = 400


class Receiver:
    def __init__(self, log_dir: Path, kafka: str) -> None:
        self.log_dir, self.kafka = log_dir, kafka
        self.server = servers.start_rotel(log_dir, kafka)
        grpc, http = (port_of(url) for url in (self.server.grpc_endpoint, self.server.http_endpoint))
        self.ports = (grpc, http)

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        self.server = servers.start_rotel(self.log_dir, self.kafka, ports=self.ports)


@pytest.fixture
def receiver(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Receiver]:
    receiver = Receiver(tmp_path, kafka_bootstrap)
    yield receiver
    receiver.stop()


def traced(telemetry):
    @telemetry.lambda_handler
    def handler(event, context):
        with telemetry.span(f"work {event['n']}"):
            pass
        return event["n"]

    return handler


def names(receiver: Receiver, service: str, wanted: set[str]) -> set[str]:
    spans = receiver.server.store.wait_for(lambda found: wanted <= {s.name for s in found}, service, timeout=20)
    return {span.name for span in spans}


def test_spans_from_before_and_during_an_outage_arrive_once_the_collector_is_back(
    receiver, make_telemetry, service_name
):
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.server.http_endpoint,
        TELEMETRY_FLUSH_TIMEOUT_MS=str(BUDGET_MS),
        TELEMETRY_BACKOFF_SECONDS="0",
    )
    handler = traced(telemetry)
    assert handler({"n": 0}, LambdaContext()) == 0
    receiver.stop()
    for n in (1, 2, 3):
        started = time.monotonic()
        assert handler({"n": n}, LambdaContext()) == n, "a down collector never fails an invocation"
        assert time.monotonic() - started < BUDGET_MS / 1000 + 0.25, "nor slows it beyond the flush budget"
    assert telemetry.metrics.value("telemetry_spans_retained") > 0
    receiver.start_again()
    handler({"n": 4}, LambdaContext())

    wanted = {f"work {n}" for n in range(5)}
    assert wanted <= names(receiver, service_name, wanted)
    assert telemetry.metrics.value("telemetry_spans_retained") == 0


def test_spans_kept_through_an_outage_go_out_at_shutdown(receiver, make_telemetry, service_name):
    telemetry = make_telemetry(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.server.http_endpoint,
        TELEMETRY_FLUSH_TIMEOUT_MS=str(BUDGET_MS),
    )
    handler = traced(telemetry)
    receiver.stop()
    handler({"n": 7}, LambdaContext())  # its export fails: kept, and the backend backs off
    receiver.start_again()
    telemetry.shutdown(timeout_s=2.0)
    assert {"work 7"} <= names(receiver, service_name, {"work 7"})
