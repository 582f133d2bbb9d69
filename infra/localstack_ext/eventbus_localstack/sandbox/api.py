"""The Runtime API and the Extensions API, served over HTTP on AWS_LAMBDA_RUNTIME_API, and LocalStack's /invoke."""

from __future__ import annotations

import json
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eventbus_localstack.sandbox.environment import Sandbox
from eventbus_localstack.sandbox.settings import EXTENSION_API, RUNTIME_API, log


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the function's log stream is the runtime's output, not this server's access log."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        if self.path == f"{RUNTIME_API}/invocation/next":
            invocation = sandbox.next_invocation()
            if invocation is None:
                self.close_connection = True
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                "Lambda-Runtime-Trace-Id": invocation.trace_id,
                "Content-Type": "application/json",
            }
            self._send(HTTPStatus.OK, invocation.payload, headers)
        elif self.path == f"{EXTENSION_API}/event/next":
            event = sandbox.next_event(self.headers.get("Lambda-Extension-Identifier", ""))
            if event is None:
                self._json(HTTPStatus.FORBIDDEN, {"errorType": "Extension.Unknown", "errorMessage": "not registered"})
            else:
                self._json(HTTPStatus.OK, event)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        body = self._body()
        parts = self.path.strip("/").split("/")
        if self.path == "/invoke":
            sandbox.enqueue(json.loads(body))
            self._send(HTTPStatus.OK)
        elif self.path.startswith(f"{RUNTIME_API}/invocation/") and len(parts) == 5:
            request_id, outcome = parts[3], parts[4]
            if outcome not in ("response", "error"):
                self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})
            elif sandbox.finish(request_id, body, error=outcome == "error"):
                self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
            else:
                self._json(
                    HTTPStatus.BAD_REQUEST, {"errorType": "InvalidRequestID", "errorMessage": "not the current one"}
                )
        elif self.path == f"{RUNTIME_API}/init/error":
            sandbox.init_error(body)
            self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
        elif self.path == f"{EXTENSION_API}/register":
            events = list(json.loads(body or b"{}").get("events") or [])
            status, payload, identifier = sandbox.register(self.headers.get("Lambda-Extension-Name", ""), events)
            headers = {"Lambda-Extension-Identifier": identifier} if identifier else {}
            self._json(status, payload, headers)
        elif self.path in (f"{EXTENSION_API}/init/error", f"{EXTENSION_API}/exit/error"):
            log("extension %s: %s", self.path.rsplit("/", 2)[-2], body.decode(errors="replace"))
            self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", sandbox.settings.port), Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # without it every answer waits ~40 ms for the client's delayed ACK (Nagle)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address
