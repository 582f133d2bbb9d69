"""Benchmark: the Pushgateway at Lambda scale, against a real Pushgateway and a real Prometheus.

    make bench-pushgateway ARGS="[--groups 500,2000] [--quick] [--json PATH]"

What is simulated, and why. Every Lambda execution environment pushes its whole registry (the layer's metric catalog
plus prometheus_client's runtime collectors) under a grouping key of its own: job = service, function_name, instance
= a 16-hex id made at init (lambda_event_bus.telemetry.metrics.pushgateway). The Pushgateway never merges groups and
never expires them, so it holds one group per environment alive (and per environment that died since
MaintenanceFunction's last sweep), and Prometheus scrapes all of them at every scrape. At Lambda scale that is
thousands of groups: this script measures what that costs and where it stops working.

For each group count N, with a Prometheus scraping the Pushgateway every second (infra/prometheus/prometheus.yml,
hoststack.servers):

1. one environment's body: a `Metrics` registry with every catalog metric populated with a few realistic label
   sets (more than most environments have: an ingest environment has no delivery or CDC series), its size and
   series count;
2. fill: N groups created (PUT /metrics/job/<job>/function_name/<fn>/instance/<id>) by concurrent pushers as fast
   as they go, spread over IngestFunction, KafkaConsumerFunction and CdcFunction. The Pushgateway checks every
   push for consistency against everything it holds (a full gather of all groups, one push at a time), so a push
   costs time in proportion to the groups already there and filling N groups one PUT at a time costs N^2: 2,000
   groups of this body would take ~5 minutes. The fill therefore goes to a Pushgateway started with
   `--push.disable-consistency-check` and a persistence file, which is then stopped (it writes the file) and
   replaced on the same port by the Pushgateway under test, started by `servers.start_pushgateway` as the local
   stack starts it (consistency check on, persistence file), which loads the N groups: the same path as the
   local stack's Pushgateway restart;
3. steady: the pushers re-PUT random groups at N / PUSH_PERIOD_S pushes/s (each environment pushing once every
   15 s on average), paced on a shared schedule, each push through the layer's own `PushgatewayExporter` (a
   kept-alive connection per pusher and service, the registry serialised per push, as in production); push
   latency (with a long timeout, to see it whole; the layer itself gives the whole flush 300 ms) and the rate
   achieved;
4. the scrape: the Pushgateway's GET /metrics (size, series, time) and Prometheus' own view of its scrapes
   (scrape_duration_seconds, scrape_samples_scraped, failed scrapes) through its query API; the Pushgateway's RSS
   empty, after the fill, once the groups are loaded by the Pushgateway under test, and at the end;
5. clean-up as MaintenanceFunction does it: `maintenance.groups.PushgatewaySweeper` lists the groups
   (GET /api/v1/metrics) and deletes those not pushed for its default stale age, with its clock moved past that
   age so that every group is stale; then the Pushgateway must hold no group at all.

Client, Pushgateway and Prometheus share this machine's cores: the figures are a local floor, not AWS's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "functions" / "observability_layer", ROOT / "functions" / "maintenance"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_tables import percentile  # noqa: E402 - after the paths above
from hoststack import servers  # noqa: E402
from lambda_event_bus.telemetry.config import DEFAULT_FLUSH_TIMEOUT_MS  # noqa: E402
from lambda_event_bus.telemetry.metrics import Metrics  # noqa: E402
from maintenance.deadline import Deadline  # noqa: E402
from maintenance.groups import PushgatewaySweeper  # noqa: E402
from maintenance.rest import MAX_RESPONSE_BYTES  # noqa: E402
from maintenance.settings import MaintenanceSettings  # noqa: E402
from pushgateway_load import (  # noqa: E402 - after the paths above
    PUSHERS,
    count_series,
    environment_metrics,
    fill,
    groups_held,
    groups_left,
    http_get,
    make_groups,
    measure_body,
    progress,
    rss_mib,
    scalar,
    scrape_target,
    seconds_of,
    server_versions,
    steady,
    wait_for_scrape_after,
)
from samhost.processes import ManagedProcess, binary, free_port  # noqa: E402

DEFAULT_GROUPS = "500,2000"
PUSH_PERIOD_S = 15.0
"""How often one environment pushes, on average (a flush per invocation, invocations every 10-20 s)."""
FLUSH_BUDGET_MS = float(DEFAULT_FLUSH_TIMEOUT_MS)
STEADY_S, QUICK_STEADY_S = 30.0, 10.0
MAINTENANCE_TIMEOUT_S = 60.0
"""MaintenanceFunction's Timeout in template.yaml: the time one sweep has."""
SWEEP_DEADLINE_S = 600.0
"""The benchmark's own deadline for a sweep: long enough to delete every group, to time the whole job."""
SWEEP_REQUEST_TIMEOUT_S = 60.0
"""Per request of the sweep here: its default (PUSHGATEWAY_TIMEOUT_MS, 2 s) is compared with the list's time."""

# one run size


@dataclass
class Result:
    groups: int
    fill_s: float
    fill_rate: float
    target_rate: float
    achieved_rate: float
    steady_pushes: int
    push_errors: int
    push_p50_ms: float
    push_p99_ms: float
    push_max_ms: float
    over_flush_budget: float
    """Share of the steady phase's pushes slower than the layer's whole flush budget."""
    scrape_bytes: int
    scrape_series: int
    scrape_get_s: float
    prom_scrape_s: float | None
    prom_scrape_max_s: float | None
    prom_samples: float | None
    scrapes: float | None
    failed_scrapes: float | None
    scrape_interval_s: float
    scrape_timeout_s: float
    rss_empty_mib: float
    rss_filled_mib: float
    rss_loaded_mib: float
    rss_end_mib: float
    prometheus_rss_mib: float
    api_metrics_bytes: int
    list_s: float
    sweep_s: float
    deleted: int
    left_after_sweep: int
    first_error: str = ""

    @property
    def kib_per_group(self) -> float:
        return (self.rss_filled_mib - self.rss_empty_mib) * 1024 / self.groups

    @property
    def saturated(self) -> bool:
        return self.achieved_rate < 0.95 * self.target_rate


def quietly(stop: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        with contextlib.suppress(Exception):
            stop()

    return call


def start_unchecked_pushgateway(log_dir: Path, port: int, persistence_file: Path) -> ManagedProcess:
    """A Pushgateway for the fill only: no consistency check (a push costs its own size, not all groups'), and
    its groups written to `persistence_file` when it stops."""
    return ManagedProcess.start(
        "pushgateway-fill",
        [
            binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={persistence_file}",
            "--push.disable-consistency-check",
        ],
        log_dir=log_dir,
        wait_ports=[port],
    )


def measure(count: int, metrics: Metrics, steady_s: float, work_dir: Path) -> Result:
    groups = make_groups(count)
    rate = count / PUSH_PERIOD_S
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True)
    port = free_port()
    groups_file = work_dir / "groups.data"
    with contextlib.ExitStack() as running:
        filler = start_unchecked_pushgateway(log_dir, port, groups_file)
        running.callback(quietly(filler.stop))
        prometheus = servers.start_prometheus(log_dir, work_dir / "prometheus", f"http://127.0.0.1:{port}")
        running.callback(quietly(prometheus.stop))
        prometheus.wait_for_pushgateway()
        rss_empty = rss_mib(filler.process.pid)

        fill_log, fill_s = fill(f"http://127.0.0.1:{port}", metrics, groups)
        if fill_log.errors:
            raise RuntimeError(f"{len(fill_log.errors)} pushes of the fill failed, first: {fill_log.errors[0]}")
        rss_filled = rss_mib(filler.process.pid)
        progress(count, f"filled in {fill_s:.1f} s")
        filler.stop()  # writes the groups to its persistence file
        restarted = time.time()
        pushgateway = servers.start_pushgateway(log_dir, port=port, persistence_file=groups_file)
        running.callback(quietly(pushgateway.stop))
        pid = pushgateway.process.process.pid
        rss_loaded = rss_mib(pid)
        held, _ = groups_held(pushgateway.url)
        if held != count:
            raise RuntimeError(f"the Pushgateway under test loaded {held} groups, {count} were pushed")
        wait_for_scrape_after(prometheus, restarted)
        progress(count, f"loaded by the Pushgateway under test in {time.time() - restarted:.1f} s")

        steady_log, elapsed = steady(pushgateway.url, metrics, groups, rate, steady_s)
        window = f"{max(1, int(elapsed))}s"
        progress(count, f"steady phase: {len(steady_log.latencies_ms)} pushes in {elapsed:.1f} s")
        target = scrape_target(prometheus)
        up = 'up{job="pushgateway"}'
        prom_scrape = scalar(prometheus, 'scrape_duration_seconds{job="pushgateway"}')
        prom_scrape_max = scalar(prometheus, f'max_over_time(scrape_duration_seconds{{job="pushgateway"}}[{window}])')
        prom_samples = scalar(prometheus, 'scrape_samples_scraped{job="pushgateway"}')
        scrapes = scalar(prometheus, f"count_over_time({up}[{window}])")
        failed = scalar(prometheus, f"count_over_time({up}[{window}]) - sum_over_time({up}[{window}])")
        scrape_body, scrape_get_s = http_get(f"{pushgateway.url}/metrics")
        rss_end = rss_mib(pid)
        prometheus_rss = rss_mib(prometheus.process.process.pid)
        held, api_bytes = groups_held(pushgateway.url)
        if held != count:
            raise RuntimeError(f"the Pushgateway holds {held} groups after the steady phase, {count} were pushed")

        # MaintenanceFunction's sweep, its clock moved past the default stale age: every group is stale
        settings = MaintenanceSettings(pushgateway_timeout_s=SWEEP_REQUEST_TIMEOUT_S)
        sweeper = PushgatewaySweeper(
            pushgateway.url,
            max_age_s=settings.stale_group_s,
            timeout_s=settings.pushgateway_timeout_s,
            own_group=None,
            clock=lambda: time.time() + settings.stale_group_s + 60,
        )
        started = time.perf_counter()
        listed = sweeper.list_groups(Deadline.after(SWEEP_DEADLINE_S))
        list_s = time.perf_counter() - started
        if len(listed) != count:
            raise RuntimeError(f"the sweeper listed {len(listed)} groups of {count}")
        started = time.perf_counter()
        swept = sweeper.sweep(Deadline.after(SWEEP_DEADLINE_S))
        sweep_s = time.perf_counter() - started
        progress(count, f"swept in {sweep_s:.1f} s")
        if swept.failures:
            operation, error, _ = swept.failures[0]
            raise RuntimeError(f"the sweep failed {len(swept.failures)} times, first: {operation}: {error}")
        if len(swept.deleted) != count or swept.kept != 0:
            raise RuntimeError(f"the sweep deleted {len(swept.deleted)} groups of {count}, kept {swept.kept}")
        left = groups_left(pushgateway.url)
        if left != 0:
            raise RuntimeError(f"{left} groups left on the Pushgateway after the sweep")

    latencies = steady_log.latencies_ms or [math.nan]
    return Result(
        groups=count,
        fill_s=fill_s,
        fill_rate=count / fill_s,
        target_rate=rate,
        achieved_rate=(len(steady_log.latencies_ms) + len(steady_log.errors)) / elapsed,
        steady_pushes=len(steady_log.latencies_ms),
        push_errors=len(steady_log.errors),
        push_p50_ms=statistics.median(latencies),
        push_p99_ms=percentile(latencies, 0.99),
        push_max_ms=max(latencies),
        over_flush_budget=sum(1 for ms in latencies if ms > FLUSH_BUDGET_MS) / len(latencies),
        scrape_bytes=len(scrape_body),
        scrape_series=count_series(scrape_body),
        scrape_get_s=scrape_get_s,
        prom_scrape_s=prom_scrape,
        prom_scrape_max_s=prom_scrape_max,
        prom_samples=prom_samples,
        scrapes=scrapes,
        failed_scrapes=failed,
        scrape_interval_s=seconds_of(str(target["scrapeInterval"])),
        scrape_timeout_s=seconds_of(str(target["scrapeTimeout"])),
        rss_empty_mib=rss_empty,
        rss_filled_mib=rss_filled,
        rss_loaded_mib=rss_loaded,
        rss_end_mib=rss_end,
        prometheus_rss_mib=prometheus_rss,
        api_metrics_bytes=api_bytes,
        list_s=list_s,
        sweep_s=sweep_s,
        deleted=len(swept.deleted),
        left_after_sweep=left,
        first_error=steady_log.errors[0] if steady_log.errors else "",
    )


# the report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:,.1f}"


HEADERS = (
    "groups",
    "push/s target",
    "push/s achieved",
    "push p50 ms",
    "push p99 ms",
    "push max ms",
    f"pushes > {FLUSH_BUDGET_MS:.0f} ms",
    "push errors",
    "fill push/s (no check)",
    "GET /metrics MiB",
    "series",
    "GET /metrics s",
    "Prom scrape s (last / max)",
    "Prom samples",
    "failed scrapes",
    "PG RSS MiB (empty / filled / loaded / end)",
    "PG KiB / group",
    "Prom RSS MiB",
    "/api/v1/metrics MiB",
    "sweep list s",
    "sweep total s",
    "deleted",
    "left",
)


def row(result: Result) -> list[str]:
    return [
        f"{result.groups:,}",
        fmt(result.target_rate),
        fmt(result.achieved_rate),
        fmt(result.push_p50_ms),
        fmt(result.push_p99_ms),
        fmt(result.push_max_ms),
        f"{result.over_flush_budget:.0%}",
        str(result.push_errors),
        fmt(result.fill_rate, 0),
        mib(result.scrape_bytes),
        f"{result.scrape_series:,}",
        fmt(result.scrape_get_s, 2),
        f"{fmt(result.prom_scrape_s, 3)} / {fmt(result.prom_scrape_max_s, 3)}",
        fmt(result.prom_samples, 0),
        f"{fmt(result.failed_scrapes, 0)} of {fmt(result.scrapes, 0)}",
        " / ".join(
            fmt(value)
            for value in (result.rss_empty_mib, result.rss_filled_mib, result.rss_loaded_mib, result.rss_end_mib)
        ),
        fmt(result.kib_per_group),
        fmt(result.prometheus_rss_mib, 0),
        mib(result.api_metrics_bytes),
        fmt(result.list_s, 2),
        fmt(result.sweep_s, 2),
        f"{result.deleted:,}",
        str(result.left_after_sweep),
    ]


def markdown_table(results: Sequence[Result]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * (len(HEADERS) - 1)]
    lines += ["| " + " | ".join(row(result)) + " |" for result in results]
    return "\n".join(lines)


def ceiling(results: Sequence[Result]) -> list[str]:
    """Where the figures say the Pushgateway stops working, extrapolated linearly from the largest run."""
    largest = max(results, key=lambda result: result.groups)
    n = largest.groups
    lines = []

    # pushes: one at a time, each gathering every group held for the consistency check
    saturated = [result for result in results if result.saturated]
    if saturated:
        worst = min(saturated, key=lambda result: result.groups)
        push_s = 1 / worst.achieved_rate
        per_group = push_s / worst.groups
        sustainable = math.sqrt(PUSH_PERIOD_S / per_group)
        lines.append(
            f"Pushes: at {worst.groups:,} groups the Pushgateway took {worst.achieved_rate:.1f} pushes/s of the "
            f"{worst.target_rate:.1f} offered ({push_s * 1000:.0f} ms a push: pushes are applied one at a time and "
            f"each is checked against all groups held, {per_group * 1e6:.0f} us a group here); one push per "
            f"environment every {PUSH_PERIOD_S:g} s is sustainable up to ~{sustainable:,.0f} groups. Without the "
            f"check the fill took {largest.fill_rate:,.0f} pushes/s at up to {n:,} groups."
        )
    else:
        lines.append(f"Pushes: the Pushgateway kept up with one push per environment every {PUSH_PERIOD_S:g} s.")
    lines.append(
        f"Flush budget: {largest.over_flush_budget:.0%} of the pushes at {n:,} groups took longer than the layer's "
        f"whole {FLUSH_BUDGET_MS:.0f} ms flush budget (TELEMETRY_FLUSH_TIMEOUT_MS): in Lambda they would time out."
    )

    # the scrape: Prometheus' own duration when its scrapes succeed, else the direct GET's
    scraped = [r for r in results if r.failed_scrapes == 0 and r.prom_scrape_max_s]
    failing = [r for r in results if r.failed_scrapes]
    if scraped:
        best = max(scraped, key=lambda result: result.groups)
        scrape_s, how = best.prom_scrape_max_s or 0.0, "Prometheus' longest scrape"
    else:
        best = largest
        scrape_s, how = best.scrape_get_s, "GET /metrics"
    per_group_s = scrape_s / best.groups
    lines.append(
        f"Scrape: {how} of {best.groups:,} groups took {scrape_s:.2f} s ({per_group_s * 1000:.2f} ms, "
        f"{best.scrape_bytes / best.groups / 1024:.0f} KiB and {best.scrape_series / best.groups:.0f} series a "
        f"group): the scrape timeout here ({best.scrape_timeout_s:g} s, interval {best.scrape_interval_s:g} s) is "
        f"reached near {best.scrape_timeout_s / per_group_s:,.0f} groups, Prometheus' default 10 s timeout "
        f"(15 s interval) near {10 / per_group_s:,.0f}."
        + (
            " Every scrape failed at " + ", ".join(f"{r.groups:,}" for r in failing) + " groups (up = 0, no samples)."
            if failing
            else ""
        )
    )
    lines.append(
        f"Memory: the Pushgateway's RSS grew {largest.kib_per_group:.0f} KiB a group in the fill "
        f"(~{1024 * 1024 / largest.kib_per_group:,.0f} groups a GiB) and reached {largest.rss_end_mib:,.0f} MiB "
        f"after the steady phase (checked pushes and failing scrapes allocate in proportion to all groups); Prometheus "
        f"{largest.prometheus_rss_mib:,.0f} MiB."
    )

    # MaintenanceFunction
    default_timeout_s = MaintenanceSettings().pushgateway_timeout_s
    per_group_api = largest.api_metrics_bytes / n
    list_per_group_s = largest.list_s / n
    delete_s = (largest.sweep_s - largest.list_s) / max(1, largest.deleted)
    lines.append(
        f"MaintenanceFunction: GET /api/v1/metrics is {per_group_api / 1024:.1f} KiB a group, so its "
        f"{MAX_RESPONSE_BYTES // 1024 // 1024} MiB answer limit is reached near "
        f"{MAX_RESPONSE_BYTES / per_group_api:,.0f} groups; the list took {largest.list_s:.2f} s at {n:,} groups, "
        f"its default {default_timeout_s:g} s request timeout (PUSHGATEWAY_TIMEOUT_MS) is reached near "
        f"{default_timeout_s / list_per_group_s:,.0f} groups; a delete took {delete_s * 1000:.1f} ms, so one run "
        f"({MAINTENANCE_TIMEOUT_S:g} s timeout) deletes ~{MAINTENANCE_TIMEOUT_S / delete_s:,.0f} stale groups at "
        "most (the next run resumes)."
    )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--groups", default=DEFAULT_GROUPS, help="comma-separated group counts, one run each")
    parser.add_argument(
        "--quick", action="store_true", help=f"a {QUICK_STEADY_S:g} s steady phase instead of {STEADY_S:g} s"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        counts = sorted({int(count) for count in args.groups.split(",") if count.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise SystemExit("--groups: one or more positive counts, comma-separated")
    steady_s = QUICK_STEADY_S if args.quick else STEADY_S
    started = time.perf_counter()
    versions = server_versions()
    print(versions, flush=True)
    metrics = environment_metrics()
    body = measure_body(metrics)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pushgateway-") as scratch:
        for count in counts:
            results.append(measure(count, metrics, steady_s, Path(scratch) / str(count)))
            print(f"{count:,} groups measured ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    first = results[0]
    print(
        f"\nPushgateway at Lambda scale: one group per execution environment, each a body of {body.bytes:,} bytes "
        f"and {body.series} series (every catalog metric populated, runtime collectors on; {body.serialise_ms:.2f} "
        f"ms to serialise); {PUSHERS} pushers through the layer's PushgatewayExporter; steady phase {steady_s:g} s "
        f"at one push per group every {PUSH_PERIOD_S:g} s; Prometheus scraping every {first.scrape_interval_s:g} s "
        f"(timeout {first.scrape_timeout_s:g} s).\n"
    )
    print(markdown_table(results))
    print("\nCeiling:")
    print("\n".join(f"- {line}" for line in ceiling(results)))
    for result in results:
        if result.first_error:
            print(f"{result.groups:,} groups: {result.push_errors} pushes failed, first: {result.first_error}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        document = {
            "versions": versions,
            "body": asdict(body),
            "pushers": PUSHERS,
            "push_period_s": PUSH_PERIOD_S,
            "steady_s": steady_s,
            "runs": [asdict(result) | {"kib_per_group": result.kib_per_group} for result in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
