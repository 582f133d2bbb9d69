"""Section 5: the flush after the response, in the host executor's sandbox under AWS's runtime client (the layer's
internal extension registers for real): how long the caller waits with the flush inline and after the response,
and the OTLP bytes each span costs when every invocation exports, and when TELEMETRY_EXPORT_INTERVAL_MS lets
invocations that come close together share an export.

Each case is a fresh sandbox (one execution environment) with OTLP to rotel and the Pushgateway: one first
invocation (the cold start, left out), then INVOCATIONS HTTP invocations PACE_S apart, each timed from the
invocation request to the runtime's answer reaching the executor's endpoint (what LocalStack, like Lambda, passes
on to the caller). After a pause longer than the interval, one more invocation exports what was held, and a probe
reads the exporter's counters (spans and bytes sent, after compression) inside the sandbox.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_env import EVENT_PATH, LAYER_PATH, ROOT, Settings
from bench_tables import fmt, render_table

sys.path.insert(0, str(ROOT / "tests"))

INVOCATIONS = 20
PACE_S = 0.1
INTERVAL_MS = 1000

HANDLER = """
from lambda_event_bus.telemetry import get_telemetry

telemetry = get_telemetry()
exporter = telemetry.tracing.otlp_exporter


@telemetry.http_handler
def http(event, context):
    return {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": "{}"}


@telemetry.lambda_handler
def probe(event, context):
    return {
        "spans": getattr(exporter, "spans_sent", 0),
        "bytes": getattr(exporter, "bytes_sent", 0),
        "after_response": telemetry.flushes_after_response,
    }


def handler(event, context):
    return probe(event, context) if event.get("probe") else http(event, context)
"""


@dataclass(frozen=True)
class FlushModeCase:
    key: str
    label: str
    env: Mapping[str, str]


GZIP = {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
CASES: tuple[FlushModeCase, ...] = (
    FlushModeCase("off", "telemetry off (OTEL_SDK_DISABLED=true): the reference", {"OTEL_SDK_DISABLED": "true"}),
    FlushModeCase("inline", "inline flush, every invocation exports", {"TELEMETRY_FLUSH": "inline"}),
    FlushModeCase(
        "inline_gzip", "inline flush, gzip", {"TELEMETRY_FLUSH": "inline", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    ),
    FlushModeCase("after", "after the response, every invocation exports", {}),
    FlushModeCase("after_gzip", "after the response, gzip", GZIP),
    FlushModeCase(
        "after_interval",
        f"after the response, gzip, TELEMETRY_EXPORT_INTERVAL_MS={INTERVAL_MS}",
        {**GZIP, "TELEMETRY_EXPORT_INTERVAL_MS": str(INTERVAL_MS)},
    ),
)


@dataclass
class FlushModeResult:
    case: FlushModeCase
    answer_ms: list[float] = field(default_factory=list)  # each run's median
    bytes_per_span: list[float] = field(default_factory=list)  # none with telemetry off
    error: str = ""

    @property
    def median_answer_ms(self) -> float | None:
        return statistics.median(self.answer_ms) if self.answer_ms else None

    @property
    def median_bytes_per_span(self) -> float | None:
        return statistics.median(self.bytes_per_span) if self.bytes_per_span else None


def _run_case(
    case: FlushModeCase, endpoint: object, folder: Path, telemetry_env: Mapping[str, str]
) -> tuple[float, float | None]:
    """One environment: the median answer time (ms) of its invocations and the OTLP bytes per span it sent."""
    from support.sandbox import SandboxLauncher

    launcher = SandboxLauncher(endpoint, folder)  # type: ignore[arg-type]
    try:
        environment = launcher.start(
            "app.handler",
            HANDLER,
            layer_links={"python": LAYER_PATH},
            runtime_python=Path(sys.executable),
            env={
                "AWS_LAMBDA_FUNCTION_NAME": f"bench-{case.key}",
                "AWS_REGION": "eu-west-1",
                "OTEL_SERVICE_NAME": "bench",
                **telemetry_env,
                **case.env,
            },
        )
        ready = environment.endpoint.next()
        if ready.path != "status/env1/ready":
            raise RuntimeError(f"the sandbox reported {ready.path}")
        event = json.loads(EVENT_PATH.read_text())
        environment.invoke(event)  # the cold start
        times = []
        for _ in range(INVOCATIONS):
            time.sleep(PACE_S)
            sent = time.time()
            kind, _, _ = environment.invoke(event)
            if kind != "response":
                raise RuntimeError(f"an invocation ended in {kind}")
            times.append((environment.last_answer_at - sent) * 1000)
        time.sleep(INTERVAL_MS / 1000 + 0.2)
        environment.invoke(event)  # after a pause: exports what the interval held
        time.sleep(0.3)
        kind, counters, _ = environment.invoke({"probe": True})
        if kind != "response" or ("OTEL_SDK_DISABLED" not in case.env and not counters["spans"]):
            raise RuntimeError(f"the probe answered {kind}: {counters}")
        environment.terminate()
        return statistics.median(times), counters["bytes"] / counters["spans"] if counters["spans"] else None
    finally:
        launcher.stop_all()


def measure(runs: int, telemetry_env: Mapping[str, str]) -> list[FlushModeResult]:
    """`runs` environments per case, cases alternated."""
    from support.sandbox import RecordingEndpoint

    results = [FlushModeResult(case) for case in CASES]
    endpoint = RecordingEndpoint()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-after-") as scratch:
            for run in range(runs):
                for index, result in enumerate(results):
                    if result.error:
                        continue
                    folder = Path(scratch) / f"{run}-{index}"
                    folder.mkdir()
                    try:
                        answer_ms, per_span = _run_case(result.case, endpoint, folder, telemetry_env)
                    except Exception as error:  # a case that cannot run is reported in its row
                        result.error = f"{type(error).__name__}: {error}"[:200]
                        continue
                    result.answer_ms.append(answer_ms)
                    if per_span is not None:
                        result.bytes_per_span.append(per_span)
    finally:
        endpoint.close()
    return results


def over_off(results: Sequence[FlushModeResult], key: str) -> float | None:
    """Milliseconds the case's answers took over telemetry off's."""
    by_key = {result.case.key: result.median_answer_ms for result in results}
    measured, off = by_key.get(key), by_key.get("off")
    return None if measured is None or off is None else measured - off


def by_key(results: Sequence[FlushModeResult], key: str) -> FlushModeResult | None:
    return next((result for result in results if result.case.key == key), None)


def table(results: Sequence[FlushModeResult], settings: Settings) -> str:
    headers = ["case", "answer median ms", "+ms vs off", "OTLP bytes/span"]
    rows = [
        [
            result.case.label,
            result.error or fmt(result.median_answer_ms, 2),
            "" if result.case.key == "off" else fmt(over_off(results, result.case.key), 2),
            fmt(result.median_bytes_per_span, 0),
        ]
        for result in results
    ]
    notes = [
        "A fresh sandbox per run (the host executor, AWS's runtime client, the layer's internal extension),",
        f"{INVOCATIONS} HTTP invocations {PACE_S * 1000:.0f} ms apart after the cold start, each from the invocation",
        "request to the runtime's answer at the executor's endpoint; spans to rotel and metrics to the Pushgateway;",
        "bytes as sent (after compression), counted by the exporter; +ms vs off = the flush's and the wrapper's share",
        f"of the answer; median of {settings.cold_runs} runs, cases alternated.",
    ]
    return render_table("5. Flush inline and after the response (execution environment)", headers, rows, notes)
