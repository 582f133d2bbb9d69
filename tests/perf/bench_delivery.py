"""Benchmark: KafkaConsumerFunction's delivery engine against today's baseline (the sequential consumer of an
earlier commit), side by side in one run.

    make bench-delivery            # or: make bench-delivery ARGS="--quick"

One 1,000-record batch of one partition and 100 keys goes through the handler (`app.handler`, in a fresh
process per run, after a 10-record warm-up batch) to two subscriptions: an SQS queue and a webhook that takes
5 ms per request. Every event must reach each target exactly once, and the webhook must see each key's events
in order; a run that breaks either is reported as broken, not timed.

- The SQS endpoint is a minimal SQS-compatible server (it answers at once, as real SQS scales out): moto and
  LocalStack take well under 1,000 messages/s on these machines, which would measure them, not the engine.
  The moto figure is reported beside it.
- The webhook is a threaded HTTP/1.1 server (keep-alive) that sleeps 5 ms per request.
- Also: the per-record cost of a batch whose records match no subscription, with its spans sampled, not
  sampled (`OTEL_TRACES_SAMPLER=always_off`) and with telemetry off (`OTEL_SDK_DISABLED`: no spans, no
  metrics): what the layer costs a record.

Runs alternate between the cases (baseline, engine, baseline, ...); the table gives medians and the ratio.
The baseline is the commit named by --baseline (default: the last one before the engine), checked out in a
temporary git worktree.
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
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "f0cab54"  # the sequential consumer, before the delivery engine
RECORDS, KEYS, WEBHOOK_MS = 1000, 100, 5
NO_MATCH_CASES: dict[str, dict[str, str]] = {
    "engine, no match": {},
    "engine, no match, spans not sampled": {"OTEL_TRACES_SAMPLER": "always_off"},
    "engine, no match, telemetry off (OTEL_SDK_DISABLED)": {"OTEL_SDK_DISABLED": "true"},
}


# the servers (each in a process of its own, so that they do not share the handler's interpreter lock)


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[str] = []

    def add(self, ids: list[str]) -> None:
        with self.lock:
            self.arrivals.extend(ids)


def serve(kind: str, port_file: str) -> None:
    stats = _Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body are two writes: without this, Nagle and the client's delayed ACK add 40 ms to each
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # /stats, /reset
            if self.path == "/reset":
                with stats.lock:
                    stats.arrivals.clear()
            with stats.lock:
                body = json.dumps(stats.arrivals).encode()
            self._answer(200, body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if kind == "webhook":
                time.sleep(WEBHOOK_MS / 1000)
                stats.add([json.loads(body)["id"]])
                self._answer(200, b"")
                return
            target = self.headers.get("X-Amz-Target", "")
            request = json.loads(body or b"{}")
            if target.endswith("SendMessageBatch"):
                entries = request.get("Entries", [])
                stats.add([json.loads(entry["MessageBody"]).get("id", "?") for entry in entries])
                answer = {"Successful": [{"Id": e["Id"], "MessageId": uuid.uuid4().hex} for e in entries], "Failed": []}
            elif target.endswith("SendMessage"):
                stats.add([json.loads(request["MessageBody"]).get("id", "?")])
                answer = {"MessageId": uuid.uuid4().hex}
            else:
                answer = {}
            self._answer(200, json.dumps(answer).encode(), "application/x-amz-json-1.0")

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


@contextlib.contextmanager
def server(kind: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port_file)])
        try:
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(10)


@contextlib.contextmanager
def moto_sqs() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in the table's output

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


def arrivals(url: str, *, reset: bool = False) -> list[str]:
    with urllib.request.urlopen(f"{url}/{'reset' if reset else 'stats'}", timeout=10) as response:
        return list(json.loads(response.read()))


# one run: a fresh process with the consumer of `functions` loaded as Lambda loads it


def run_case(functions: str, sqs_url: str, webhook_url: str, match: bool) -> dict[str, Any]:
    """In the child: the handler over the warm-up batch, then the timed batch; returns the timing."""
    sys.path[:0] = [f"{functions}/consumer", f"{functions}/observability_layer", str(ROOT / "tests")]
    queue = f"{sqs_url}/000000000000/bench-target"
    pattern = "com.example.order.*" if match else "com.example.none"
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": sqs_url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "bench-consumer",
            "AWS_LAMBDA_FUNCTION_NAME": "bench-consumer",
            "DLQ_URL": f"{sqs_url}/000000000000/bench-dlq",
            "RETRY_QUEUE_URL": f"{sqs_url}/000000000000/bench-retries",
            "SUBSCRIPTIONS": json.dumps(
                [
                    {"name": "queue", "match": {"type": pattern}, "target": {"type": "sqs", "url": queue}},
                    {"name": "hook", "match": {"type": pattern}, "target": {"type": "webhook", "url": webhook_url}},
                ]
            ),
        }
    )
    import boto3

    with contextlib.suppress(Exception):  # moto needs the queues; the minimal endpoint takes any
        sqs = boto3.client("sqs")
        for name in ("bench-target", "bench-dlq", "bench-retries"):
            sqs.create_queue(QueueName=name)
    import app  # type: ignore[import-not-found]
    from samhost.kafka_events import lambda_event
    from support.context import LambdaContext

    def batch(prefix: str, count: int) -> dict[str, Any]:
        records = []
        for n in range(count):
            event = {
                "specversion": "1.0",
                "id": f"{prefix}-{n}",
                "source": "/bench",
                "type": "com.example.order.created",
                "data": {"n": n},
            }
            records.append(
                {
                    "topic": "orders",
                    "partition": 0,
                    "offset": n,
                    "timestamp": int(time.time() * 1000),
                    "timestampType": "CREATE_TIME",
                    "key": base64.b64encode(f"key-{n % KEYS}".encode()).decode(),
                    "value": base64.b64encode(json.dumps(event).encode()).decode(),
                    "headers": [],
                }
            )
        return lambda_event(records)

    app.handler(batch("warm", 10), LambdaContext(function_name="bench-consumer", timeout_s=900))
    timed = batch("run", RECORDS)
    started = time.perf_counter()
    response = app.handler(timed, LambdaContext(function_name="bench-consumer", timeout_s=900))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "failures": len(response.get("batchItemFailures", []))}


def one_run(
    functions: Path,
    sqs_url: str,
    webhook_url: str,
    *,
    match: bool = True,
    counted_sqs: bool = True,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One fresh-process run; `counted_sqs`: the SQS endpoint is the minimal one, which counts what it got;
    `env`: more environment for the handler's process."""
    arrivals(webhook_url, reset=True)
    if counted_sqs:
        arrivals(sqs_url, reset=True)
    output = subprocess.run(
        [sys.executable, __file__, "--case", str(functions), sqs_url, webhook_url, "match" if match else "none"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    hooked = [event_id for event_id in arrivals(webhook_url) if event_id.startswith("run-")]
    result["broken"] = _broken(hooked, match)
    if match and counted_sqs and not result["broken"]:
        queued = sorted(event_id for event_id in arrivals(sqs_url) if event_id.startswith("run-"))
        if queued != sorted(f"run-{n}" for n in range(RECORDS)):
            result["broken"] = f"SQS got {len(queued)} messages of {len(set(queued))} events"
    return result


def _broken(hooked: list[str], match: bool) -> str:
    if not match:
        return f"{len(hooked)} deliveries for no match" if hooked else ""
    expected = {f"run-{n}" for n in range(RECORDS)}
    if sorted(hooked) != sorted(expected):
        return f"webhook got {len(hooked)} deliveries of {len(set(hooked))} events (expected {RECORDS} once each)"
    last: dict[int, int] = {}
    for event_id in hooked:
        n = int(event_id.split("-")[1])
        if last.get(n % KEYS, -1) > n:
            return f"key-{n % KEYS} out of order at the webhook"
        last[n % KEYS] = n
    return ""


@contextlib.contextmanager
def baseline_tree(ref: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(folder), ref], check=True)
    try:
        yield folder / "functions"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per case instead of three")
    parser.add_argument("--baseline", default=BASELINE, help="the commit whose consumer is the baseline")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    engine = ROOT / "functions"
    rows: list[tuple[str, str, list[dict[str, Any]]]] = []
    with server("sqs") as sqs_url, server("webhook") as webhook_url, baseline_tree(args.baseline) as old:
        results: dict[str, list[dict[str, Any]]] = {"baseline": [], "engine": []}
        for _ in range(runs):  # alternated: the machine's drift hits both alike
            results["baseline"].append(one_run(old, sqs_url, webhook_url))
            results["engine"].append(one_run(engine, sqs_url, webhook_url))
        rows.append(("baseline (sequential)", "minimal SQS", results["baseline"]))
        rows.append(("engine", "minimal SQS", results["engine"]))
        with moto_sqs() as moto_url:
            moto_runs = [one_run(engine, moto_url, webhook_url, counted_sqs=False) for _ in range(runs)]
            rows.append(("engine", "moto SQS (its messages not counted)", moto_runs))
        # what a record costs when nothing matches it, and how much of that is tracing: the same batch with its
        # spans sampled (the default), not sampled, and with the SDK disabled (metrics stay on in all three)
        no_match: dict[str, list[dict[str, Any]]] = {name: [] for name in NO_MATCH_CASES}
        for _ in range(runs):
            for name, env in NO_MATCH_CASES.items():
                no_match[name].append(one_run(engine, sqs_url, webhook_url, match=False, env=env))
        rows.extend((name, "-", measured) for name, measured in no_match.items())
    print(
        f"\nKafkaConsumerFunction: {RECORDS} records of one partition, {KEYS} keys, to SQS + a {WEBHOOK_MS} ms webhook"
    )
    print(f"(medians of {runs} fresh-process run(s); handler time of the batch after a warm-up batch)\n")
    print("| case | SQS endpoint | batch time | events/s | per record | ratio to baseline | checks |")
    print("|---|---|---:|---:|---:|---:|---|")
    base = statistics.median(r["seconds"] for r in results["baseline"])
    for name, endpoint, measured in rows:
        seconds = statistics.median(r["seconds"] for r in measured)
        broken = "; ".join(
            sorted(
                {r["broken"] for r in measured if r["broken"]}
                | {f"{r['failures']} failures" for r in measured if r["failures"]}
            )
        )
        checks = broken or ("nothing delivered" if "no match" in name else "each event once per target, keys in order")
        print(
            f"| {name} | {endpoint} | {seconds * 1000:.0f} ms | {RECORDS / seconds:,.0f}"
            f" | {seconds / RECORDS * 1e6:.0f} µs | {seconds / base:.2f}x | {checks} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--case":
        functions, sqs_url, webhook_url, match = sys.argv[2:6]
        print(json.dumps(run_case(functions, sqs_url, webhook_url, match == "match")))
    else:
        main()
