"""Cold start, measured as Lambda pays it: a fresh interpreter imports and initialises, then answers its first
request and a second one, against real servers (rotel for OTLP, a Pushgateway, tansu, moto's DynamoDB and SQS).

A case is init code (timed as init: what Lambda's INIT phase runs), a handler and a kind of request. The child
times init and each call inside itself (interpreter start-up is the same for every case and left out) and reports
its peak RSS (VmHWM). Cases run round-robin, after one discarded round that writes the .pyc files, so that drift in
the machine's load spreads over every case. Every flush is inline (no Lambda Runtime API here): a first response
includes its export, for the layer and for the alternatives alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PERF = Path(__file__).resolve().parent
ROOT = PERF.parents[1]
LAYER = ROOT / "functions" / "observability_layer"
CLOSED_SENTRY_DSN = "http://k@127.0.0.1:9/1"
"""Port 9 (discard) has no listener here: sentry-sdk's transport fails fast and nothing leaves the host."""
OTEL_HANDLER_MODULE = "bench_otel_fn"
# each function's CodeUri, its name and the request its first calls get (cold_requests.REQUESTS)
FUNCTION_CASES = (
    ("ingest", "IngestFunction", "http"),
    ("consumer", "KafkaConsumerFunction", "kafka"),
    ("cdc", "CdcFunction", "stream"),
)
FUNCTIONS = tuple(code_uri for code_uri, _, _ in FUNCTION_CASES)

HARNESS = """
import json, os, time
from cold_requests import REQUESTS, LambdaContext
_requests = [REQUESTS[{request!r}]() for _ in range(2)] if {request!r} else []
_started = time.perf_counter()
{init}
_init_ms = (time.perf_counter() - _started) * 1000
_calls = []
for _request in _requests:
    _call_started = time.perf_counter()
    _answer = {handler}(_request, LambdaContext())
    {after}
    _calls.append((time.perf_counter() - _call_started) * 1000)
with open("/proc/self/status") as _status:
    _hwm = next(int(line.split()[1]) for line in _status if line.startswith("VmHWM:"))
print("BENCH_RESULT " + json.dumps({{"init": _init_ms, "calls": _calls, "hwm": _hwm, "answer": repr(_answer)[:300]
    if _requests else ""}}), flush=True)
os._exit(0)  # not the clients' own teardown (a producer's flush at exit): nothing of it is cold start
"""

TRIVIAL_RESPONSE = "{'statusCode': 202, 'headers': {'Content-Type': 'application/json'}, 'body': '{\"accepted\":true}'}"

OURS_LAYER = f"""
from lambda_event_bus.telemetry import get_telemetry
telemetry = get_telemetry()
@telemetry.http_handler
def handler(event, context):
    return {TRIVIAL_RESPONSE}
"""

OTEL_SETUP = f"""
import sys, types
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
_module = types.ModuleType("{OTEL_HANDLER_MODULE}")
sys.modules["{OTEL_HANDLER_MODULE}"] = _module
"""
OTEL_INSTRUMENT = """
_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(_provider)
AwsLambdaInstrumentor().instrument()
"""
OTEL_ALONE = OTEL_SETUP + f"_module.handler = lambda event, context: {TRIVIAL_RESPONSE}\n" + OTEL_INSTRUMENT

COMBINED = (
    OTEL_SETUP
    + f"""
import os
from prometheus_client import CollectorRegistry, Counter, Histogram, push_to_gateway
from aws_lambda_powertools import Logger
import sentry_sdk
from sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration, _wrap_handler
sentry_sdk.init(dsn={CLOSED_SENTRY_DSN!r}, integrations=[AwsLambdaIntegration()])
_registry = CollectorRegistry()
_labels = ("method", "endpoint", "status")
_requests_total = Counter("http_requests_total", "HTTP requests", _labels, registry=_registry)
_duration = Histogram("http_request_duration_seconds", "HTTP request duration", _labels, registry=_registry)
_logger = Logger()
@_logger.inject_lambda_context
def _handler(event, context):
    with _duration.labels("POST", "/events", "202").time():
        _requests_total.labels("POST", "/events", "202").inc()
        return {TRIVIAL_RESPONSE}
_module.handler = _wrap_handler(_handler)  # what AwsLambdaIntegration does from Lambda's bootstrap
_pushgateway = os.environ["PUSHGATEWAY_URL"]
"""
    + OTEL_INSTRUMENT
)
# The floor: the libraries each piece truly needs, imported and set up as the code does, with none of the layer's
# or the functions' own code. How close a row gets to its floor is what the layer and the function add.
TELEMETRY_FLOOR = """
import opentelemetry.sdk.trace, prometheus_client
"""
BUS_FLOOR = """
import os
import confluent_kafka, cloudevents.core.bindings.kafka, cloudevents.core.formats.json
import botocore.session
_session = botocore.session.get_session()
_clients = [_session.create_client(service) for service in os.environ["BENCH_FLOOR_CLIENTS"].split(",")]
_producer = confluent_kafka.Producer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]})
"""
FLOOR_CLIENTS = {"ingest": "dynamodb", "consumer": "sqs,dynamodb", "cdc": "sqs"}
"""The clients each function's deployed configuration makes (the consumer's subscriptions target SQS only)."""

COMBINED_AFTER = "push_to_gateway(_pushgateway, job='bench', registry=_registry, timeout=0.3)"


@dataclass(frozen=True)
class ColdCase:
    key: str
    label: str
    init: str
    handler: str = ""
    request: str = ""  # a key of cold_requests.REQUESTS; empty: init only
    after: str = "pass"  # run after each call, inside its time
    requires: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    code_uri: str = ""  # a function's folder under functions/: on the path beside the layer, as Lambda has it


@dataclass
class ColdResult:
    case: ColdCase
    init_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)
    hwm_kib: list[int] = field(default_factory=list)
    answer: str = ""
    missing: list[str] = field(default_factory=list)
    error: str = ""

    @staticmethod
    def _median(samples: Sequence[float]) -> float | None:
        return statistics.median(samples) if samples else None

    @property
    def init(self) -> float | None:
        return self._median(self.init_ms)

    @property
    def first(self) -> float | None:
        return self._median(self.first_ms)

    @property
    def second(self) -> float | None:
        return self._median(self.second_ms)

    @property
    def to_first_response(self) -> float | None:
        """init + first call, per run, then the median."""
        if not self.first_ms:
            return self.init
        return statistics.median(i + f for i, f in zip(self.init_ms, self.first_ms, strict=True))

    @property
    def rss_mib(self) -> float | None:
        return statistics.median(self.hwm_kib) / 1024 if self.hwm_kib else None


def cases(function_env: Callable[[str], Mapping[str, str]], telemetry_env: Mapping[str, str]) -> tuple[ColdCase, ...]:
    """The layer, its two anchors and the three functions; `function_env(code_uri)` is a function's deployed
    configuration, `telemetry_env` what every telemetry case exports to."""
    otel = ("opentelemetry.sdk", "opentelemetry.instrumentation.aws_lambda", "opentelemetry.exporter.otlp.proto.http")
    functions: list[ColdCase] = []
    for code_uri, label, request in FUNCTION_CASES:
        functions.append(
            ColdCase(
                code_uri,
                f"{label} (deployed configuration)",
                "import app",
                handler="app.handler",
                request=request,
                env=function_env(code_uri),
                code_uri=code_uri,
            )
        )
        functions.append(
            ColdCase(
                f"{code_uri}_floor",
                f"  floor: its libraries alone ({FLOOR_CLIENTS[code_uri]})",
                TELEMETRY_FLOOR + BUS_FLOOR,
                env={**function_env(code_uri), "BENCH_FLOOR_CLIENTS": FLOOR_CLIENTS[code_uri]},
            )
        )
    return (
        ColdCase("baseline", "python -c pass (baseline)", "pass"),
        ColdCase(
            "layer",
            "ours: @http_handler, OTLP + Pushgateway",
            OURS_LAYER,
            handler="handler",
            request="http",
            env=telemetry_env,
        ),
        ColdCase("layer_floor", "  floor: OTel SDK + prometheus_client", TELEMETRY_FLOOR),
        ColdCase(
            "otel",
            "OTel SDK + OTLP/HTTP + AwsLambdaInstrumentor",
            OTEL_ALONE,
            handler="_module.handler",
            request="http",
            requires=otel,
            env={**telemetry_env, "_HANDLER": f"{OTEL_HANDLER_MODULE}.handler"},
        ),
        ColdCase(
            "combined",
            "OTel + prometheus_client (push) + Powertools Logger + sentry-sdk",
            COMBINED,
            handler="_module.handler",
            request="http",
            after=COMBINED_AFTER,
            requires=(*otel, "aws_lambda_powertools", "sentry_sdk", "prometheus_client"),
            env={**telemetry_env, "_HANDLER": f"{OTEL_HANDLER_MODULE}.handler"},
        ),
        *functions,
    )


class CaseFailedError(RuntimeError):
    """A case's child process failed; its row says so and the other cases go on."""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run_once(case: ColdCase, base_env: Mapping[str, str]) -> dict[str, object]:
    paths = [str(PERF), str(LAYER)]
    if case.code_uri:
        paths.insert(0, str(ROOT / "functions" / case.code_uri))
    env = {**base_env, **case.env, "PYTHONPATH": ":".join(paths)}
    code = HARNESS.format(request=case.request, init=case.init, handler=case.handler or "None", after=case.after)
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    result = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if completed.returncode != 0 or not result:
        raise CaseFailedError(last_line(completed.stderr))
    return dict(json.loads(result[-1].removeprefix("BENCH_RESULT ")))


def measure(
    all_cases: Sequence[ColdCase], runs: int, base_env: Mapping[str, str], missing: Callable[[Sequence[str]], list[str]]
) -> dict[str, ColdResult]:
    results = {case.key: ColdResult(case, missing=missing(case.requires)) for case in all_cases}
    for round_index in range(runs + 1):
        for result in results.values():
            if result.missing or result.error:
                continue
            try:
                data = run_once(result.case, base_env)
            except (CaseFailedError, subprocess.TimeoutExpired) as error:
                result.error = str(error)
                continue
            if round_index == 0:  # the warm-up round: .pyc files, the servers' first connections
                continue
            calls = [float(call) for call in data["calls"]]  # type: ignore[attr-defined]
            result.init_ms.append(float(data["init"]))  # type: ignore[arg-type]
            if calls:
                result.first_ms.append(calls[0])
                result.second_ms.append(calls[1])
            result.hwm_kib.append(int(data["hwm"]))  # type: ignore[call-overload]
            result.answer = str(data["answer"])
    return results


@dataclass
class RestoreResult:
    """IngestFunction restored from a snapshot (samhost.snapstart): the after-restore hooks and two requests."""

    restore_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def to_first_response(self) -> float | None:
        if not self.first_ms:
            return None
        return statistics.median(r + f for r, f in zip(self.restore_ms, self.first_ms, strict=True))


def measure_restores(runs: int, base_env: Mapping[str, str], function_env: Mapping[str, str]) -> RestoreResult:
    """`runs` snapshots of IngestFunction, each restored once and sent two requests (one discarded run first)."""
    import cold_requests
    from samhost.snapstart import SnapshotError, restore

    result = RestoreResult()
    for run in range(runs + 1):
        requests = [[cold_requests.http_request(), cold_requests.http_request()]]
        try:
            (restored,) = restore(
                ROOT / "functions" / "ingest",
                "app.handler",
                {**base_env, **function_env},
                requests,
                layers=[ROOT / "functions" / "observability_layer"],
            )
        except SnapshotError as error:
            result.error = str(error)[:200]
            return result
        if run:
            result.restore_ms.append(restored.restore_ms)
            result.first_ms.append(float(restored.calls[0]["ms"]))
            result.second_ms.append(float(restored.calls[1]["ms"]))
    return result
