"""The local demo: real servers on 127.0.0.1, IngestFunction's handler (loaded as Lambda loads it) taking
CloudEvents over API Gateway REST events and producing them to a real Kafka broker, then what a user wants
to see: accepted ids, one trace per event across both
functions (from the OTLP receiver), key metrics (from Prometheus) and a captured error's event id.
KafkaConsumerFunction's handler then takes the records as one SelfManagedKafka batch and delivers them.

Run with `make demo` (add ARGS=--keep to leave the servers running). Both functions are loaded in this one
process, one after the other, the way Lambda loads each in its own; their subscriptions' targets here are a
local webhook receiver (it checks the HMAC signature) and another Kafka topic.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from localbus import servers
from localbus.context import LambdaContext
from localbus.functions import load_handler_module
from localbus.kafka_events import header, lambda_event, lambda_record, read_topic
from localbus.traces import ReceivedSpan
from localbus.webhook import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("LOCALBUS_STATE_DIR") or ROOT / ".local" / "demo")
TOPICS = ("orders", "payments", "customers")  # where functions/ingest/routes.json sends the events below
EVENTS = [
    ("com.example.order.created", "/shop/orders", {"order_id": "o-1001", "amount": 42.5, "currency": "EUR"}),
    ("com.example.payment.captured", "/shop/payments", {"order_id": "o-1001", "method": "card"}),
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
        for future in admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1) for topic in (*TOPICS, AUDIT_TOPIC, CDC_TOPIC)]
        ).values():
            future.result(10)
        started.pop_all()
    return Stack(kafka, otlp, pushgateway, prometheus)


def function_environment(stack: Stack, function_name: str) -> dict[str, str]:
    """What a function's environment variables say on the local stage (see template.yaml's Globals)."""
    return {
        "OTEL_SERVICE_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ENVIRONMENT": "local",
        "VERSION": "demo",
        "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp.http_endpoint,
        "PUSHGATEWAY_URL": stack.pushgateway.url,
        "TELEMETRY_FLUSH_TIMEOUT_MS": "2000",
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.url,
    }


Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
WEBHOOK_SECRET = secrets.token_hex(16)  # made per run: the demo's webhook checks it
AUDIT_TOPIC = "orders-audit"


def consumer_environment(webhook: WebhookReceiver) -> dict[str, str]:
    """KafkaConsumerFunction's subscriptions for the demo: payments and customers to a signed local webhook,
    orders copied to another Kafka topic."""
    subscriptions = [
        {
            "name": "billing-hook",
            "match": {"type": "com.example.payment.*"},
            "target": {"type": "webhook", "url": webhook.start()},
        },
        {
            "name": "crm-hook",
            "match": {"type": "com.example.customer.*"},
            "target": {"type": "webhook", "url": webhook.url},
        },
        {
            "name": "orders-audit",
            "match": {"type": "com.example.order.*"},
            "target": {"type": "kafka", "topic": AUDIT_TOPIC},
        },
    ]
    return {"SUBSCRIPTIONS": json.dumps(subscriptions), "WEBHOOK_SECRET": WEBHOOK_SECRET}


def poll_as_lambda_event(bootstrap: str, count: int) -> dict[str, Any]:
    """Read `count` records and shape them the way Lambda's Kafka event source mapping delivers them."""
    records = [lambda_record(message) for message in read_topic(bootstrap, TOPICS, count)]
    return lambda_event(records, source="SelfManagedKafka", bootstrap=bootstrap)


def api_event(
    method: str, resource: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as EventBusApi hands it to IngestFunction."""
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": {"Content-Type": "application/cloudevents+json", "X-Forwarded-Proto": "http"},
        "queryStringParameters": query,
        "requestContext": {"requestId": uuid.uuid4().hex, "stage": "local"},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
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


def run_demo(stack: Stack, webhook: WebhookReceiver) -> None:
    accepted, error_id = run_ingest(stack)
    run_consumer(stack, webhook, len(accepted))
    run_cdc(stack)
    show_traces(stack)
    show_metrics(stack)
    print("\n== The captured error ==")
    print(f"  event id {error_id}: the 500 answer, the JSON log line above and the span event share it")


def run_ingest(stack: Stack) -> tuple[list[str], str]:
    os.environ.update(function_environment(stack, "ingest"))
    ingest: Handler = load_handler_module("ingest", "ingest").handler

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response = ingest(event, LambdaContext(function_name="ingest"))
        return {"status": response["statusCode"], **json.loads(response["body"])}

    print("\n== IngestFunction: GET /health?deep=1 ==")
    print(f"  {call(api_event('GET', '/health', query={'deep': '1'}))}")
    print("\n== IngestFunction: POST /events (application/cloudevents+json) ==")
    accepted: list[str] = []
    for event_type, source, data in EVENTS:
        cloud_event = {"specversion": "1.0", "id": uuid.uuid4().hex, "type": event_type, "source": source, "data": data}
        answer = call(api_event("POST", "/events", cloud_event))
        accepted += answer["accepted"]
        (result,) = answer["results"]
        where = f"{result['topic']}[{result['partition']}]@{result['offset']}"
        print(f"  {answer['status']}  {event_type}  id={result['id']}  -> {where}")
    cdc = call(api_event("GET", "/api/cdc", query={"connector": "orders-db", "table": "orders", "operation": "update"}))
    print(f"  {cdc['status']}  GET /api/cdc  {cdc['recorded']}")
    error = call(api_event("GET", "/api/error", query={"type": "value"}))
    error_id = error["event_id"]
    print(f"  {error['status']}  GET /api/error  problem+json event_id={error_id}")
    return accepted, error_id


def run_consumer(stack: Stack, webhook: WebhookReceiver, count: int) -> None:
    print("\n== KafkaConsumerFunction: the records as one SelfManagedKafka batch ==")
    batch = poll_as_lambda_event(stack.kafka.url, count)
    # loaded after ingest is done: each function is its own process in Lambda, with its own telemetry
    os.environ.update(function_environment(stack, "consumer") | consumer_environment(webhook))
    consume: Handler = load_handler_module("consumer", "consumer").handler
    print(f"  partial batch response: {consume(batch, LambdaContext(function_name='consumer'))}")
    for delivery in webhook.received:
        event = delivery["event"]
        print(f"  webhook (signature verified) got {event['type']} id={event['id']}")
    audited = len(read_topic(stack.kafka.url, AUDIT_TOPIC, 1))
    print(f"  Kafka topic {AUDIT_TOPIC} got {audited} record(s)")


CDC_TOPIC = "cdc-events"


def run_cdc(stack: Stack) -> None:
    """A Postgres row created then updated, as Debezium Server delivers the changes through Kinesis."""
    print("\n== CdcFunction: two Debezium changes of one Postgres row, over Kinesis ==")
    os.environ.update(function_environment(stack, "cdc") | {"CDC_TOPIC": CDC_TOPIC})
    cdc: Handler = load_handler_module("cdc", "cdc").handler
    source = {"name": "shop-db", "db": "shop", "schema": "public", "table": "customers"}
    now_ms = int(time.time() * 1000)
    changes = [
        {
            "op": "c",
            "before": None,
            "after": {"id": 7, "tier": "silver"},
            "source": {**source, "ts_ms": now_ms - 900, "lsn": 1},
        },
        {
            "op": "u",
            "before": {"id": 7, "tier": "silver"},
            "after": {"id": 7, "tier": "gold"},
            "source": {**source, "ts_ms": now_ms - 400, "lsn": 2},
        },
    ]
    records = [
        {
            "eventSource": "aws:kinesis",
            "eventID": f"shardId-000000000000:{n}",
            "kinesis": {
                "partitionKey": json.dumps({"id": 7}),
                "sequenceNumber": f"4959{n:040d}",
                "data": base64.b64encode(json.dumps(change).encode()).decode(),
            },
        }
        for n, change in enumerate(changes, start=1)
    ]
    print(f"  partial batch response: {cdc({'Records': records}, LambdaContext(function_name='cdc'))}")
    for message in read_topic(stack.kafka.url, CDC_TOPIC, len(changes)):
        ce_type = header(message, "ce_type") or b""
        print(f"  {CDC_TOPIC}: key={message.key()!r}  type={ce_type.decode()}")


def show_traces(stack: Stack) -> None:
    print("\n== Traces (from the OTLP receiver): one per event, across the functions ==")
    store = stack.otlp.store
    # consumer: invocation + batch + one per record + one per delivery
    consumer_spans = store.wait_for(
        lambda found: sum(span.name.startswith("deliver ") for span in found) >= len(EVENTS), "consumer"
    )

    def ingest_done(found: list[ReceivedSpan]) -> bool:
        names = [span.name for span in found]
        return names.count("POST /events") == len(EVENTS) and "GET /api/error" in names

    cdc_spans = store.wait_for(lambda found: sum(span.name == f"produce {CDC_TOPIC}" for span in found) >= 2, "cdc")
    spans = consumer_spans + cdc_spans + store.wait_for(ingest_done, "ingest")
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    for trace_id, trace_spans in by_trace.items():
        print(f"  trace {trace_id}")
        print_trace(trace_spans)


def show_metrics(stack: Stack) -> None:
    print("\n== Metrics (from Prometheus, scraping the Pushgateway) ==")
    queries = {
        "HTTP requests by endpoint and status": "sum by (endpoint, status) (http_requests_total)",
        "events produced by type": "sum by (event_type) (events_produced_total)",
        "events consumed by type": "sum by (event_type) (events_consumed_total)",
        "errors captured": "sum by (job, component, error_type) (errors_captured_total)",
        "Kafka operations": "sum by (operation, topic, status) (kafka_operations_total)",
        "CDC events": "sum by (connector, table, operation) (cdc_events_total)",
        "CDC lag (changes observed)": "sum by (connector, table) (cdc_lag_seconds_count)",
        "deliveries": "sum by (subscription, target_type, outcome) (deliveries_total)",
        "cold starts": "sum by (job) (lambda_cold_starts_total)",
    }
    stack.prometheus.wait_for_pushgateway()
    invocations = 'sum(lambda_invocations_total{job=~"ingest|consumer|cdc"})'
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # until the scrape after the last push has landed
        # ingest: health, the events, cdc, error; the consumer: one batch; CdcFunction: one batch
        if [float(s["value"][1]) for s in stack.prometheus.query(invocations)] == [len(EVENTS) + 5]:
            break
        time.sleep(0.25)
    for title, expression in queries.items():
        print(f"  {title}:  {expression}")
        for sample in stack.prometheus.query(expression):
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample["metric"].items()))
            print(f"      {{{labels}}} = {sample['value'][1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the servers running after the demo")
    args = parser.parse_args()
    stack = start_stack()
    webhook = WebhookReceiver(WEBHOOK_SECRET)
    try:
        run_demo(stack, webhook)
    except BaseException:
        stack.stop()
        raise
    finally:
        webhook.stop()
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
