"""The load side of the Pushgateway benchmark (bench_pushgateway.py): one busy environment's registry, the
pushers that create and re-push groups through the layer's own PushgatewayExporter, and what the Pushgateway and
Prometheus say about it (sizes, RSS, scrapes)."""

from __future__ import annotations

import http.client
import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "functions" / "observability_layer", ROOT / "functions" / "maintenance"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from hoststack import servers  # noqa: E402
from lambda_event_bus.telemetry.metrics import Metrics, PushgatewayExporter, new_instance_id  # noqa: E402
from samhost.processes import binary  # noqa: E402

PUSHERS = 16
"""Concurrent pushers (environments flushing at the same moment); each keeps its own connections."""
PUSH_TIMEOUT_S = 30.0
"""Long, to measure a slow push whole; the layer's flush gives up after DEFAULT_FLUSH_TIMEOUT_MS."""
LABEL_VALUE_LIMIT = 100  # the layer's default METRICS_LABEL_VALUE_LIMIT
SERVICES: tuple[tuple[str, str], ...] = (
    ("event-bus-ingest", "event-bus-IngestFunction-7QK2M1XG0ZP4"),
    ("event-bus-consumer", "event-bus-KafkaConsumerFunction-1H0V8W3NRC5T"),
    ("event-bus-cdc", "event-bus-CdcFunction-Q9D2LX4B7JEM"),
)


# one execution environment's registry


def environment_metrics() -> Metrics:
    """Every catalog metric with a few label sets, as a busy environment that has seen a bit of everything."""
    metrics = Metrics(label_value_limit=LABEL_VALUE_LIMIT)
    for endpoint in ("/events", "/events/batch"):
        for status in ("202", "400"):
            metrics.inc("http_requests_total", 40, method="POST", endpoint=endpoint, status=status)
            for seconds in (0.004, 0.012, 0.03, 0.2):
                metrics.observe(
                    "http_request_duration_seconds", seconds, method="POST", endpoint=endpoint, status=status
                )
    metrics.set("http_active_connections", 1)
    event_types = ("com.example.order.created", "com.example.order.paid", "com.example.customer.updated")
    sources = {"orders": "/orders/service", "events": "/customers/service"}
    for event_type in event_types:
        for topic, source in sources.items():
            for name in ("events_produced_total", "events_consumed_total", "events_redelivered_total"):
                metrics.inc(name, 7, event_type=event_type, topic=topic, source=source)
        for source in sources.values():
            metrics.observe("event_processing_duration_seconds", 0.008, event_type=event_type, source=source)
        metrics.inc(
            "event_processing_errors_total", event_type=event_type, source="/orders/service", error_type="ValueError"
        )
    for topic in ("orders", "events"):
        for operation in ("produce", "consume"):
            for status in ("success", "error"):
                metrics.inc("kafka_operations_total", 3, operation=operation, topic=topic, status=status)
            metrics.observe("kafka_message_size_bytes", 900, operation=operation, topic=topic)
        metrics.observe("kafka_consumer_lag_seconds", 0.3, topic=topic)
    metrics.set("kafka_connection_status", 1, broker="b-1.eventbus.kafka.eu-west-1.amazonaws.com:9098")
    for subscription, target in (("orders-to-fulfilment", "sqs"), ("orders-webhook", "webhook")):
        for outcome in ("delivered", "duplicate", "parked"):
            metrics.inc("deliveries_total", 5, subscription=subscription, target_type=target, outcome=outcome)
        metrics.observe("delivery_duration_seconds", 0.02, subscription=subscription, target_type=target)
    for table in ("public.orders", "public.customers"):
        for operation in ("c", "u", "d"):
            metrics.inc("cdc_events_total", 2, connector="orders-db", table=table, operation=operation)
        metrics.observe("cdc_lag_seconds", 1.5, connector="orders-db", table=table)
    metrics.set("cdc_connector_status", 1, connector="orders-db")
    metrics.inc("lambda_cold_starts_total")
    for outcome in ("success", "error"):
        metrics.inc("lambda_invocations_total", 50, outcome=outcome)
    metrics.inc("errors_captured_total", component="lambda", error_type="ValueError")
    metrics.inc("errors_captured_total", component="delivery", error_type="TimeoutError")
    for backend in ("otlp", "pushgateway"):
        metrics.inc("telemetry_export_failures_total", backend=backend, reason="timeout")
        metrics.inc("telemetry_export_skipped_total", backend=backend)
        metrics.observe("telemetry_flush_duration_seconds", 0.004, backend=backend)
    metrics.inc("sentry_events_dropped_total", reason="network")
    metrics.set("telemetry_spans_retained", 0)
    metrics.inc("telemetry_spans_dropped_total", reason="retention_full")
    metrics.inc("metric_label_overflow_total", metric="events_produced_total", label="event_type")
    return metrics


def count_series(exposition: bytes) -> int:
    """Sample lines of a text exposition (every line that is neither a comment nor blank)."""
    return sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))


@dataclass(frozen=True)
class Body:
    bytes: int
    series: int
    serialise_ms: float


def measure_body(metrics: Metrics, rounds: int = 200) -> Body:
    body = metrics.exposition()
    started = time.perf_counter()
    for _ in range(rounds):
        metrics.exposition()
    return Body(len(body), count_series(body), (time.perf_counter() - started) / rounds * 1000)


# the pushers


@dataclass(frozen=True)
class Group:
    job: str
    function_name: str
    instance: str


def make_groups(count: int) -> list[Group]:
    return [Group(*SERVICES[index % len(SERVICES)], new_instance_id()) for index in range(count)]


@dataclass
class PushLog:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, latency_ms: float | None, error: str | None = None) -> None:
        with self.lock:
            if latency_ms is not None:
                self.latencies_ms.append(latency_ms)
            if error is not None:
                self.errors.append(error)


class Pusher:
    """One pusher thread's exporters (one per service, each with its own kept-alive connection), re-pointed at
    the group to push with `rename` (the instance is all that differs within a service)."""

    def __init__(self, url: str, metrics: Metrics) -> None:
        self._exporters = {
            job: PushgatewayExporter(url, job=job, function_name=function_name, instance="0", registry=metrics.registry)
            for job, function_name in SERVICES
        }

    def push(self, group: Group, log: PushLog) -> None:
        exporter = self._exporters[group.job]
        exporter.rename(group.instance)
        started = time.perf_counter()
        try:
            exporter.push(PUSH_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as error:
            log.add(None, f"{type(error).__name__}: {error}")
        else:
            log.add((time.perf_counter() - started) * 1000)

    def close(self) -> None:
        for exporter in self._exporters.values():
            exporter.close()


def run_pushers(url: str, metrics: Metrics, next_group: Callable[[], Group | None]) -> PushLog:
    """PUSHERS threads push the groups `next_group` hands out (it paces them) until it answers None."""
    log = PushLog()
    stopping = threading.Event()  # set when this thread is interrupted: the pushers stop after their push

    def loop() -> None:
        pusher = Pusher(url, metrics)
        try:
            while not stopping.is_set() and (group := next_group()) is not None:
                pusher.push(group, log)
        finally:
            pusher.close()

    with ThreadPoolExecutor(max_workers=PUSHERS, thread_name_prefix="pusher") as pool:
        futures = [pool.submit(loop) for _ in range(PUSHERS)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stopping.set()
            raise
    return log


def fill(url: str, metrics: Metrics, groups: Sequence[Group]) -> tuple[PushLog, float]:
    """Every group pushed once, as fast as the pushers go: (log, seconds)."""
    pending = iter(groups)
    lock = threading.Lock()

    def next_group() -> Group | None:
        with lock:
            return next(pending, None)

    started = time.perf_counter()
    log = run_pushers(url, metrics, next_group)
    return log, time.perf_counter() - started


def steady(url: str, metrics: Metrics, groups: Sequence[Group], rate: float, seconds: float) -> tuple[PushLog, float]:
    """Random groups re-pushed at `rate` pushes/s for `seconds`: push k is due at start + k / rate, taken by the
    first free pusher (a late pusher sends at once: the rate achieved says whether they kept up). No push starts
    after `seconds`, however far behind the pushers are; those under way are waited for."""
    chooser = random.Random(len(groups))  # noqa: S311 - picking groups, not secrets
    lock = threading.Lock()
    issued = 0
    started = time.perf_counter()
    end = started + seconds

    def next_group() -> Group | None:
        nonlocal issued
        with lock:
            due = started + issued / rate
            if due >= end or time.perf_counter() >= end:
                return None
            issued += 1
            group = chooser.choice(groups)
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        return group

    log = run_pushers(url, metrics, next_group)
    return log, time.perf_counter() - started


# what the servers say


def rss_mib(pid: int) -> float:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def http_get(url: str, timeout: float = 60.0) -> tuple[bytes, float]:
    """(body, seconds) of one GET on a new connection."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return body, time.perf_counter() - started


def groups_held(pushgateway_url: str) -> tuple[int, int]:
    """(groups, answer bytes) of the Pushgateway's own GET /api/v1/metrics (not through the sweeper under test)."""
    body, _ = http_get(f"{pushgateway_url}/api/v1/metrics")
    return len(json.loads(body)["data"]), len(body)


def groups_left(pushgateway_url: str, timeout: float = 10.0) -> int:
    """The groups held once the deletes are applied: the Pushgateway answers a DELETE (202) before its write loop
    applies it, so the last ones may still be queued for a moment."""
    deadline = time.monotonic() + timeout
    while (held := groups_held(pushgateway_url)[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return held


def progress(count: int, message: str) -> None:
    print(f"  {count:,} groups: {message}", file=sys.stderr, flush=True)


def scalar(prometheus: servers.Prometheus, expression: str) -> float | None:
    result = prometheus.query(expression)
    return float(result[0]["value"][1]) if result else None


def scrape_target(prometheus: servers.Prometheus) -> dict[str, Any]:
    """The Pushgateway's target as Prometheus sees it (scrapeInterval, scrapeTimeout, lastError, ...)."""
    body, _ = http_get(f"{prometheus.url}/api/v1/targets?state=active", timeout=5)
    for target in json.loads(body)["data"]["activeTargets"]:
        if target["labels"].get("job") == "pushgateway":
            return dict(target)
    raise RuntimeError("Prometheus has no pushgateway target")


def seconds_of(duration: str) -> float:
    """A Prometheus duration as the targets API gives it (`1s`, `500ms`, `1m`, `1m30s`)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    if not parts:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(int(number) * units[unit] for number, unit in parts)


def wait_for_scrape_after(prometheus: servers.Prometheus, since: float, timeout: float = 20.0) -> None:
    """Until Prometheus has recorded a scrape of the Pushgateway that started after `since` (Unix time),
    successful or not (a scrape longer than the scrape timeout fails: that is a finding, not an error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query('up{job="pushgateway"}')
        if result and float(result[0]["value"][0]) > since:
            return
        time.sleep(0.25)
    raise RuntimeError("Prometheus recorded no scrape of the Pushgateway after it was restarted")


def server_versions() -> str:
    versions = []
    for name in ("prometheus-pushgateway", "prometheus"):
        answer = subprocess.run([binary(name), "--version"], capture_output=True, text=True, check=False)
        lines = (answer.stdout or answer.stderr).splitlines()
        versions.append(lines[0] if lines else f"{name} (no version)")
    return "; ".join(versions)
