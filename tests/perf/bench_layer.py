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


# section 1: cold start

COLD_HARNESS_HEAD = "import time\n_bench_t0 = time.perf_counter()\n"
COLD_HARNESS_TAIL = """
_bench_ms = (time.perf_counter() - _bench_t0) * 1000
_bench_hwm = 0
with open("/proc/self/status") as _bench_status:
    for _bench_line in _bench_status:
        if _bench_line.startswith("VmHWM:"):
            _bench_hwm = int(_bench_line.split()[1])
print("BENCH_RESULT", _bench_ms, _bench_hwm)
"""


@dataclass(frozen=True)
class ColdCase:
    key: str
    label: str
    code: str
    requires: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ColdResult:
    case: ColdCase
    wall_ms: list[float] = field(default_factory=list)
    body_ms: list[float] = field(default_factory=list)
    hwm_kib: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def wall(self) -> float | None:
        return statistics.median(self.wall_ms) if self.wall_ms else None

    @property
    def body(self) -> float | None:
        return statistics.median(self.body_ms) if self.body_ms else None

    @property
    def rss_mib(self) -> float | None:
        return statistics.median(self.hwm_kib) / 1024 if self.hwm_kib else None


OTEL_LAMBDA_COLD_CODE = f"""
import sys, types
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
_module = types.ModuleType("{OTEL_HANDLER_MODULE}")
_module.handler = lambda event, context: None
sys.modules["{OTEL_HANDLER_MODULE}"] = _module
_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(_provider)
AwsLambdaInstrumentor().instrument()
"""

COLD_CASES: tuple[ColdCase, ...] = (
    ColdCase("baseline", "python -c pass (baseline)", "pass"),
    ColdCase(
        "ours",
        "ours: get_telemetry(), OTLP/HTTP",
        "from observability import get_telemetry\nget_telemetry()",
        env={"OTEL_TRACES_EXPORTER": "otlp"},
    ),
    ColdCase(
        "ours_sentry",
        "ours: get_telemetry(), OTLP/HTTP + SENTRY_DSN",
        "from observability import get_telemetry\nget_telemetry()",
        env={"OTEL_TRACES_EXPORTER": "otlp", "SENTRY_DSN": CLOSED_SENTRY_DSN},
    ),
    ColdCase(
        "powertools",
        "Powertools Logger+Metrics (no Tracer)",
        "from aws_lambda_powertools import Logger, Metrics\nLogger()\nMetrics()",
        requires=("aws_lambda_powertools",),
    ),
    ColdCase(
        "powertools_tracer",
        "Powertools Logger+Metrics+Tracer (X-Ray)",
        "from aws_lambda_powertools import Logger, Metrics, Tracer\nLogger()\nMetrics()\nTracer()",
        requires=("aws_lambda_powertools", "aws_xray_sdk"),
    ),
    ColdCase(
        "otel_lambda",
        "OTel SDK+OTLP/HTTP+AwsLambdaInstrumentor",
        OTEL_LAMBDA_COLD_CODE,
        requires=("opentelemetry.sdk", "opentelemetry.instrumentation.aws_lambda"),
        env={"_HANDLER": f"{OTEL_HANDLER_MODULE}.handler"},
    ),
    ColdCase(
        "sentry",
        "sentry_sdk.init + AwsLambdaIntegration",
        "import sentry_sdk\nfrom sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration\n"
        f"sentry_sdk.init(dsn={CLOSED_SENTRY_DSN!r}, integrations=[AwsLambdaIntegration()])",
        requires=("sentry_sdk",),
    ),
)


class CaseFailedError(RuntimeError):
    """A case's child process failed; its row says so and the other cases go on."""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run_cold_once(case: ColdCase) -> tuple[float, float, int]:
    """(wall ms, in-process ms, VmHWM KiB) of one fresh interpreter running the case."""
    env = clean_env({"PYTHONPATH": str(LAYER_PATH), **case.env})
    code = COLD_HARNESS_HEAD + case.code + "\n" + COLD_HARNESS_TAIL
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    wall_ms = (time.perf_counter() - started) * 1000
    result = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if completed.returncode != 0 or not result:
        raise CaseFailedError(last_line(completed.stderr))
    _, body_ms, hwm_kib = result[-1].split()
    return wall_ms, float(body_ms), int(hwm_kib)


def measure_cold_starts(settings: Settings) -> list[ColdResult]:
    """Runs the cases round-robin (so that drift in the machine's load spreads over every case), after one
    discarded warm-up round that also writes the .pyc files. A failing case is reported, not fatal."""
    results = [ColdResult(case, missing=missing_modules(case.requires)) for case in COLD_CASES]
    for round_index in range(settings.cold_runs + 1):
        for result in results:
            if result.missing or result.error:
                continue
            try:
                wall_ms, body_ms, hwm_kib = run_cold_once(result.case)
            except (CaseFailedError, subprocess.TimeoutExpired) as error:
                result.error = str(error)
                continue
            if round_index > 0:  # round 0 is the warm-up
                result.wall_ms.append(wall_ms)
                result.body_ms.append(body_ms)
                result.hwm_kib.append(hwm_kib)
    return results


def cold_start_table(results: Sequence[ColdResult], settings: Settings) -> str:
    by_key = {result.case.key: result for result in results}
    baseline = by_key["baseline"]
    ours = by_key["ours"]

    def above(result: ColdResult) -> float | None:
        if result.wall is None or baseline.wall is None:
            return None
        return result.wall - baseline.wall

    headers = ["case", "wall ms", "+ms vs base", "in-proc ms", "peak RSS MiB", "+RSS MiB", "+ms vs ours"]
    rows = []
    for result in results:
        status = status_cell(result.missing, result.error)
        if status:
            rows.append([result.case.label, status, "", "", "", "", ""])
            continue
        rss_above = None
        if result.rss_mib is not None and baseline.rss_mib is not None:
            rss_above = result.rss_mib - baseline.rss_mib
        rows.append(
            [
                result.case.label,
                fmt(result.wall),
                fmt(above(result)),
                fmt(result.body),
                fmt(result.rss_mib),
                fmt(rss_above),
                "-" if result is baseline else fmt_ratio(above(result), above(ours)),
            ]
        )
    notes = [
        f"median of {settings.cold_runs} fresh interpreters each (after one warm-up run that writes .pyc files);",
        "wall = spawn to exit; in-proc = the import + set-up code alone, timed inside the child;",
        "peak RSS = the child's VmHWM; '+ms vs ours' = (wall - baseline) / ours' (wall - baseline).",
        *status_notes([(result.case.label, result.missing, result.error) for result in results]),
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
    return Prepared(telemetry.http_handler(trivial_handler), describe_flush(telemetry))


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

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def __init__(self, delegate: SpanExporter) -> None:
            self.delegate = delegate
            self.results: dict[str, int] = {}

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = self.delegate.export(spans)
            self.results[result.name] = self.results.get(result.name, 0) + 1
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

    return Prepared(sys.modules[OTEL_HANDLER_MODULE].handler, describe)


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
    out.write_text(json.dumps({"first_ns": first, "samples_ns": samples, "note": note}))


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
    missing: list[str] = field(default_factory=list)
    error: str = ""

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
        result.error = last_line(completed.stderr)
        return result
    data = json.loads(out.read_text())
    result.first_ns = data["first_ns"]
    result.samples_ns = data["samples_ns"]
    result.note = data["note"]
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
        yield LocalServers(pushgateway, tansu, rotel)
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


def measure_flush(settings: Settings, work_dir: Path) -> list[InvocationResult]:
    log_dir = work_dir / "server-logs"
    log_dir.mkdir()
    refused_url = f"http://127.0.0.1:{closed_port()}"
    with local_servers(log_dir) as servers, hung_listener() as hung_url:
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
    print(f"Python {sys.version.split()[0]} on {sys.platform}; {installed_versions()}")
    print()
    print(cold_start_table(measure_cold_starts(settings), settings))
    print()
    with tempfile.TemporaryDirectory(prefix="bench-layer-") as scratch:
        work_dir = Path(scratch)
        results = [
            run_invocation_case(case, settings.invocations, settings.warmup, work_dir) for case in INVOCATION_CASES
        ]
        print(invocation_table(results, settings))
        print()
        print(flush_table(measure_flush(settings, work_dir), settings))
    print()
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
