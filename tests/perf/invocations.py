"""Sections 2 and 3 of `make bench`: a trivial handler wrapped by each library, called in-process many times in a
worker process of its own (so that no library's global patches leak into another's numbers), with no backend or
flushing to real servers. `python invocations.py --worker BUILDER ...` is such a worker."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cold_start
from bench_env import (
    CLOSED_SENTRY_DSN,
    EVENT_PATH,
    OTEL_HANDLER_MODULE,
    WORKER_TIMEOUT_S,
    Handler,
    Settings,
    clean_env,
    missing_modules,
)
from bench_tables import fmt, fmt_ratio, percentile, render_table, status_cell, status_notes
from cold_requests import LambdaContext


def trivial_handler(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": '{"accepted":true}'}


@dataclass
class Prepared:
    """A wrapped handler ready to call, and what the worker reports about it after the loop."""

    handler: Handler
    describe: Callable[[], str] = lambda: ""
    wire: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """(spans, OTLP request bytes) exported so far."""


def build_bare() -> Prepared:
    return Prepared(trivial_handler)


def describe_flush(telemetry: Any) -> Callable[[], str]:
    """A note on what the flush steps did, from the layer's own telemetry_* counters."""

    def describe() -> str:
        metrics = telemetry.metrics
        notes = []
        for backend in telemetry.flusher.backends:
            counts = {
                reason: metrics.value("telemetry_export_failures_total", backend=backend, reason=reason) or 0
                for reason in ("error", "timeout", "busy")
            }
            counts["skipped"] = metrics.value("telemetry_export_skipped_total", backend=backend) or 0
            done = ", ".join(f"{int(count)} {reason}" for reason, count in counts.items() if count)
            notes.append(f"{backend}: {done or 'all ok'}")
        return "; ".join(notes)

    return describe


def build_ours_http() -> Prepared:
    from lambda_event_bus.telemetry import Telemetry

    telemetry = Telemetry.from_environment(dict(os.environ))
    exporter = telemetry.tracing.otlp_exporter

    def wire() -> tuple[int, int]:
        return getattr(exporter, "spans_sent", 0), getattr(exporter, "bytes_sent", 0)

    return Prepared(telemetry.http_handler(trivial_handler), describe_flush(telemetry), wire)


def build_ours_lambda() -> Prepared:
    from lambda_event_bus.telemetry import Telemetry

    telemetry = Telemetry.from_environment(dict(os.environ))
    return Prepared(telemetry.lambda_handler(trivial_handler), describe_flush(telemetry))


def build_powertools() -> Prepared:
    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    logger = Logger()
    metrics = Metrics()

    @logger.inject_lambda_context
    @metrics.log_metrics
    def handler(event: Any, context: Any) -> dict[str, Any]:
        metrics.add_metric(name="requests", unit=MetricUnit.Count, value=1)  # ours counts requests unasked
        return trivial_handler(event, context)

    return Prepared(handler)


def build_sentry() -> Prepared:
    import sentry_sdk
    from sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration, _wrap_handler

    traces = os.environ.get("BENCH_SENTRY_TRACES_SAMPLE_RATE")
    sentry_sdk.init(
        dsn=CLOSED_SENTRY_DSN,
        integrations=[AwsLambdaIntegration()],
        traces_sample_rate=float(traces) if traces else None,
    )
    # The integration wraps the handler from the Lambda bootstrap; outside Lambda, apply its wrapper directly.
    return Prepared(_wrap_handler(trivial_handler))


def build_otel_lambda() -> Prepared:
    """AwsLambdaInstrumentor wraps `_HANDLER` (module.function) in place; a module made here stands in for
    the function's file. BENCH_OTLP_ENDPOINT set: spans go through a BatchSpanProcessor to it (the
    instrumentor force-flushes it at the end of every invocation); unset: no span processor at all."""
    import types

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def __init__(self, delegate: SpanExporter) -> None:
            self.delegate = delegate
            self.results: dict[str, int] = {}
            self.spans = 0
            self.bytes = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = self.delegate.export(spans)
            self.results[result.name] = self.results.get(result.name, 0) + 1
            if result is SpanExportResult.SUCCESS:  # the same encoder the exporter sends with: the same bytes
                self.spans += len(spans)
                self.bytes += encode_spans(spans).ByteSize()
            return result

        def shutdown(self) -> None:
            self.delegate.shutdown()

    module = types.ModuleType(OTEL_HANDLER_MODULE)
    module.handler = trivial_handler  # type: ignore[attr-defined]
    sys.modules[OTEL_HANDLER_MODULE] = module
    os.environ["_HANDLER"] = f"{OTEL_HANDLER_MODULE}.handler"
    provider = TracerProvider()
    exporter: CountingExporter | None = None
    endpoint = os.environ.get("BENCH_OTLP_ENDPOINT")
    if endpoint:
        exporter = CountingExporter(OTLPSpanExporter(endpoint=endpoint))
        provider.add_span_processor(BatchSpanProcessor(exporter))
    AwsLambdaInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider())

    def describe() -> str:
        if exporter is None:
            return ""
        return "otlp: " + ", ".join(f"{count} {name.lower()}" for name, count in exporter.results.items())

    def wire() -> tuple[int, int]:
        return (exporter.spans, exporter.bytes) if exporter is not None else (0, 0)

    return Prepared(sys.modules[OTEL_HANDLER_MODULE].handler, describe, wire)


BUILDERS: dict[str, Callable[[], Prepared]] = {
    "bare": build_bare,
    "ours_http": build_ours_http,
    "ours_lambda": build_ours_lambda,
    "powertools": build_powertools,
    "sentry": build_sentry,
    "otel_lambda": build_otel_lambda,
}


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """Powertools writes EMF metrics and logs to stdout (CloudWatch's way in): keep them out of the output."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def run_worker(builder: str, iterations: int, warmup: int, out: Path) -> None:
    """Build the case, call it `warmup` + `iterations` times, write the timings (ns) as JSON to `out`.
    The first call (the cold start of the wrapped handler) is kept apart and never part of the warm-up."""
    event = json.loads(EVENT_PATH.read_text())
    context = LambdaContext()
    samples: list[int] = []
    clock = time.perf_counter_ns
    with stdout_to_devnull():
        prepared = BUILDERS[builder]()
        handler = prepared.handler
        started = clock()
        handler(event, context)
        first = clock() - started
        for _ in range(warmup):
            handler(event, context)
        for _ in range(iterations):
            started = clock()
            handler(event, context)
            samples.append(clock() - started)
        note = prepared.describe()
    spans, sent = prepared.wire()
    out.write_text(json.dumps({"first_ns": first, "samples_ns": samples, "note": note, "spans": spans, "bytes": sent}))


@dataclass(frozen=True)
class InvocationCase:
    key: str
    label: str
    builder: str
    requires: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class InvocationResult:
    case: InvocationCase
    first_ns: int | None = None
    samples_ns: list[int] = field(default_factory=list)
    note: str = ""
    spans: int = 0
    bytes_sent: int = 0
    missing: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def bytes_per_span(self) -> float | None:
        return self.bytes_sent / self.spans if self.spans else None

    def median(self, unit_ns: float) -> float | None:
        return statistics.median(self.samples_ns) / unit_ns if self.samples_ns else None

    def p99(self, unit_ns: float) -> float | None:
        return percentile(self.samples_ns, 0.99) / unit_ns if self.samples_ns else None


def run_invocation_case(case: InvocationCase, iterations: int, warmup: int, work_dir: Path) -> InvocationResult:
    result = InvocationResult(case, missing=missing_modules(case.requires))
    if result.missing:
        return result
    out = work_dir / f"{case.key}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", case.builder]
    command += ["--iterations", str(iterations), "--warmup", str(warmup), "--out", str(out)]
    try:
        completed = subprocess.run(
            command, env=clean_env(case.env), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        result.error = f"no result within {WORKER_TIMEOUT_S} s"
        return result
    if completed.returncode != 0 or not out.exists():
        result.error = cold_start.last_line(completed.stderr)
        return result
    data = json.loads(out.read_text())
    result.first_ns = data["first_ns"]
    result.samples_ns = data["samples_ns"]
    result.note = data["note"]
    result.spans = data["spans"]
    result.bytes_sent = data["bytes"]
    return result


# section 2: per-invocation overhead, nothing exported

NO_EXPORT = {"OTEL_TRACES_EXPORTER": "none"}

INVOCATION_CASES: tuple[InvocationCase, ...] = (
    InvocationCase("bare", "bare function", "bare"),
    InvocationCase("ours_http", "ours: @http_handler (export none)", "ours_http", env=NO_EXPORT),
    InvocationCase("ours_lambda", "ours: @lambda_handler (export none)", "ours_lambda", env=NO_EXPORT),
    InvocationCase(
        "powertools",
        "Powertools inject_lambda_context+log_metrics (1 metric, EMF to /dev/null)",
        "powertools",
        requires=("aws_lambda_powertools",),
    ),
    InvocationCase(
        "sentry",
        "sentry AwsLambdaIntegration _wrap_handler (errors only)",
        "sentry",
        requires=("sentry_sdk",),
    ),
    InvocationCase(
        "sentry_traces",
        "sentry AwsLambdaIntegration _wrap_handler (traces_sample_rate=1)",
        "sentry",
        requires=("sentry_sdk",),
        env={"BENCH_SENTRY_TRACES_SAMPLE_RATE": "1.0"},
    ),
    InvocationCase(
        "otel_lambda",
        "OTel AwsLambdaInstrumentor via _HANDLER (no span processor)",
        "otel_lambda",
        requires=("opentelemetry.sdk", "opentelemetry.instrumentation.aws_lambda"),
    ),
)


def invocation_table(results: Sequence[InvocationResult], settings: Settings) -> str:
    by_key = {result.case.key: result for result in results}
    ours_median = by_key["ours_http"].median(1000)
    bare_median = by_key["bare"].median(1000) or 0.0
    headers = ["case", "median us", "p99 us", "+us vs bare", "median vs ours"]
    rows = []
    for result in results:
        status = status_cell(result.missing, result.error)
        if status:
            rows.append([result.case.label, status, "", "", ""])
            continue
        median = result.median(1000)
        rows.append(
            [
                result.case.label,
                fmt(median),
                fmt(result.p99(1000)),
                fmt(None if median is None else median - bare_median),
                fmt_ratio(median, ours_median),
            ]
        )
    notes = [
        f"{settings.invocations} timed calls per case after {settings.warmup} warm-up calls, "
        "each case in a fresh worker process;",
        "no backend configured anywhere: this is the in-process cost of the wrapper alone.",
        *status_notes([(result.case.label, result.missing, result.error) for result in results]),
    ]
    return render_table("2. Per-invocation overhead of a trivial handler", headers, rows, notes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(BUILDERS), required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run_worker(args.worker, args.iterations, args.warmup, args.out)
