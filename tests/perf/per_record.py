"""What the layer costs per record: KafkaConsumerFunction's handler over 500-record MSK batches (a fresh process
per run, five batches timed in each after a warm-up, their median), with the records' traces sampled, not sampled
(their producer's traceparent says so, as after head sampling at ingest), and with telemetry off
(OTEL_SDK_DISABLED=true: no spans, no metrics, nothing exported). The layer's cost per record is a mode's time
minus telemetry off's, over 500.

Two batches: records that no subscription matches (decoding and telemetry only), and records delivered to one
webhook subscription (a local HTTP server that answers at once, on kept-alive connections). Spans and metrics go
to rotel and the Pushgateway, inline, inside the timed call. The idempotency store is the in-memory one, so that a
DynamoDB emulator's speed is not what is measured; the handler is otherwise the deployed one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
ROOT = PERF.parents[1]
RECORDS = 500
MODES = ("sampled", "unsampled", "off")
TARGETS = ("none", "webhook")
SAMPLED, UNSAMPLED = "01", "00"


def batch(prefix: str, count: int, flags: str) -> dict[str, Any]:
    """An MSK batch of binary-mode CloudEvents, each with its producer's traceparent."""
    records = []
    for n in range(count):
        trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
        headers = {
            "ce_specversion": "1.0",
            "ce_id": f"{prefix}-{n}",
            "ce_source": "/bench",
            "ce_type": "com.example.order.created",
            "content-type": "application/json",
            "traceparent": f"00-{trace_id}-{span_id}-{flags}",
        }
        records.append(
            {
                "topic": "orders",
                "partition": 0,
                "offset": n,
                "timestamp": int(time.time() * 1000),
                "timestampType": "CREATE_TIME",
                "key": base64.b64encode(f"key-{n % 50}".encode()).decode(),
                "value": base64.b64encode(json.dumps({"order_id": n, "amount": 12.5}).encode()).decode(),
                "headers": [{name: list(value.encode())} for name, value in headers.items()],
            }
        )
    return {
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:eu-west-1:1:cluster/bench/1",
        "records": {"orders-0": records},
    }


BATCHES = 5


def child(mode: str) -> None:
    """In the fresh process: load the handler, warm it up on 100 records, time BATCHES batches of RECORDS (each
    with its flush) and report their median: a single batch's time moves with the machine by more than the
    layer's cost."""
    sys.path[:0] = [str(ROOT / "functions" / "consumer"), str(ROOT / "functions" / "observability_layer"), str(PERF)]
    import app  # type: ignore[import-not-found]
    from cold_requests import LambdaContext

    flags = UNSAMPLED if mode == "unsampled" else SAMPLED
    app.handler(batch("warm", 100, flags), LambdaContext())
    times, failures = [], 0
    for run in range(BATCHES):
        timed = batch(f"run{run}", RECORDS, flags)
        started = time.perf_counter()
        answer = app.handler(timed, LambdaContext())
        times.append(time.perf_counter() - started)
        failures += len(answer["batchItemFailures"])
    result = {"seconds": statistics.median(times), "failures": failures}
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    os._exit(0)


class _Webhook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with _Webhook.lock:
            _Webhook.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class RecordResult:
    target: str
    mode: str
    seconds: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def per_record_us(self) -> float | None:
        return statistics.median(self.seconds) / RECORDS * 1e6 if self.seconds else None


def _subscriptions(target: str, hook_url: str) -> str:
    pattern = "com.example.order.*" if target == "webhook" else "com.example.none"
    return json.dumps([{"name": "hook", "match": {"type": pattern}, "target": {"type": "webhook", "url": hook_url}}])


def measure(runs: int, base_env: Mapping[str, str], telemetry_env: Mapping[str, str]) -> list[RecordResult]:
    """`runs` fresh processes per case (each the median of its BATCHES batches), cases alternated, after one
    discarded round."""
    results = [RecordResult(target, mode) for target in TARGETS for mode in MODES]
    with webhook() as hook_url:
        for round_index in range(runs + 1):
            for result in results:
                if result.error:
                    continue
                env = {
                    **base_env,
                    "AWS_DEFAULT_REGION": "eu-west-1",
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "SUBSCRIPTIONS": _subscriptions(result.target, hook_url),
                    "WEBHOOK_TIMEOUT_MS": "2000",
                    **(telemetry_env if result.mode != "off" else {"OTEL_SDK_DISABLED": "true"}),
                }
                completed = subprocess.run(
                    [sys.executable, __file__, "--child", result.mode],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
                if completed.returncode != 0 or not lines:
                    tail = [line for line in completed.stderr.splitlines() if line.strip()]
                    result.error = tail[-1][:200] if tail else "no output"
                    continue
                data = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
                if data["failures"]:
                    result.error = f"{data['failures']} records reported for retry"
                elif round_index > 0:
                    result.seconds.append(float(data["seconds"]))
    return results


def layer_cost(results: Sequence[RecordResult], target: str, mode: str) -> float | None:
    """Microseconds per record the layer adds in `mode` over telemetry off, for `target`."""
    by_case = {(result.target, result.mode): result.per_record_us for result in results}
    measured, off = by_case.get((target, mode)), by_case.get((target, "off"))
    return None if measured is None or off is None else measured - off


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=MODES, required=True)
    child(parser.parse_args().child)
