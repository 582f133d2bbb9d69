"""MaintenanceFunction in-process against the real Pushgateway and a local Kafka Connect REST stand-in:
connector status lands in `cdc_connector_status` (in the registry and, after the invocation's flush, in the
Pushgateway); stale groups are deleted while fresh ones and the function's own group stay; a Connect
endpoint or a Pushgateway that is down is captured, never raised.

moto has no `kafkaconnect` backend (DescribeConnector answers 404 "Not yet implemented"), so the MSK Connect
path runs once through the real boto3 client under moto (the failure path) and once with an in-memory fake
client handed to `MskConnectSource`'s constructor (the status path).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pytest
from maintenance import Maintenance, MskConnectSource
from maintenance.deadline import Deadline
from maintenance.groups import PushgatewaySweeper
from moto import mock_aws
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from samhost.processes import free_port
from support import pushgateway as gateway
from support.context import LambdaContext
from support.fakes import FakeKafkaConnectClient
from support.functions import load_function

pytestmark = pytest.mark.servers

SERVICE = "maintenance-test"
MAINTENANCE_VARIABLES = (
    "KAFKA_CONNECT_URL",
    "MSK_CONNECT_CONNECTOR_ARNS",
    "CONNECT_TIMEOUT_MS",
    "SCRAPE_INTERVAL_SECONDS",
    "STALE_GROUP_SCRAPES",
    "PUSHGATEWAY_TIMEOUT_MS",
    "PUSHGATEWAY_URL",
)
ARN = "arn:aws:kafkaconnect:eu-west-1:123456789012:connector/{name}/0f6a5c2e-1111-2222-3333-444455556666-3"


def status(connector_state: str, *task_states: str) -> dict[str, Any]:
    """A Kafka Connect `GET /connectors/<name>/status` answer."""
    tasks = [{"id": n, "state": state, "worker_id": "10.0.0.7:8083"} for n, state in enumerate(task_states)]
    for task in tasks:
        if task["state"] == "FAILED":
            task["trace"] = "org.apache.kafka.connect.errors.ConnectException: replication slot is gone"
    return {
        "name": "-",
        "connector": {"state": connector_state, "worker_id": "10.0.0.7:8083"},
        "tasks": tasks,
        "type": "source",
    }


class KafkaConnectStandIn:
    """Kafka Connect's REST API, the two calls MaintenanceFunction makes, on 127.0.0.1."""

    def __init__(self, connectors: dict[str, dict[str, Any]]) -> None:
        self.connectors = connectors
        self.paths: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.paths.append(self.path)
                parts = self.path.strip("/").split("/")
                if parts == ["connectors"]:
                    self._answer(200, list(stand_in.connectors))
                elif len(parts) == 3 and parts[0] == "connectors" and parts[2] == "status":
                    name = unquote(parts[1])
                    if name in stand_in.connectors:
                        self._answer(200, {**stand_in.connectors[name], "name": name})
                    else:
                        self._answer(404, {"error_code": 404, "message": f"No status found for connector {name}"})
                else:
                    self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

            def _answer(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="kafka-connect-stand-in", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)


@pytest.fixture
def kafka_connect() -> Iterator[KafkaConnectStandIn]:
    stand_in = KafkaConnectStandIn(
        {
            "orders-postgres": status("RUNNING", "RUNNING", "RUNNING"),
            "customers-mysql": status("RUNNING", "RUNNING", "FAILED"),
            "inventory-postgres": status("PAUSED", "PAUSED"),
        }
    )
    yield stand_in
    stand_in.stop()


def load_maintenance(monkeypatch: pytest.MonkeyPatch, **environ: str) -> ModuleType:
    for name in MAINTENANCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": SERVICE,
        "AWS_LAMBDA_FUNCTION_NAME": "maintenance",
        "AWS_DEFAULT_REGION": "eu-west-1",
        **environ,
    }
    return load_function("maintenance", "maintenance", env, monkeypatch)


def invoke(module: ModuleType) -> dict[str, Any]:
    scheduled = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    summary = module.handler(scheduled, LambdaContext(function_name="maintenance"))
    json.dumps(summary)  # what Lambda returns must serialise
    return summary


def own_group(module: ModuleType) -> dict[str, str]:
    return {"job": SERVICE, "function_name": "maintenance", "instance": module.telemetry.instance_id}


def pushed_value(base_url: str, module: ModuleType, name: str, **labels: str) -> float | None:
    """A sample of the function's own group in the Pushgateway."""
    wanted = own_group(module) | labels
    for sample in gateway.samples(base_url):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
            return float(sample.value)
    return None


def push_group(base_url: str, labels: Mapping[str, str]) -> None:
    registry = CollectorRegistry()
    Gauge("lambda_demo_value", "a metric some dead environment left behind", registry=registry).set(1)
    key = {name: value for name, value in labels.items() if name != "job"}
    push_to_gateway(base_url, job=labels["job"], registry=registry, grouping_key=key, timeout=5)


def group_keys(base_url: str) -> list[dict[str, str]]:
    return sorted((group["labels"] for group in gateway.groups(base_url)), key=lambda g: sorted(g.items()))


def error_lines(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "ERROR"]


class TestConnectorStatus:
    def test_kafka_connect_status_lands_in_the_registry_and_in_the_pushgateway(
        self, kafka_connect, pushgateway, monkeypatch
    ):
        maintenance = load_maintenance(monkeypatch, KAFKA_CONNECT_URL=kafka_connect.url, PUSHGATEWAY_URL=pushgateway)
        summary = invoke(maintenance)

        expected = {"orders-postgres": 1, "customers-mysql": 0, "inventory-postgres": 0}
        assert summary["connectors"] == expected
        assert summary["errors"] == []
        for connector, value in expected.items():
            assert maintenance.telemetry.metrics.value("cdc_connector_status", connector=connector) == value
            assert pushed_value(pushgateway, maintenance, "cdc_connector_status", connector=connector) == value, (
                "the invocation's own flush pushed the gauge"
            )
        assert kafka_connect.paths[0] == "/connectors"
        assert sorted(kafka_connect.paths[1:]) == sorted(f"/connectors/{name}/status" for name in expected)

    def test_a_connector_that_recovers_or_fails_is_reported_at_the_next_run(self, kafka_connect, monkeypatch):
        maintenance = load_maintenance(monkeypatch, KAFKA_CONNECT_URL=kafka_connect.url)
        assert invoke(maintenance)["connectors"]["customers-mysql"] == 0
        kafka_connect.connectors["customers-mysql"] = status("RUNNING", "RUNNING", "RUNNING")
        kafka_connect.connectors["orders-postgres"] = status("FAILED", "FAILED")
        connectors = invoke(maintenance)["connectors"]
        assert (connectors["customers-mysql"], connectors["orders-postgres"]) == (1, 0)
        assert maintenance.telemetry.metrics.value("cdc_connector_status", connector="orders-postgres") == 0

    def test_connect_endpoint_down_returns_with_the_error_captured_and_no_guessed_connectors(
        self, pushgateway, monkeypatch, capsys
    ):
        maintenance = load_maintenance(
            monkeypatch, KAFKA_CONNECT_URL=f"http://127.0.0.1:{free_port()}", PUSHGATEWAY_URL=pushgateway
        )
        started = time.monotonic()
        summary = invoke(maintenance)

        assert time.monotonic() - started < 5
        assert summary["connectors"] == {}, "a cold environment cannot name connectors it has never seen"
        (error,) = summary["errors"]
        assert error["operation"] == "kafka_connect.list_connectors"
        (line,) = [line for line in error_lines(capsys.readouterr().out) if line.get("component") == "maintenance"]
        assert line["event_id"] == error["event_id"]
        assert line["error_type"] == "EndpointError"
        assert line["operation"] == "kafka_connect.list_connectors"
        telemetry = maintenance.telemetry
        assert (
            telemetry.metrics.value("errors_captured_total", component="maintenance", error_type="EndpointError") == 1
        )
        assert telemetry.metrics.value("lambda_invocations_total", outcome="success") == 1

    def test_connectors_seen_before_go_to_0_when_connect_goes_down(self, kafka_connect, pushgateway, monkeypatch):
        maintenance = load_maintenance(monkeypatch, KAFKA_CONNECT_URL=kafka_connect.url, PUSHGATEWAY_URL=pushgateway)
        assert invoke(maintenance)["connectors"]["orders-postgres"] == 1
        kafka_connect.stop()

        summary = invoke(maintenance)

        assert summary["connectors"] == {"orders-postgres": 0, "customers-mysql": 0, "inventory-postgres": 0}
        assert [error["operation"] for error in summary["errors"]] == ["kafka_connect.list_connectors"]
        assert pushed_value(pushgateway, maintenance, "cdc_connector_status", connector="orders-postgres") == 0

    def test_a_connector_deleted_between_the_list_and_its_status_is_0_with_the_error_captured(
        self, kafka_connect, monkeypatch
    ):
        maintenance = load_maintenance(monkeypatch, KAFKA_CONNECT_URL=kafka_connect.url)
        invoke(maintenance)
        kafka_connect.connectors = {"orders-postgres": status("RUNNING", "RUNNING")}  # two were deleted

        summary = invoke(maintenance)

        assert summary["connectors"] == {"orders-postgres": 1, "customers-mysql": 0, "inventory-postgres": 0}
        assert summary["errors"] == [], "no longer listed is not an error: the connector is simply not running"


class TestMskConnect:
    def test_describe_connector_failing_reports_0_and_captures_the_error(self, monkeypatch, capsys):
        arns = [ARN.format(name="orders-msk"), ARN.format(name="payments-msk")]
        with mock_aws():  # no kafkaconnect backend: DescribeConnector fails, as a denied or throttled call would
            maintenance = load_maintenance(monkeypatch, MSK_CONNECT_CONNECTOR_ARNS=",".join(arns))
            summary = invoke(maintenance)

        assert summary["connectors"] == {"orders-msk": 0, "payments-msk": 0}
        assert [error["operation"] for error in summary["errors"]] == ["msk_connect.describe_connector"] * 2
        lines = [line for line in error_lines(capsys.readouterr().out) if line.get("component") == "maintenance"]
        assert {line["context"]["connector"] for line in lines} == {"orders-msk", "payments-msk"}
        assert {line["error_type"] for line in lines} == {"ClientError"}

    def test_connector_state_from_an_in_memory_fake_client_reaches_the_pushgateway(self, pushgateway, make_telemetry):
        telemetry = make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="maintenance")
        client = FakeKafkaConnectClient(
            {ARN.format(name="orders-msk"): "RUNNING", ARN.format(name="payments-msk"): "FAILED"}
        )
        arns = [*client.states, ARN.format(name="gone-msk")]
        handler = telemetry.lambda_handler(
            lambda event, context: Maintenance(telemetry, sources=[MskConnectSource(client, arns)]).run(30)
        )

        summary = handler({}, LambdaContext(function_name="maintenance"))

        assert summary["connectors"] == {"orders-msk": 1, "payments-msk": 0, "gone-msk": 0}
        assert [error["operation"] for error in summary["errors"]] == ["msk_connect.describe_connector"]
        assert client.calls == arns
        pushed = {
            sample.labels["connector"]: sample.value
            for sample in gateway.samples(pushgateway)
            if sample.name == "cdc_connector_status" and sample.labels.get("instance") == telemetry.instance_id
        }
        assert pushed == {"orders-msk": 1, "payments-msk": 0, "gone-msk": 0}


class TestStaleGroups:
    def test_stale_groups_are_deleted_and_fresh_ones_and_its_own_are_kept(self, pushgateway, monkeypatch):
        gateway.wipe(pushgateway)
        maintenance = load_maintenance(
            monkeypatch, PUSHGATEWAY_URL=pushgateway, SCRAPE_INTERVAL_SECONDS="1", STALE_GROUP_SCRAPES="2"
        )
        assert invoke(maintenance)["deleted_groups"] == []  # and its flush pushes its own group
        stale = [
            {"job": "ingest-svc", "function_name": "ingest", "instance": "dead0001"},
            # `/` and a space in values: the DELETE URL needs the @base64 form
            {"job": "consumer-svc", "function_name": "team/consumer", "instance": "dead 0002"},
        ]
        fresh = {"job": "ingest-svc", "function_name": "ingest", "instance": "alive001"}
        for labels in stale:
            push_group(pushgateway, labels)
        time.sleep(2.2)  # push_time_seconds cannot be faked: let these (and the function's own group) age
        push_group(pushgateway, fresh)

        summary = invoke(maintenance)

        assert sorted(summary["deleted_groups"], key=lambda g: g["job"]) == sorted(stale, key=lambda g: g["job"])
        assert summary["kept_groups"] == 2, "the fresh group and the function's own, though older than 1 s"
        assert summary["errors"] == []
        assert group_keys(pushgateway) == sorted([fresh, own_group(maintenance)], key=lambda g: sorted(g.items()))

    def test_a_sweep_builds_no_ssl_context_per_delete(self, pushgateway, monkeypatch):
        """prometheus_client's own handlers build a urllib opener, and with it an SSL context, per request: ~18 ms
        of a ~20 ms DELETE (tests/perf/bench_pushgateway.py), which bounds how many groups one run can delete."""
        gateway.wipe(pushgateway)
        stale = [
            {"job": "ingest-svc", "function_name": "ingest", "instance": f"dead{index:04d}"} for index in range(12)
        ]
        for labels in stale:
            push_group(pushgateway, labels)
        contexts = []
        make_context = ssl._create_default_https_context
        monkeypatch.setattr(
            ssl, "_create_default_https_context", lambda *a, **k: contexts.append(1) or make_context(*a, **k)
        )
        an_hour_later = lambda: time.time() + 3600  # noqa: E731 - every group is stale
        sweeper = PushgatewaySweeper(pushgateway, max_age_s=60, timeout_s=5, own_group=None, clock=an_hour_later)

        result = sweeper.sweep(Deadline.after(30))

        assert sorted(group.grouping_key["instance"] for group in result.deleted) == [g["instance"] for g in stale]
        assert result.failures == []
        deadline = time.monotonic() + 5  # the Pushgateway answers a DELETE before its write loop applies it
        while gateway.groups(pushgateway) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.groups(pushgateway) == []
        assert len(contexts) <= 1, f"{len(contexts)} SSL contexts for {len(stale)} deletes"

    def test_deletes_carry_the_basic_auth_of_the_pushgateway_url(self):
        """A Pushgateway behind basic auth (its --web.config.file): the list and every DELETE send the credentials
        of PUSHGATEWAY_URL's userinfo. This Pushgateway build needs a bcrypt hash to turn auth on, so a recorder
        stands in for it."""
        seen: list[tuple[str, str, str | None]] = []
        listing = {
            "status": "success",
            "data": [
                {"labels": {"job": "j", "instance": "dead0001"}, "push_time_seconds": {"metrics": [{"value": "1"}]}}
            ],
        }

        class Recorder(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._record()

            def do_DELETE(self) -> None:
                self._record()

            def _record(self) -> None:
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                body = json.dumps(listing).encode() if self.command == "GET" else b""
                self.send_response(200 if self.command == "GET" else 202)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://team:s%3Acret@127.0.0.1:{server.server_address[1]}"
            result = PushgatewaySweeper(url, max_age_s=60, timeout_s=5, own_group=None).sweep(Deadline.after(10))
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)

        assert result.failures == []
        assert [group.grouping_key for group in result.deleted] == [{"instance": "dead0001"}]
        basic = "Basic dGVhbTpzOmNyZXQ="  # team:s:cret
        assert seen == [("GET", "/api/v1/metrics", basic), ("DELETE", "/metrics/job/j/instance/dead0001", basic)]

    def test_pushgateway_down_returns_with_the_error_captured(self, monkeypatch):
        maintenance = load_maintenance(monkeypatch, PUSHGATEWAY_URL=f"http://127.0.0.1:{free_port()}")
        summary = invoke(maintenance)
        assert (summary["deleted_groups"], summary["kept_groups"]) == ([], 0)
        assert [error["operation"] for error in summary["errors"]] == ["pushgateway.list_groups"]
        assert maintenance.telemetry.metrics.value("lambda_invocations_total", outcome="success") == 1
