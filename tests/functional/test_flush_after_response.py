"""The layer's flush after the response: its internal Lambda extension, in the host executor's sandbox under AWS's
runtime client, pushing to the real Pushgateway. The Pushgateway stamps each push (`push_time_seconds`), which
tells whether metrics went out before or after the invocation's answer."""

from __future__ import annotations

import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from localbus.client import wait_until
from support.pushgateway import samples
from support.sandbox import Environment, SandboxLauncher

pytestmark = pytest.mark.servers

LAYER_SOURCE = Path(__file__).resolve().parents[2] / "functions" / "observability_layer"
EXTENSION_READY = "EXTENSION\tName: eventbus-telemetry\tState: Ready\tEvents: [INVOKE]"
HANDLER = """
from lambda_event_bus.telemetry import get_telemetry

telemetry = get_telemetry()


@telemetry.lambda_handler
def handler(event, context):
    return {"after_response": telemetry.flushes_after_response}
"""


def start(
    sandboxes: SandboxLauncher, pushgateway: str, mode: str, telemetry: dict[str, str] | None = None
) -> tuple[Environment, str]:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    environment = sandboxes.start(
        "app.handler",
        HANDLER,
        layer_links={"python": LAYER_SOURCE},  # the layer's packages; its dependencies are this venv's
        runtime_python=Path(sys.executable),
        env={
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_REGION": "us-east-1",
            "PUSHGATEWAY_URL": pushgateway,
            "OTEL_TRACES_EXPORTER": "none",
            "TELEMETRY_FLUSH": mode,
            **(telemetry or {}),
        },
    )
    assert environment.endpoint.next().path == "status/env1/ready"
    return environment, name


def push_times(pushgateway: str, job: str) -> list[float]:
    return [s.value for s in samples(pushgateway) if s.name == "push_time_seconds" and s.labels.get("job") == job]


def wait_for_push(pushgateway: str, job: str, after: float = 0.0, timeout: float = 10.0) -> float:
    return wait_until(
        lambda: max((stamp for stamp in push_times(pushgateway, job) if stamp > after), default=None),
        f"a push of {job} after {after}",
        timeout,
        every=0.05,
    )


@pytest.fixture
def hung_collector() -> Iterator[str]:
    """An OTLP endpoint that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_the_extension_flushes_after_the_answer_and_pushes_the_final_values_at_shutdown(
    sandboxes: SandboxLauncher, pushgateway: str, hung_collector: str
) -> None:
    # spans go first and wait out their share (1 s) of a 2 s budget: an inline flush would hold the answer as long
    slow_spans = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": hung_collector,
        "TELEMETRY_FLUSH_TIMEOUT_MS": "2000",
        "TELEMETRY_BACKOFF_SECONDS": "0",
    }
    environment, job = start(sandboxes, pushgateway, "auto", slow_spans)
    sent = time.time()
    kind, body, logs = environment.invoke({})
    assert (kind, body) == ("response", {"after_response": True})
    assert EXTENSION_READY in logs.splitlines()
    answered = environment.last_answer_at
    assert answered - sent < 0.8, "the answer did not wait for the flush"
    first_push = wait_for_push(pushgateway, job)
    assert first_push > answered, "the metrics went out after the answer"

    # the extension asked for the next event after its flush: the environment takes the next invocation
    kind, body, _ = environment.invoke({})
    assert kind == "response"
    second_push = wait_for_push(pushgateway, job, after=first_push)
    assert second_push >= environment.last_answer_at

    # with an extension registered, reaping the environment sends SIGTERM: the layer pushes its final values and
    # leaves the group (a delete would lose what Prometheus has not scraped yet)
    assert environment.terminate() == 0
    (final_push,) = push_times(pushgateway, job)
    assert final_push > second_push


def test_inline_flushes_before_the_answer_and_the_group_outlives_the_environment(
    sandboxes: SandboxLauncher, pushgateway: str
) -> None:
    environment, job = start(sandboxes, pushgateway, "inline")
    kind, body, logs = environment.invoke({})
    assert (kind, body) == ("response", {"after_response": False})
    assert "EXTENSION" not in logs
    (pushed,) = push_times(pushgateway, job)
    assert pushed <= environment.last_answer_at, "the metrics went out before the answer"

    # no extension, no SIGTERM: the group stays until MaintenanceFunction deletes stale groups
    assert environment.terminate() == 0
    assert push_times(pushgateway, job) == [pushed]


def invocations_pushed(pushgateway: str, job: str) -> float:
    return sum(
        s.value
        for s in samples(pushgateway)
        if s.name == "lambda_invocations_total" and s.labels.get("job") == job and s.labels.get("outcome") == "success"
    )


def test_with_an_export_interval_a_burst_is_pushed_once_and_nothing_is_lost(
    sandboxes: SandboxLauncher, pushgateway: str
) -> None:
    environment, job = start(sandboxes, pushgateway, "auto", {"TELEMETRY_EXPORT_INTERVAL_MS": "3000"})
    assert environment.invoke({})[0] == "response"
    first_push = wait_for_push(pushgateway, job)  # the first invocation exports
    burst_started = time.monotonic()
    for _ in range(3):
        assert environment.invoke({})[0] == "response"
    time.sleep(0.3)  # a due flush runs right after the answer: it would have pushed by now
    assert time.monotonic() - burst_started < 2.5, "the burst took longer than the interval: nothing to check"
    assert push_times(pushgateway, job) == [first_push], "the burst's metrics are held back"
    assert invocations_pushed(pushgateway, job) == 1

    time.sleep(3.0)  # an invocation after a pause exports at once, with what the burst held
    assert environment.invoke({})[0] == "response"
    wait_for_push(pushgateway, job, after=first_push)
    assert invocations_pushed(pushgateway, job) == 5

    assert environment.invoke({})[0] == "response"  # held again, and sent by the shutdown flush
    assert environment.terminate() == 0
    assert invocations_pushed(pushgateway, job) == 6
