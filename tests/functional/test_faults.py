"""Telemetry backends that are down or hang never fail an invocation, never cost more than the configured
bound, are counted, and are skipped while they back off."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from samhost.processes import free_port
from support.context import LambdaContext
from support.sentry_stub import SilentServer

pytestmark = pytest.mark.servers

BOUND_MS = 300
# thread start-up, the failure log line and the metric updates: small and fixed, whatever the backend does
OVERHEAD_S = 0.15


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def scenarios(silent: SilentServer) -> dict[str, dict[str, str]]:
    hung = f"http://127.0.0.1:{silent.port}"
    return {
        "pushgateway-down": {"PUSHGATEWAY_URL": closed_url()},
        "pushgateway-hanging": {"PUSHGATEWAY_URL": hung},
        "otlp-http-down": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": closed_url()},
        "otlp-http-hanging": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": hung},
        "otlp-grpc-hanging": {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": hung,
        },
        "sentry-down": {"SENTRY_DSN": closed_url().replace("http://", "http://key@") + "/1"},
        "sentry-hanging": {"SENTRY_DSN": hung.replace("http://", "http://key@") + "/1"},
        "everything-hanging": {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": hung,
            "PUSHGATEWAY_URL": hung,
            "SENTRY_DSN": hung.replace("http://", "http://key@") + "/1",
        },
    }


SCENARIOS = [
    "pushgateway-down",
    "pushgateway-hanging",
    "otlp-http-down",
    "otlp-http-hanging",
    "otlp-grpc-hanging",
    "sentry-down",
    "sentry-hanging",
    "everything-hanging",
]
BACKENDS = {
    "pushgateway": ("pushgateway",),
    "otlp": ("otlp",),
    "sentry": ("sentry",),
    "everything": ("otlp", "pushgateway", "sentry"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failing_backend_costs_at_most_the_bound_and_is_counted(scenario, silent, make_telemetry):
    telemetry = make_telemetry(TELEMETRY_FLUSH_TIMEOUT_MS=str(BOUND_MS), **scenarios(silent)[scenario])

    @telemetry.http_handler
    def handler(event, context):
        if event.get("fail"):
            telemetry.capture_error(ValueError("handled"), "test", "fail")  # gives Sentry something to send
        return {"statusCode": 200, "body": "ok"}

    event = {"httpMethod": "GET", "resource": "/ping", "path": "/ping", "fail": True}
    started = time.monotonic()
    response = handler(event, LambdaContext())
    elapsed = time.monotonic() - started

    assert response == {"statusCode": 200, "body": "ok"}, "the handler's result is untouched"
    assert elapsed < BOUND_MS / 1000 + OVERHEAD_S
    backends = BACKENDS[scenario.split("-")[0]]
    for backend in backends:
        failures = sum(
            telemetry.metrics.value("telemetry_export_failures_total", backend=backend, reason=reason) or 0
            for reason in ("error", "timeout", "busy")
        )
        assert failures == 1, backend

    # the next invocation skips the failed backends while they back off: no cost at all
    started = time.monotonic()
    assert handler(event, LambdaContext()) == response
    assert time.monotonic() - started < OVERHEAD_S
    for backend in backends:
        assert telemetry.metrics.value("telemetry_export_skipped_total", backend=backend) == 1, backend


def test_the_handlers_exception_passes_through_untouched_when_backends_are_down(silent, make_telemetry):
    telemetry = make_telemetry(TELEMETRY_FLUSH_TIMEOUT_MS=str(BOUND_MS), **scenarios(silent)["everything-hanging"])

    class OrderRejectedError(Exception):
        pass

    @telemetry.lambda_handler
    def handler(event, context):
        raise OrderRejectedError("out of stock")

    started = time.monotonic()
    with pytest.raises(OrderRejectedError, match="out of stock"):
        handler({}, LambdaContext())
    assert time.monotonic() - started < BOUND_MS / 1000 + OVERHEAD_S


def test_the_flush_never_outlives_the_invocation(silent, make_telemetry):
    telemetry = make_telemetry(TELEMETRY_FLUSH_TIMEOUT_MS="5000", PUSHGATEWAY_URL=f"http://127.0.0.1:{silent.port}")
    handler = telemetry.lambda_handler(lambda event, context: "done")
    context = LambdaContext(timeout_s=0.4)  # 400 ms left: the flush may use what is left minus the margin
    started = time.monotonic()
    assert handler({}, context) == "done"
    assert time.monotonic() - started < 0.4
