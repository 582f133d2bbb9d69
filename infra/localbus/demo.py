"""The local demo: real servers on 127.0.0.1, two Lambda-style handlers using the ObservabilityLayer, events
through a real Kafka broker, then what a user wants to see: accepted ids, one trace per event across both
functions (from the OTLP receiver), key metrics (from Prometheus) and a captured error's event id.

Run with `make demo` (add ARGS=--keep to leave the servers running). Until the bus's own functions land,
the two handlers here stand in for IngestFunction and KafkaConsumerFunction: they show the layer's
wrappers, propagation through Kafka headers and batch links, not the bus's behaviour.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from observability import Telemetry
from opentelemetry.trace import SpanKind

from localbus import servers
from localbus.context import LambdaContext
from localbus.traces import ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("LOCALBUS_STATE_DIR") or ROOT / ".local" / "demo")
TOPIC = "events"
EVENTS = [
    ("com.example.order.created", "/shop/orders", {"order_id": "o-1001", "amount": 42.5}),
    ("com.example.order.paid", "/shop/payments", {"order_id": "o-1001", "method": "card"}),
    ("com.example.customer.updated", "/crm", {"customer_id": "c-7", "tier": "gold"}),
]


@dataclass
class Stack:
    kafka: servers.Server
    otlp: servers.OtlpReceiver
    pushgateway: servers.Server
    prometheus: servers.Prometheus

    def stop(self) -> None:
        for server in (self.prometheus, self.pushgateway, self.otlp, self.kafka):
            server.stop()

    def pids(self) -> dict[str, int]:
        return {
            "tansu": self.kafka.process.process.pid,
            "rotel": self.otlp.process.process.pid,
            "pushgateway": self.pushgateway.process.process.pid,
            "prometheus": self.prometheus.process.process.pid,
        }


def start_stack() -> Stack:
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as started:  # a server that fails to start stops the ones before it
        kafka = servers.start_tansu(logs)
        started.callback(kafka.stop)
        otlp = servers.start_rotel(logs, kafka.url)
        started.callback(otlp.stop)
        pushgateway = servers.start_pushgateway(logs)
        started.callback(pushgateway.stop)
        data_dir = STATE_DIR / f"prometheus-{uuid.uuid4().hex[:6]}"
        prometheus = servers.start_prometheus(logs, data_dir, pushgateway.url)
        started.callback(prometheus.stop)
        admin = AdminClient({"bootstrap.servers": kafka.url})
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])[TOPIC].result(10)
        started.pop_all()
    return Stack(kafka, otlp, pushgateway, prometheus)


def function_telemetry(stack: Stack, function_name: str) -> Telemetry:
    """What each function's execution environment builds from its environment variables at init."""
    return Telemetry.from_environment(
        {
            "OTEL_SERVICE_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_REGION": "us-east-1",
            "ENVIRONMENT": "local",
            "VERSION": "demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp.http_endpoint,
            "PUSHGATEWAY_URL": stack.pushgateway.url,
            "TELEMETRY_FLUSH_TIMEOUT_MS": "2000",
        }
    )


Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def ingest_handler(telemetry: Telemetry, producer: Producer) -> Handler:
    @telemetry.http_handler
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if event["resource"] == "/api/error":
            raise RuntimeError("demo failure requested by GET /api/error")
        body = json.loads(event["body"])
        with telemetry.kafka_operation("produce", TOPIC) as produce:
            value = json.dumps(body).encode()
            headers = [("ce_type", body["type"].encode()), ("ce_source", body["source"].encode())]
            producer.produce(TOPIC, value=value, key=body["id"], headers=headers + telemetry.kafka_headers())
            producer.flush(5)
            produce.record_message(len(value), key=body["id"])
        telemetry.metrics.inc("events_produced_total", event_type=body["type"], topic=TOPIC, source=body["source"])
        return {"statusCode": 202, "body": json.dumps({"accepted": [body["id"]]})}

    return handler


def consumer_handler(telemetry: Telemetry) -> Handler:
    @telemetry.lambda_handler(name="consume events", kind=SpanKind.CONSUMER, trigger="pubsub")
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        records = [record for batch in event["records"].values() for record in batch]
        contexts = [telemetry.context_from_kafka_headers(record["headers"]) for record in records]
        with telemetry.span("deliver batch", kind=SpanKind.CONSUMER, links=telemetry.links(contexts)):
            for record, record_context in zip(records, contexts, strict=True):
                body = json.loads(base64.b64decode(record["value"]))
                lag = time.time() - record["timestamp"] / 1000
                telemetry.metrics.observe("kafka_consumer_lag_seconds", lag, topic=record["topic"])
                with telemetry.event_processing(
                    body["type"], body["source"], kind=SpanKind.CONSUMER, context=record_context
                ):
                    telemetry.metrics.inc(
                        "events_consumed_total", event_type=body["type"], topic=record["topic"], source=body["source"]
                    )
        return {"batchItemFailures": []}

    return handler


def header_pairs(headers: object) -> list[tuple[str, bytes | None]]:
    if isinstance(headers, dict):
        return [(str(key), value) for key, value in headers.items()]
    return list(headers) if isinstance(headers, list) else []


def poll_as_lambda_event(bootstrap: str, count: int) -> dict[str, Any]:
    """Read `count` records and shape them the way Lambda's Kafka event source mapping delivers them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len(records) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        records.append(
            {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "timestamp": message.timestamp()[1],
                "timestampType": "CREATE_TIME",
                "key": base64.b64encode(message.key() or b"").decode(),
                "value": base64.b64encode(message.value() or b"").decode(),
                "headers": [{key: list(value or b"")} for key, value in header_pairs(message.headers())],
            }
        )
    consumer.close()
    return {"eventSource": "SelfManagedKafka", "records": {f"{TOPIC}-0": records}}


def api_event(method: str, resource: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": {"content-type": "application/cloudevents+json"},
        "requestContext": {"requestId": uuid.uuid4().hex, "stage": "local"},
        "body": json.dumps(body) if body is not None else None,
    }


def print_trace(spans: list[ReceivedSpan]) -> None:
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    ids = {span.span_id for span in spans}
    for span in spans:
        children[span.parent_span_id if span.parent_span_id in ids else ""].append(span)

    def show(span: ReceivedSpan, depth: int) -> None:
        service = span.resource.get("service.name")
        links = f"  (links: {len(span.links)})" if span.links else ""
        print(f"    {'  ' * depth}{span.name}  [{service}]{links}")
        for child in children[span.span_id]:
            show(child, depth + 1)

    for root in children[""]:
        show(root, 0)


def run_demo(stack: Stack) -> None:
    ingest_telemetry = function_telemetry(stack, "demo-ingest")
    consumer_telemetry = function_telemetry(stack, "demo-consumer")
    producer = Producer(
        {
            "bootstrap.servers": stack.kafka.url,
            "enable.idempotence": True,
            "acks": "all",
            "log.connection.close": False,
        }
    )
    ingest = ingest_handler(ingest_telemetry, producer)
    consume = consumer_handler(consumer_telemetry)

    print("\n== Sending events through the ingest handler (POST /events) ==")
    accepted: list[str] = []
    for event_type, source, data in EVENTS:
        cloud_event = {"specversion": "1.0", "id": uuid.uuid4().hex, "type": event_type, "source": source, "data": data}
        response = ingest(api_event("POST", "/events", cloud_event), LambdaContext(function_name="demo-ingest"))
        accepted += json.loads(response["body"])["accepted"]
        print(f"  {response['statusCode']}  {event_type}  id={cloud_event['id']}")
    error = ingest(api_event("GET", "/api/error"), LambdaContext(function_name="demo-ingest"))
    error_id = json.loads(error["body"])["event_id"]
    print(f"  {error['statusCode']}  GET /api/error  problem+json event_id={error_id}")

    print("\n== Consuming them as one Kafka batch (the consumer handler) ==")
    batch = poll_as_lambda_event(stack.kafka.url, len(accepted))
    print(f"  {consume(batch, LambdaContext(function_name='demo-consumer'))}")

    print("\n== Traces (from the OTLP receiver): one per event, across both functions ==")
    store = stack.otlp.store
    # consumer: invocation + batch + one per record; ingest: request + produce per event, and the failed request
    consumer_spans = store.wait_for(lambda found: len(found) >= len(EVENTS) + 2, "demo-consumer")
    spans = consumer_spans + store.wait_for(lambda found: len(found) >= 2 * len(EVENTS) + 1, "demo-ingest")
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    for trace_id, trace_spans in by_trace.items():
        print(f"  trace {trace_id}")
        print_trace(trace_spans)

    print("\n== Metrics (from Prometheus, scraping the Pushgateway) ==")
    queries = {
        "HTTP requests by endpoint and status": "sum by (endpoint, status) (http_requests_total)",
        "events produced by type": "sum by (event_type) (events_produced_total)",
        "events consumed by type": "sum by (event_type) (events_consumed_total)",
        "errors captured": "sum by (job, component, error_type) (errors_captured_total)",
        "cold starts": "sum by (job) (lambda_cold_starts_total)",
    }
    stack.prometheus.wait_for_pushgateway()
    invocations = 'sum(lambda_invocations_total{job=~"demo-.*"})'
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # until the scrape after the last push has landed
        if [float(s["value"][1]) for s in stack.prometheus.query(invocations)] == [len(EVENTS) + 2]:
            break
        time.sleep(0.25)
    for title, expression in queries.items():
        print(f"  {title}:  {expression}")
        for sample in stack.prometheus.query(expression):
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample["metric"].items()))
            print(f"      {{{labels}}} = {sample['value'][1]}")

    print("\n== The captured error ==")
    print(f"  event id {error_id}: the 500 answer, the JSON log line above and the span event share it")
    producer.flush(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the servers running after the demo")
    args = parser.parse_args()
    stack = start_stack()
    try:
        run_demo(stack)
    except BaseException:
        stack.stop()
        raise
    if not args.keep:
        stack.stop()
        print("\nServers stopped. `make demo ARGS=--keep` leaves them running to explore.")
        return
    pids = stack.pids()
    (STATE_DIR / "pids.json").write_text(json.dumps(pids))
    print("\nServers left running:")
    print(f"  Prometheus   {stack.prometheus.url}   (try: sum by (job) (rate(http_requests_total[1m])))")
    print(f"  Pushgateway  {stack.pushgateway.url}")
    print(f"  OTLP         {stack.otlp.http_endpoint} (HTTP), {stack.otlp.grpc_endpoint} (gRPC)")
    print(f"  Kafka        {stack.kafka.url}")
    print("Stop them with `make stop` (it signals exactly these PIDs).")


def stop_kept() -> None:
    """Stop the servers a `--keep` demo left running, by the PIDs it recorded."""
    pid_file = STATE_DIR / "pids.json"
    if not pid_file.exists():
        print("nothing to stop")
        return
    for name, pid in json.loads(pid_file.read_text()).items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            command = b""
        if name.encode() not in command and b"rotel" not in command:  # the PID was reused: not ours
            print(f"{name} (pid {pid}) had already stopped")
            continue
        os.kill(pid, signal.SIGTERM)
        print(f"stopped {name} (pid {pid})")
    pid_file.unlink()


if __name__ == "__main__":
    main()
