"""The README's commands on the deployed local stack: the demo (the main job), the local invoke and the status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from localbus.client import LocalBus

pytestmark = [pytest.mark.e2e, pytest.mark.localstack, pytest.mark.sam]

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str, state_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCALBUS_STATE_DIR": str(state_dir)}
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_demo_shows_ids_deliveries_traces_metrics_and_the_error(bus: LocalBus, bus_state_dir: Path) -> None:
    result = run("localbus.demo", state_dir=bus_state_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    accepted = re.findall(r"POST /events\s+202\s+(\S+)\s+id=(\S+)\s+-> (\w+)\[", out)
    assert [(kind, topic) for kind, _, topic in accepted] == [
        ("com.example.order.created", "orders"),
        ("com.example.payment.captured", "payments"),
        ("com.example.customer.updated", "customers"),
    ]
    for _, event_id, _ in accepted:
        assert re.search(rf"webhook\s+200\s+\S+\s+id={event_id}\s+\(HMAC signature verified\)", out)
        assert f"(event {event_id})" in out, "a trace per event"
    assert re.search(rf"SQS fulfilment\s+com.example.order.created\s+id={accepted[0][1]}", out)
    # each event's trace crosses both functions: request -> produce -> the consumer's processing -> delivery
    chains = re.findall(
        r"POST /events  \[IngestFunction\]\n\s+produce (\S+)  \[IngestFunction\]\n"
        r"\s+process \S+  \[KafkaConsumerFunction\]\n\s+deliver (\S+)",
        out,
    )
    assert ("payments", "payments-webhook") in chains
    assert ("customers", "customers-webhook") in chains
    # the table write went through the stream, CdcFunction and Kafka to the webhook, in one trace too
    change_chain = r"produce cdc-events  \[CdcFunction\]\n\s+process cdc\.\S+\.created  \[KafkaConsumerFunction\]"
    assert re.search(change_chain, out)
    assert re.search(r"\{operation=created, table=OrdersTable\} = \d", out)
    assert "{component=http, error_type=ValueError} = " in out
    (error_id,) = re.findall(r"GET /api/error\s+500\s+application/problem\+json\s+event_id=([0-9a-f]{32})", out)
    assert f'"event_id":"{error_id}"' in out, "the CloudWatch line carries the same event id"
    assert "make stop" in out
    assert "curl -s -X POST" in out


def test_local_invoke_prints_the_result_and_the_invocations_logs(bus: LocalBus, bus_state_dir: Path) -> None:
    result = run("hoststack.invoke", "CdcFunction", "dynamodb_stream_orders", state_dir=bus_state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "StatusCode: 200" in result.stdout
    assert '"batchItemFailures": []' in result.stdout
    assert re.search(r"START RequestId: (\S+) Version: \$LATEST(.|\n)*REPORT RequestId: \1", result.stdout)

    failing = run("hoststack.invoke", "KafkaConsumerFunction", "-", state_dir=bus_state_dir)
    assert failing.returncode == 2, "no event on stdin: nothing invoked"
    unknown = run("hoststack.invoke", "NoSuchFunction", "scheduled_event", state_dir=bus_state_dir)
    assert unknown.returncode == 2
    assert "IngestFunction" in unknown.stdout + unknown.stderr


def test_status_shows_every_piece_running_with_its_address_and_log(bus: LocalBus, bus_state_dir: Path) -> None:
    result = run("localbus.stack", "status", state_dir=bus_state_dir)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for piece in ("supervisor", "kafka", "otlp", "pushgateway", "prometheus", "webhook", "localstack", "kafka-trigger"):
        assert " running " in rows[piece], rows.get(piece)
    assert "127.0.0.1:" in rows["localstack"]
    assert rows["localstack"].rstrip().endswith("localstack.log")
    assert "deployed" in rows["api"]


def test_make_trace_prints_an_events_trace_as_a_waterfall(bus: LocalBus, bus_state_dir: Path) -> None:
    """The way to look at a trace without Docker: `make trace ID=...` reads the OTLP receiver's output."""
    posts = [span for span in bus.traces.read(1.0) if span.name == "POST /events"]
    assert posts, "the demo's requests left spans"
    trace_id = posts[-1].trace_id
    result = run("localbus.trace", trace_id, state_dir=bus_state_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: ")
    assert re.match(r"\s+0\.0 ms\s+\d+\.\d ms  \|#", lines[1]), lines[1]
    assert "POST /events  [event-bus-ingest]" in lines[1]
    assert any("produce " in line and "[event-bus-ingest]" in line for line in lines[2:])
    unknown = run("localbus.trace", "0" * 31 + "1", "--wait", "0", state_dir=bus_state_dir)
    assert unknown.returncode == 1
    assert "no spans of trace" in unknown.stderr


def test_every_dashboard_panel_answers_from_the_demo_traffic(bus: LocalBus, bus_state_dir: Path) -> None:
    """Each Grafana panel's query (infra/grafana/dashboards), run against the local stack's Prometheus after the
    demo's traffic through ingest, the consumer and CDC: none errors, none comes back empty (a panel that would
    show "No data" on a working bus is a broken panel)."""
    from localbus.dashboards import load_dashboards, panel_queries, run

    queries = panel_queries(load_dashboards())
    assert len({query.dashboard_uid for query in queries}) == 4
    problems = run(bus.state.address("prometheus"), queries)
    assert problems == [], "\n".join(f"{query.name}: {why}\n    {query.expr}" for query, why in problems)
