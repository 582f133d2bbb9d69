"""Benchmark: the observability layer side by side with AWS Lambda Powertools, the OpenTelemetry Lambda
instrumentation and sentry-sdk's AwsLambdaIntegration, in one run.

    make bench            # or: make bench ARGS=--quick

Three sections, one table each:

1. Cold start: the import and set-up of each library in a fresh interpreter (a warm sys.modules measures
   nothing), median wall time of N runs above a bare `python -c pass`, and the child's peak RSS (VmHWM).
2. Per invocation: a trivial handler wrapped by each library, called in-process many times, with no
   backend to export to (pure in-process cost). Each case runs in a worker process of its own so that no
   library's global patches (sentry's stdlib integrations, OpenTelemetry's global providers) leak into
   another's numbers.
3. Flush: our wrapped invocation including its end-of-invocation flush against real local servers (rotel
   for OTLP, a Pushgateway), with the collector down, and the OpenTelemetry instrumentor's own flush.

The alternatives are optional: a case whose packages are missing prints "not installed". `make bench`
installs them in .venv-bench (the `bench` group of pyproject.toml), apart from the test venv: the
OpenTelemetry Lambda instrumentation pins semantic-conventions 0.66b1 while the layer's SDK 1.45.2 wants
0.66b2, so it is installed there with --no-deps (it works with 0.66b2).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import budgets
import cold_start
import per_record
from cold_start import ColdResult
from per_record import RecordResult

ROOT = Path(__file__).resolve().parents[2]
LAYER_PATH = ROOT / "functions" / "observability_layer"
INFRA_PATH = ROOT / "infra"
for _path in (LAYER_PATH, INFRA_PATH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

EVENT_PATH = ROOT / "tests" / "events" / "apigw_rest_post_events.json"
CLOSED_SENTRY_DSN = "http://k@127.0.0.1:9/1"
"""Port 9 (discard) has no listener here: sentry-sdk's transport fails fast and nothing leaves the host."""

FUNCTION_NAME = "bench-fn"
OTEL_HANDLER_MODULE = "bench_otel_fn"
WORKER_TIMEOUT_S = 120

Handler = Callable[[Any, Any], Any]
Env = Mapping[str, str]

# every variable any of the libraries reads: a developer's own settings must not leak into a case
ENV_PREFIXES_DROPPED = ("OTEL_", "SENTRY_", "POWERTOOLS_", "AWS_LAMBDA_", "TELEMETRY_", "_X_AMZN")
ENV_NAMES_DROPPED = ("PUSHGATEWAY_URL", "_HANDLER", "ORIG_HANDLER", "AWS_EXECUTION_ENV", "PYTHONDONTWRITEBYTECODE")

LAMBDA_ENV: dict[str, str] = {
    "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_REGION": "eu-west-1",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "OTEL_SERVICE_NAME": "bench",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "bench",
}


@dataclass(frozen=True)
class Settings:
    cold_runs: int
    invocations: int
    warmup: int
    flush_invocations: int
    otel_down_invocations: int

    @classmethod
    def choose(cls, *, quick: bool) -> Settings:
        if quick:
            return cls(cold_runs=3, invocations=300, warmup=30, flush_invocations=40, otel_down_invocations=1)
        return cls(cold_runs=7, invocations=2000, warmup=200, flush_invocations=200, otel_down_invocations=2)


# shared helpers


def clean_env(extra: Env | None = None) -> dict[str, str]:
    """This process's environment without any library's settings, plus the simulated Lambda's and `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ENV_PREFIXES_DROPPED) and key not in ENV_NAMES_DROPPED
    }
    env.update(LAMBDA_ENV)
    env.update(extra or {})
    return env


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (looked up without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            missing.append(module)
    return missing


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the second largest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference <= 0:
        return "-"
    return f"{value / reference:.2f}x"


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *others = cells
        parts = [str(first).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(others, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(headers))
    body = [title, rule, line(headers), rule, *(line(row) for row in rows), rule]
    body += [f"  {note}" for note in notes]
    return "\n".join(body)


def status_cell(missing: Sequence[str], error: str) -> str | None:
    """What a row shows instead of numbers when its case could not run."""
    if missing:
        return "not installed"
    return "failed" if error else None


def status_notes(labelled: Sequence[tuple[str, Sequence[str], str]]) -> list[str]:
    """One note per case that could not run: (label, missing modules, error)."""
    notes = []
    for label, missing, error in labelled:
        if missing:
            notes.append(f"{label}: not installed (cannot import {', '.join(missing)})")
        elif error:
            notes.append(f"{label}: failed: {error}")
    return notes


# section 1: cold start (tests/perf/cold_start.py runs the children)


@dataclass(frozen=True)
class AwsResources:
    """What the functions' deployed configuration names, created in moto's server and on the broker."""

    endpoint: str
    table: str
    queues: dict[str, str]


def create_resources(endpoint: str, bootstrap: str) -> AwsResources:
    import botocore.session
    from confluent_kafka.admin import AdminClient, NewTopic

    session = botocore.session.get_session()
    options = {
        "region_name": "eu-west-1",
        "endpoint_url": endpoint,
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
    }
    session.create_client("dynamodb", **options).create_table(
        TableName="bench-idempotency",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sqs = session.create_client("sqs", **options)
    queues = {name: sqs.create_queue(QueueName=f"bench-{name}")["QueueUrl"] for name in ("dlq", "retry", "fulfilment")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(topic, num_partitions=1, replication_factor=1) for topic in ("orders", "events", "cdc-events")]
    for future in admin.create_topics(topics).values():
        future.result(timeout=10)
    return AwsResources(endpoint, "bench-idempotency", queues)


def telemetry_env(servers: LocalServers) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": servers.rotel.http_endpoint,
        "PUSHGATEWAY_URL": servers.pushgateway.url,
    }


def function_env(servers: LocalServers, aws: AwsResources) -> Callable[[str], dict[str, str]]:
    """template.yaml's Globals and each function's own variables, pointed at the local servers."""
    common = {
        **telemetry_env(servers),
        "ENVIRONMENT": "bench",
        "VERSION": "bench",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        "TELEMETRY_FLUSH_TIMEOUT_MS": "300",
        "KAFKA_BOOTSTRAP_SERVERS": servers.tansu.url.removeprefix("tcp://"),
        "KAFKA_SECURITY": "plaintext",
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    subscriptions = [
        {
            "name": "orders-to-fulfilment",
            "match": {"type": "com.example.order.*"},
            "target": {"type": "sqs", "url": aws.queues["fulfilment"]},
        }
    ]
    own = {
        "ingest": {"DEFAULT_TOPIC": "events", "IDEMPOTENCY_TABLE": aws.table},
        "consumer": {
            "SUBSCRIPTIONS": json.dumps(subscriptions),
            "DLQ_URL": aws.queues["dlq"],
            "IDEMPOTENCY_TABLE": aws.table,
            "RETRY_QUEUE_URL": aws.queues["retry"],
            "WEBHOOK_TIMEOUT_MS": "2000",
        },
        "cdc": {"CDC_TOPIC": "cdc-events", "CDC_EVENT_TYPE_PREFIX": "cdc", "DLQ_URL": aws.queues["dlq"]},
    }
    return lambda code_uri: {**common, **own[code_uri]}


def restore_table(restored: cold_start.RestoreResult, cold: Mapping[str, ColdResult]) -> str:
    ingest = cold["ingest"]
    headers = ["IngestFunction", "init or restore ms", "1st call ms", "2nd call ms", "to 1st response ms", "vs cold"]
    rows = [
        [
            "cold start (init)",
            fmt(ingest.init),
            fmt(ingest.first),
            fmt(ingest.second),
            fmt(ingest.to_first_response),
            "1.00x",
        ]
    ]
    if restored.error:
        rows.append(["restored from a snapshot", "failed", "", "", "", ""])
    else:
        median = statistics.median
        rows.append(
            [
                "restored from a snapshot",
                fmt(median(restored.restore_ms) if restored.restore_ms else None),
                fmt(median(restored.first_ms) if restored.first_ms else None),
                fmt(median(restored.second_ms) if restored.second_ms else None),
                fmt(restored.to_first_response),
                fmt_ratio(restored.to_first_response, ingest.to_first_response),
            ]
        )
    notes = [
        "SnapStart emulated (localbus.snapstart): init once, the before-snapshot hooks, then a fork per restored",
        "environment, which runs the after-restore hooks (new ids, a new producer connecting) and takes two requests;",
        "Lambda's own restore (loading the snapshot's memory) is not in these figures, only what the layer adds.",
        *([f"restore: {restored.error}"] if restored.error else []),
    ]
    return render_table("1b. SnapStart: a restored environment against a cold start", headers, rows, notes)


def measure_cold_starts(settings: Settings, servers: LocalServers, aws: AwsResources) -> dict[str, ColdResult]:
    all_cases = cold_start.cases(function_env(servers, aws), telemetry_env(servers))
    return cold_start.measure(all_cases, settings.cold_runs, clean_env(), missing_modules)


FUNCTIONS = ("ingest", "consumer", "cdc")


def cold_start_table(results: Mapping[str, ColdResult], settings: Settings) -> str:
    baseline, otel, combined = results["baseline"], results["otel"], results["combined"]
    headers = ["case", "init ms", "1st call ms", "2nd call ms", "init+1st ms", "peak RSS MiB", "+RSS MiB"]
    headers += ["init+1st vs OTel", "init+1st vs combined", "init vs combined"]
    rows = []
    for result in results.values():
        status = status_cell(result.missing, result.error)
        if status:
            rows.append([result.case.label, status, *[""] * (len(headers) - 2)])
            continue
        rss_above = None
        if result.rss_mib is not None and baseline.rss_mib is not None:
            rss_above = result.rss_mib - baseline.rss_mib
        measured = result is not baseline
        rows.append(
            [
                result.case.label,
                fmt(result.init),
                fmt(result.first),
                fmt(result.second),
                fmt(result.to_first_response),
                fmt(result.rss_mib),
                fmt(rss_above),
                fmt_ratio(result.to_first_response, otel.to_first_response) if measured else "-",
                fmt_ratio(result.to_first_response, combined.to_first_response) if measured else "-",
                fmt_ratio(result.init, combined.init) if measured else "-",
            ]
        )
    notes = [
        f"median of {settings.cold_runs} fresh interpreters each (after one discarded round that writes .pyc files),",
        "cases alternated; init = import and module set-up, timed inside the child (interpreter start-up left out);",
        "1st/2nd call = the first two requests (POST /events; a 1-record MSK batch; a DynamoDB Streams batch), each",
        "with its export inline, against rotel (OTLP), a Pushgateway, tansu and moto's server;",
        "peak RSS = the child's VmHWM after both calls; +RSS = above the baseline's.",
        *status_notes([(result.case.label, result.missing, result.error) for result in results.values()]),
    ]
    return render_table("1. Cold start (fresh interpreter per run)", headers, rows, notes)


# section 2 and 3: handlers called in-process, each case in a worker process of its own


class FakeLambdaContext:
    """The attributes and method of the Lambda runtime's context object; the remaining time stays constant."""

    def __init__(self, request_id: str = "8a1f0c3e-0000-4000-8000-000000000001") -> None:
        self.aws_request_id = request_id
        self.function_name = FUNCTION_NAME
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:eu-west-1:123456789012:function:{FUNCTION_NAME}"
        self.memory_limit_in_mb = 512
        self.log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
        self.log_stream_name = "2026/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


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
    from observability import Telemetry

    telemetry = Telemetry.from_environment(dict(os.environ))
    exporter = telemetry.tracing.otlp_exporter

    def wire() -> tuple[int, int]:
        return getattr(exporter, "spans_sent", 0), getattr(exporter, "bytes_sent", 0)

    return Prepared(telemetry.http_handler(trivial_handler), describe_flush(telemetry), wire)


def build_ours_lambda() -> Prepared:
    from observability import Telemetry

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
    context = FakeLambdaContext()
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


# section 3: the flush against real local servers


@dataclass
class LocalServers:
    pushgateway: Any
    tansu: Any
    rotel: Any
    moto: Any


@contextlib.contextmanager
def local_servers(log_dir: Path) -> Iterator[LocalServers]:
    from localbus import servers

    started: list[Any] = []
    try:
        pushgateway = servers.start_pushgateway(log_dir)
        started.append(pushgateway)
        tansu = servers.start_tansu(log_dir)
        started.append(tansu)
        rotel = servers.start_rotel(log_dir, tansu.url)
        started.append(rotel)
        moto = servers.start_moto(log_dir)
        started.append(moto)
        yield LocalServers(pushgateway, tansu, rotel, moto)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


def closed_port() -> int:
    """A port that was free a moment ago: nothing listens on it, connections are refused at once."""
    from localbus.processes import free_port

    return int(free_port())


@contextlib.contextmanager
def hung_listener() -> Iterator[str]:
    """A collector that hangs: the kernel completes the TCP handshake (listen backlog) but nothing ever
    accepts or answers, so a client waits for its own timeout, as with a blackholed endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def flush_cases(servers: LocalServers, refused_url: str, hung_url: str) -> tuple[InvocationCase, ...]:
    def ours(endpoint: str, *, pushgateway: bool = True, **extra: str) -> dict[str, str]:
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **extra}
        if pushgateway:
            env["PUSHGATEWAY_URL"] = servers.pushgateway.url
        return env

    otel = ("opentelemetry.sdk", "opentelemetry.instrumentation.aws_lambda")
    rotel = servers.rotel.http_endpoint
    return (
        InvocationCase("flush_up", "ours: OTLP->rotel + Pushgateway", "ours_http", env=ours(rotel)),
        InvocationCase(
            "flush_otlp_only", "ours: OTLP->rotel, no Pushgateway", "ours_http", env=ours(rotel, pushgateway=False)
        ),
        InvocationCase("flush_refused", "ours: OTLP refused + Pushgateway", "ours_http", env=ours(refused_url)),
        InvocationCase(
            "flush_hung_300",
            "ours: OTLP hung + Pushgateway, FLUSH_TIMEOUT_MS=300 (default)",
            "ours_http",
            env=ours(hung_url, TELEMETRY_FLUSH_TIMEOUT_MS="300"),
        ),
        InvocationCase(
            "flush_hung_100",
            "ours: OTLP hung + Pushgateway, FLUSH_TIMEOUT_MS=100",
            "ours_http",
            env=ours(hung_url, TELEMETRY_FLUSH_TIMEOUT_MS="100"),
        ),
        InvocationCase(
            "otel_up",
            "OTel AwsLambdaInstrumentor, BatchSpanProcessor->rotel",
            "otel_lambda",
            requires=otel,
            env={"BENCH_OTLP_ENDPOINT": rotel + "/v1/traces"},
        ),
        InvocationCase(
            "otel_refused",
            "OTel AwsLambdaInstrumentor, OTLP refused (SDK defaults)",
            "otel_lambda",
            requires=otel,
            env={"BENCH_OTLP_ENDPOINT": refused_url + "/v1/traces"},
        ),
    )


SLOW_FLUSH_CASES = frozenset({"otel_refused"})
"""The SDK's exporter retries a refused connection with back-off for its 10 s timeout, at every invocation."""


def measure_flush(settings: Settings, work_dir: Path, servers: LocalServers) -> list[InvocationResult]:
    refused_url = f"http://127.0.0.1:{closed_port()}"
    with hung_listener() as hung_url:
        results = []
        for case in flush_cases(servers, refused_url, hung_url):
            slow = case.key in SLOW_FLUSH_CASES
            iterations = settings.otel_down_invocations if slow else settings.flush_invocations
            warmup = 0 if slow else max(1, settings.flush_invocations // 10)
            results.append(run_invocation_case(case, iterations, warmup, work_dir))
        return results


def flush_table(results: Sequence[InvocationResult], settings: Settings) -> str:
    reference = next(result for result in results if result.case.key == "flush_up").median(1e6)
    headers = ["case", "1st call ms", "median ms", "p99 ms", "median vs ours(up)", "flush outcomes (every call)"]
    rows = []
    for result in results:
        status = status_cell(result.missing, result.error)
        if status:
            rows.append([result.case.label, status, "", "", "", ""])
            continue
        first = None if result.first_ns is None else result.first_ns / 1e6
        median = result.median(1e6)
        rows.append(
            [
                result.case.label,
                fmt(first),
                fmt(median),
                fmt(result.p99(1e6)),
                fmt_ratio(median, reference),
                result.note,
            ]
        )
    notes = [
        f"{settings.flush_invocations} timed invocations per case after a warm-up "
        f"(OTel with the collector refused: {settings.otel_down_invocations}, no warm-up);",
        "each invocation is the whole wrapped call, the end-of-invocation flush included;",
        "'1st call' is the first invocation of the worker: cold start, and the one that meets a down backend;",
        "refused = closed port (fails fast); hung = a listener that never answers (the client waits its timeout);",
        "ours skips a failed backend for TELEMETRY_BACKOFF_SECONDS (30 s), so later calls skip OTLP.",
        *status_notes([(result.case.label, result.missing, result.error) for result in results]),
    ]
    return render_table("3. End-of-invocation flush against real local servers", headers, rows, notes)


# section 4: per record


def per_record_table(results: Sequence[RecordResult], settings: Settings) -> str:
    headers = ["batch", "telemetry", "us per record", "layer adds us per record"]
    rows = []
    for result in results:
        if result.error:
            rows.append([result.target, result.mode, "failed", ""])
            continue
        cost = per_record.layer_cost(results, result.target, result.mode) if result.mode != "off" else None
        rows.append([result.target, result.mode, fmt(result.per_record_us), fmt(cost)])
    notes = [
        f"KafkaConsumerFunction's handler over {per_record.RECORDS}-record MSK batches: a fresh process per run,",
        f"the median of its {per_record.BATCHES} batches; median of {settings.cold_runs} runs, cases alternated;",
        "'none': no subscription matches, 'webhook': each record delivered to a local webhook;",
        "sampled/unsampled: the records' traceparent flags (parent-based sampling); off: OTEL_SDK_DISABLED=true",
        "(no spans, no metrics, no export); spans and metrics are exported inline, inside the timed call.",
        *[f"{result.target}, {result.mode}: {result.error}" for result in results if result.error],
    ]
    return render_table("4. Per record (the layer's cost in a consumer's batch)", headers, rows, notes)


# the goals: every budget of tests/perf/budgets.py against what this run measured


@dataclass(frozen=True)
class Goal:
    name: str
    budget: str
    measured: float | None
    limit: float
    unit: str = "x"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measured"
        return "met" if self.measured <= self.limit else "NOT MET"

    def cells(self) -> list[str]:
        shown = "-" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        return [self.name, self.budget, shown, self.verdict, self.note]


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def goals(
    cold: Mapping[str, ColdResult],
    invocations: Sequence[InvocationResult],
    flushes: Sequence[InvocationResult],
    records: Sequence[RecordResult],
) -> list[Goal]:
    layer, otel, combined, baseline = cold["layer"], cold["otel"], cold["combined"], cold["baseline"]
    found = [
        Goal(
            "layer cold start (init + 1st response) vs OTel",
            f"<= {budgets.LAYER_COLD_START_VS_OTEL}x",
            ratio(layer.to_first_response, otel.to_first_response),
            budgets.LAYER_COLD_START_VS_OTEL,
        ),
        Goal(
            "layer cold start (init + 1st response) vs combined",
            f"<= {budgets.LAYER_COLD_START_VS_COMBINED}x",
            ratio(layer.to_first_response, combined.to_first_response),
            budgets.LAYER_COLD_START_VS_COMBINED,
        ),
    ]
    for key in FUNCTIONS:
        function = cold[key]
        extra = None if function.first is None or function.second is None else function.first - function.second
        found.append(
            Goal(
                f"{function.case.label.split()[0]} init vs combined init",
                f"<= {budgets.FUNCTION_INIT_VS_COMBINED}x",
                ratio(function.init, combined.init),
                budgets.FUNCTION_INIT_VS_COMBINED,
                note="" if extra is None else f"1st request {fmt(extra)} ms over the 2nd",
            )
        )
        over_bare = None
        if function.rss_mib is not None and baseline.rss_mib is not None:
            over_bare = function.rss_mib - baseline.rss_mib
        found.append(
            Goal(
                f"{function.case.label.split()[0]} peak memory over bare Python",
                f"<= {budgets.FUNCTION_PEAK_RSS_OVER_BARE_MIB:.0f} MiB",
                over_bare,
                budgets.FUNCTION_PEAK_RSS_OVER_BARE_MIB,
                unit=" MiB",
            )
        )
    by_key = {result.case.key: result for result in [*invocations, *flushes]}
    found.append(
        Goal(
            "HTTP invocation, in-process, vs OTel instrumentor",
            f"<= {budgets.HTTP_INVOCATION_VS_OTEL}x",
            ratio(by_key["ours_http"].median(1000), by_key["otel_lambda"].median(1000)),
            budgets.HTTP_INVOCATION_VS_OTEL,
            note="export none on both; the after-response mode is not measured here yet",
        )
    )
    found.append(
        Goal(
            "OTLP bytes per span, single HTTP invocations",
            f"<= {budgets.OTLP_BYTES_PER_SPAN:.0f} B",
            by_key["flush_up"].bytes_per_span,
            budgets.OTLP_BYTES_PER_SPAN,
            unit=" B",
            note=f"OTel instrumentor: {fmt(by_key['otel_up'].bytes_per_span, 0)} B",
        )
    )
    for mode, limit in (("sampled", budgets.RECORD_SAMPLED_US), ("unsampled", budgets.RECORD_UNSAMPLED_US)):
        delivered = per_record.layer_cost(records, "webhook", mode)
        found.append(
            Goal(
                f"per record, {mode}, over telemetry off",
                f"<= {limit:.0f} us",
                per_record.layer_cost(records, "none", mode),
                limit,
                unit=" us",
                note=f"no subscription matches; delivered to a webhook: {fmt(delivered)} us",
            )
        )
    return found


def goals_table(found: Sequence[Goal]) -> str:
    headers = ["goal (tests/perf/budgets.py)", "budget", "measured", "verdict", "note"]
    return render_table("0. Goals", headers, [goal.cells() for goal in found])


DOCS_PAGE = ROOT / "docs" / "benchmarks.md"


def write_docs(report: str, settings: Settings, *, quick: bool) -> None:
    """docs/benchmarks.md: what was run, on what, and the tables as printed."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    DOCS_PAGE.parent.mkdir(exist_ok=True)
    DOCS_PAGE.write_text(
        DOCS_HEAD.format(
            command="make bench ARGS=--quick" if quick else "make bench",
            date=time.strftime("%Y-%m-%d"),
            machine=f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}",
            runs=settings.cold_runs,
        )
        + "```\n"
        + report.rstrip()
        + "\n```\n"
    )


DOCS_HEAD = """# Benchmarks

What the layer costs, measured side by side with what a team would use instead: the OpenTelemetry SDK with its
Lambda instrumentor, prometheus_client pushing to a Pushgateway, Powertools' Logger and sentry-sdk's Lambda
integration. Every figure that matters is a ratio within one run: cases run in fresh processes, alternated, and
the medians are compared, because this kind of machine moves by 20-30% within minutes.

    make bench              # the full run (about 3 minutes, after .venv-bench is made); writes this page
    make bench ARGS=--quick # a smoke run

The budgets are named constants in `tests/perf/budgets.py`; table 0 says which are met. The delivery engine has a
benchmark of its own (`make bench-delivery`), and so has the whole local stack under load (`make bench-stack`).

This page was written by `{command}` on {date}, on {machine}; cold starts are medians of {runs} runs.

"""


# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the observability layer against Powertools, the OpenTelemetry Lambda "
        "instrumentation and sentry-sdk: cold start, per-invocation overhead, flush."
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and iterations (a smoke run)")
    parser.add_argument("--worker", choices=sorted(BUILDERS), help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def installed_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = (
        "opentelemetry-sdk",
        "opentelemetry-api",
        "prometheus-client",
        "aws-lambda-powertools",
        "opentelemetry-instrumentation-aws-lambda",
        "sentry-sdk",
    )
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.iterations, args.warmup, args.out)
        return 0
    settings = Settings.choose(quick=args.quick)
    started = time.perf_counter()
    sections = [f"Python {sys.version.split()[0]} on {sys.platform}; {installed_versions()}"]

    def show(text: str) -> None:
        print(text + "\n", flush=True)
        sections.append(text)

    show(sections[0])
    with tempfile.TemporaryDirectory(prefix="bench-layer-") as scratch:
        work_dir = Path(scratch)
        log_dir = work_dir / "server-logs"
        log_dir.mkdir()
        with local_servers(log_dir) as servers:
            aws = create_resources(servers.moto.url, servers.tansu.url.removeprefix("tcp://"))
            cold = measure_cold_starts(settings, servers, aws)
            show(cold_start_table(cold, settings))
            restored = cold_start.measure_restores(
                settings.cold_runs, clean_env(), function_env(servers, aws)("ingest")
            )
            show(restore_table(restored, cold))
            invocations = [
                run_invocation_case(case, settings.invocations, settings.warmup, work_dir) for case in INVOCATION_CASES
            ]
            show(invocation_table(invocations, settings))
            flushes = measure_flush(settings, work_dir, servers)
            show(flush_table(flushes, settings))
            records = per_record.measure(settings.cold_runs, clean_env(), telemetry_env(servers))
            show(per_record_table(records, settings))
    table = goals_table(goals(cold, invocations, flushes, records))
    print(table)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    write_docs("\n\n".join([table, *sections]), settings, quick=args.quick)
    print(f"written to {DOCS_PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
