"""The README's main command: the whole bus on this machine, deployed with SAM, with events sent through it.

`make demo` starts the local stack if it is not running (LocalStack with the project's plugins, tansu, rotel, the
Pushgateway, Prometheus, the webhook receiver), deploys template.yaml to it (`sam build` + `samlocal deploy`, the
`local` environment of samconfig.toml; skipped when the deployed template and functions are unchanged,
`--redeploy` forces it), then goes through
the front doors as a user would:

- API Gateway: GET /health, three CloudEvents to POST /events, the demo routes (/api/events, /api/kafka,
  /api/cdc) and GET /api/error;
- DynamoDB: a row written to OrdersTable, which its stream hands to CdcFunction;

and shows what came out: the accepted event ids, the deliveries (the SQS queue and the signed webhook), one trace
per event across the functions (from the OTLP receiver), the key metrics (from Prometheus) and the captured
error's event id with its line in CloudWatch Logs. The stack keeps running afterwards: it prints how to send your
own events and how to stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from hoststack import state as stack_state
from hoststack.traces import ReceivedSpan, span_tree
from samhost.deploy import source_digest

from localbus import stack
from localbus.client import BusError, LocalBus, wait_until

EVENTS = [
    ("com.example.order.created", "/shop/orders", {"order_id": "o-1001", "amount": 42.5, "currency": "EUR"}),
    ("com.example.payment.captured", "/shop/payments", {"order_id": "o-1001", "method": "card"}),
    ("com.example.customer.updated", "/crm", {"customer_id": "c-7", "tier": "gold"}),
]
METRICS = {
    "HTTP requests by endpoint and status": "sum by (endpoint, status) (http_requests_total)",
    "events produced by type": "sum by (event_type, topic) (events_produced_total)",
    "events consumed by type": "sum by (event_type) (events_consumed_total)",
    "deliveries": "sum by (subscription, target_type, outcome) (deliveries_total)",
    "CDC events": "sum by (table, operation) (cdc_events_total)",
    "CDC lag, changes observed": "sum by (table) (cdc_lag_seconds_count)",
    "errors captured": "sum by (component, error_type) (errors_captured_total)",
    "cold starts by function": "sum by (job) (lambda_cold_starts_total)",
}


FUNCTIONS = ("IngestFunction", "KafkaConsumerFunction", "CdcFunction", "MaintenanceFunction")


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


class Demo:
    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self.names: dict[str, str] = {physical: logical for logical, physical in bus.deployment["resources"].items()}
        # spans' service.name and metrics' job are the functions' stable service names (event-bus-ingest, ...)
        self.names.update({bus.service(logical): logical for logical in FUNCTIONS})
        self.accepted: list[str] = []
        self.change_key: dict[str, str] = {}
        self.change_ids: list[str] = []
        self.error_id = ""

    def short(self, service: object) -> str:
        """A function's logical id for its physical or service name (span resources and metric jobs use the latter)."""
        return self.names.get(str(service), str(service))

    def run(self) -> None:
        self.http_requests()
        self.table_write()
        self.deliveries()
        self.traces()
        self.metrics()
        self.captured_error()

    def http_requests(self) -> None:
        bus = self.bus
        section(f"API Gateway -> IngestFunction  ({bus.api_url})")
        health = bus.http("GET", "/health", query={"deep": "1"})
        print(f"  GET /health?deep=1       {health.status}  {json.dumps(health.body)}")
        for event_type, source, data in EVENTS:
            event = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": event_type, "source": source, "data": data}
            answer = bus.http("POST", "/events", event)
            if answer.status != 202:
                raise BusError(f"POST /events answered {answer.status}: {answer.body}")
            (result,) = answer.body["results"]
            self.accepted += answer.body["accepted"]
            where = f"{result['topic']}[{result['partition']}]@{result['offset']}"
            print(f"  POST /events             {answer.status}  {event_type:<30} id={result['id']}  -> {where}")
        for path, query in (
            ("/api/events", {"type": "demo.clicked", "source": "/web"}),
            ("/api/kafka", {"operation": "produce", "topic": "events"}),
        ):
            answer = bus.http("GET", path, query=query)
            (result,) = answer.body["results"]
            self.accepted += answer.body["accepted"]
            where = f"{result['topic']}[{result['partition']}]@{result['offset']}"
            print(f"  GET {path:<20} {answer.status}  {result['type']:<30} id={result['id']}  -> {where}")
        cdc = bus.http("GET", "/api/cdc", query={"connector": "orders-db", "table": "orders", "operation": "update"})
        print(f"  GET /api/cdc             {cdc.status}  {json.dumps(cdc.body)}")
        error = bus.http("GET", "/api/error", query={"type": "value"})
        self.error_id = str(error.body.get("event_id", ""))
        print(
            f"  GET /api/error           {error.status}  {error.headers.get('content-type')}  event_id={self.error_id}"
        )

    def table_write(self) -> None:
        bus = self.bus
        table = bus.deployment["outputs"]["OrdersTableName"]
        section(f"DynamoDB -> stream -> CdcFunction  (table {table})")
        order_id = f"o-{uuid.uuid4().hex[:6]}"
        item = {"order_id": {"S": order_id}, "status": {"S": "placed"}, "total": {"N": "42.5"}}
        bus.client("dynamodb").put_item(TableName=table, Item=item)
        self.change_key["order_id"] = order_id
        print(f"  PutItem order_id={order_id}: its INSERT goes through DynamoDB Streams to CdcFunction, then to Kafka")

    def deliveries(self) -> None:
        bus = self.bus
        section("KafkaConsumerFunction -> subscribers  (the Kafka trigger invokes it for each batch)")

        def delivered() -> dict[str, list[dict[str, Any]]] | None:
            by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for delivery in bus.webhook_deliveries():
                by_id[delivery["event"]["id"]].append(delivery)
            changes = [
                d for d in bus.webhook_deliveries() if (d["event"].get("data") or {}).get("key") == self.change_key
            ]
            ok = all(by_id.get(event_id) for event_id in self.accepted) and changes
            return {**by_id, "change": changes} if ok else None

        found = wait_until(delivered, "the webhook deliveries", timeout=90)
        self.change_ids = [delivery["event"]["id"] for delivery in found["change"]]
        for event_id in [*self.accepted, "change"]:
            for delivery in found[event_id]:
                event = delivery["event"]
                print(
                    f"  webhook  {delivery['status']}  {event['type']:<30} id={event['id']}  (HMAC signature verified)"
                )
        for message in bus.queue_messages(bus.fulfilment_queue):
            event = json.loads(message["Body"])
            print(f"  SQS {Path(bus.fulfilment_queue).name:<7}   {event['type']:<30} id={event['id']}")

    def traces(self) -> None:
        bus = self.bus
        section("Traces, from the OTLP receiver: one per event, across the functions")
        ids: dict[str, str] = {}
        ours = {*self.accepted, *self.change_ids}
        for delivery in bus.webhook_deliveries():
            parent = delivery["headers"].get("traceparent", "")
            if delivery["event"]["id"] in ours and parent.count("-") == 3:
                ids[delivery["event"]["id"]] = parent.split("-")[1]

        def complete() -> list[ReceivedSpan] | None:
            spans = bus.traces.read()
            done = all(
                any(s.trace_id == trace and s.name.startswith("deliver") for s in spans) for trace in ids.values()
            )
            return spans if done else None

        spans = wait_until(complete, "the spans of every event", timeout=60)
        for event_id, trace_id in ids.items():
            print(f"  trace {trace_id}  (event {event_id})")
            self.print_trace([span for span in spans if span.trace_id == trace_id])

    def print_trace(self, spans: list[ReceivedSpan]) -> None:
        for depth, span in span_tree(spans):
            print(f"    {'  ' * depth}{span.name}  [{self.short(span.resource.get('service.name'))}]")

    def metrics(self) -> None:
        bus = self.bus
        section(f"Metrics, from Prometheus ({bus.state.address('prometheus')}, scraping the Pushgateway)")

        def scraped() -> bool:
            return bool(bus.prometheus("sum(cdc_lag_seconds_count)")) and bool(bus.prometheus("deliveries_total"))

        wait_until(scraped, "the functions' metrics in Prometheus", timeout=60)
        for title, expression in METRICS.items():
            print(f"  {title}:  {expression}")
            for sample in bus.prometheus(expression):
                labels = {k: self.short(v) for k, v in sorted(sample["metric"].items())}
                text = ", ".join(f"{k}={v}" for k, v in labels.items())
                print(f"      {{{text}}} = {sample['value'][1]}")

    def captured_error(self) -> None:
        section("The captured error")

        def logged() -> list[str]:
            return [line for line in self.bus.function_log_lines("IngestFunction") if self.error_id in line]

        lines = wait_until(logged, "the error's line in CloudWatch Logs", timeout=30)
        group = f"/aws/lambda/{self.bus.resource('IngestFunction')}"
        print(
            f"  event id {self.error_id}: in the 500 answer, the span's exception event and CloudWatch Logs ({group}):"
        )
        try:
            record = json.loads(lines[0])
        except ValueError:
            print(f"    {lines[0]}")
            return
        fields = ("event_id", "error_type", "message", "trace_id", "span_id", "request_id", "component", "operation")
        print(f"    {json.dumps({key: record[key] for key in fields if key in record}, separators=(',', ':'))}")


def next_steps(bus: LocalBus) -> None:
    section("Your turn")
    print("  Send your own event (the stage's API key is required, as in AWS):")
    print(f"    curl -s -X POST '{bus.api_url}/events' -H 'x-api-key: {bus.api_key}' \\")
    print("      -H 'Content-Type: application/cloudevents+json' \\")
    print(
        '      -d \'{"specversion":"1.0","id":"my-1","type":"com.example.order.created","source":"/me",'
        '"data":{"order_id":"o-1","amount":1,"currency":"EUR"}}\''
    )
    print("  Invoke a function with a sample event:  make invoke FUNCTION=CdcFunction EVENT=dynamodb_stream_orders")
    print("  One trace as a waterfall with durations: make trace ID=<trace id above>")
    print(f"  Each piece, its address and log:        make status      (logs under {bus.state_dir_path / 'logs'})")
    print("  Stop the whole stack:                   make stop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localbus.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--redeploy", action="store_true", help="deploy again even if the stack is deployed")
    default_dir = Path(os.environ.get("LOCALBUS_STATE_DIR") or stack_state.DEFAULT_STATE_DIR)
    parser.add_argument("--state-dir", type=Path, default=default_dir)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    try:
        section("The local stack (no Docker)")
        started = time.perf_counter()
        state = stack.up(state_dir)
        print(f"  up in {time.perf_counter() - started:.1f} s")
        stack.print_status(stack.status(state_dir), state_dir)
        deployed = state.deployment or {}
        changed = deployed and deployed.get("source_digest") != source_digest()
        if args.redeploy or not deployed or changed:
            why = "the template or a function changed since the last deploy" if changed else "samconfig.toml [local]"
            section(f"sam build + samlocal deploy ({why})")
            deployment = stack.deploy_stack(state_dir, say=lambda line: print(f"  {line}", flush=True))
            print(f"  {deployment.stack_name}: CREATE_COMPLETE in {deployment.seconds:.1f} s")
        bus = LocalBus.of(state_dir)
        try:
            Demo(bus).run()
            next_steps(bus)
        finally:
            bus.close()
    except (BusError, stack_state.StackError) as error:
        print(
            f"\nerror: {error}\n(the stack keeps running: `make status` shows each piece and its log)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
