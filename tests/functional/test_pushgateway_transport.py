"""The Pushgateway transport: one kept-alive connection across pushes, basic auth from the URL, errors
surfaced as failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from lambda_event_bus.telemetry.metrics import Metrics, PushgatewayExporter
from lambda_event_bus.telemetry.metrics.pushgateway import PushgatewayError

pytestmark = pytest.mark.servers


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A plain HTTP/1.1 server that records requests (method, path, auth, client port) and answers `status`."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "client_port": self.client_address[1],
                }
            )
            status = 500 if "fail" in self.path else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = _answer  # noqa: N815 - the http.server naming

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_pushes_reuse_one_connection_and_send_basic_auth(recording_server):
    address, seen = recording_server
    metrics = Metrics(label_value_limit=10, runtime_collectors=False)
    exporter = PushgatewayExporter(
        f"http://bus:s3cret@{address}", job="svc", function_name="fn", instance="i-1", registry=metrics.registry
    )
    for _ in range(3):
        exporter.push(timeout=2)
    exporter.close()
    assert [request["method"] for request in seen] == ["PUT", "PUT", "PUT"]
    assert seen[0]["path"] == "/metrics/job/svc/function_name/fn/instance/i-1"
    assert {request["client_port"] for request in seen} == {seen[0]["client_port"]}, "one kept-alive connection"
    assert {request["authorization"] for request in seen} == {"Basic YnVzOnMzY3JldA=="}


def test_an_error_status_raises(recording_server):
    address, _ = recording_server
    metrics = Metrics(label_value_limit=10, runtime_collectors=False)
    exporter = PushgatewayExporter(
        f"http://{address}", job="fail", function_name="fn", instance="i-2", registry=metrics.registry
    )
    with pytest.raises(PushgatewayError, match="HTTP 500"):
        exporter.push(timeout=2)
