"""Benchmark: the observability layer and the bus's functions side by side with what a team would use instead
(the OpenTelemetry SDK with its Lambda instrumentor; that plus prometheus_client, Powertools' Logger and sentry-sdk),
in one run against real local servers.

    make bench            # or: make bench ARGS=--quick

0. Goals: every budget of budgets.py against the run (goals.py), written with the tables to docs/benchmarks.md.
1. Cold start as Lambda pays it: init, the first two requests and peak RSS of fresh interpreters, for the layer,
   the alternatives, the three functions in their deployed configuration and each one's floor (cold_start.py);
   1b. a SnapStart-restored IngestFunction against its cold start.
2. Per invocation: a trivial handler wrapped by each library, in-process, nothing exported (invocations.py).
3. Flush: the wrapped invocation with its end-of-invocation flush against rotel and a Pushgateway, and with
   the collector refused or hung.
4. Per record: KafkaConsumerFunction over 500-record batches, sampled, sampled out and off (per_record.py).
5. The flush inline and after the response in an execution environment (the host executor's sandbox, the layer's
   extension): the caller's wait, and OTLP bytes per span with and without TELEMETRY_EXPORT_INTERVAL_MS
   (after_response.py).

The alternatives are optional: a case whose packages are missing prints "not installed". `make bench` installs them
in .venv-bench (the `bench` group of pyproject.toml), apart from the test venv: the OpenTelemetry Lambda
instrumentation pins semantic-conventions 0.66b1 while the layer's SDK 1.45.2 wants 0.66b2, so it is installed
there with --no-deps (it works with 0.66b2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import after_response
import cold_start
import per_record
from bench_env import ROOT, Settings, clean_env, missing_modules
from bench_goals import DOCS_PAGE, goals, goals_table, write_docs
from bench_servers import (
    AwsResources,
    LocalServers,
    closed_port,
    create_resources,
    function_env,
    hung_listener,
    local_servers,
    telemetry_env,
)
from bench_tables import fmt, fmt_ratio, render_table, status_cell, status_notes
from cold_start import ColdResult
from invocations import INVOCATION_CASES, InvocationCase, InvocationResult, invocation_table, run_invocation_case
from per_record import RecordResult

# section 1: cold start (tests/perf/cold_start.py runs the children)


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
        "SnapStart emulated (samhost.snapstart): init once, the before-snapshot hooks, then a fork per restored",
        "environment, which runs the after-restore hooks (new ids, a new producer connecting) and takes two requests;",
        "Lambda's own restore (loading the snapshot's memory) is not in these figures, only what the layer adds.",
        *([f"restore: {restored.error}"] if restored.error else []),
    ]
    return render_table("1b. SnapStart: a restored environment against a cold start", headers, rows, notes)


def measure_cold_starts(settings: Settings, servers: LocalServers, aws: AwsResources) -> dict[str, ColdResult]:
    all_cases = cold_start.cases(function_env(servers, aws), telemetry_env(servers))
    return cold_start.measure(all_cases, settings.cold_runs, clean_env(), missing_modules)


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


# section 3: the flush against real local servers


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


# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the observability layer against Powertools, the OpenTelemetry Lambda "
        "instrumentation and sentry-sdk: cold start, per-invocation overhead, flush."
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and iterations (a smoke run)")
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
            flush_modes = after_response.measure(settings.cold_runs, telemetry_env(servers))
            show(after_response.table(flush_modes, settings))
    table = goals_table(goals(cold, invocations, flushes, records, flush_modes))
    print(table)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    write_docs("\n\n".join([table, *sections]), settings, quick=args.quick)
    print(f"written to {DOCS_PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
