"""Driving the host executor's sandbox the way LocalStack does (POST /invoke, reports to the executor endpoint),
with AWS's real runtime client: the harness of tests/functional/test_lambda_sandbox.py and test_flush_after_response.py.

The endpoint only records the reports (LocalStack's own endpoint just resolves a future with them); the whole path
through LocalStack is in tests/e2e.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from samhost.processes import free_port, port_open, process_tree, running
from samhost.venvs import lambda_python

SANDBOX_PACKAGE = Path(__file__).resolve().parents[2] / "infra" / "localstack_ext"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:probe"


@dataclass(frozen=True)
class Report:
    path: str
    body: bytes
    received_at: float = 0.0  # time.time() when the sandbox posted it

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingEndpoint:
    """LocalStack's side of the executor protocol: records each report the sandbox posts."""

    def __init__(self) -> None:
        self.reports: queue.Queue[Report] = queue.Queue()
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reports.put(Report(self.path.split("/_localstack_lambda/env1/", 1)[-1], body, time.time()))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/_localstack_lambda/env1"

    def next(self, timeout: float = 15.0) -> Report:
        return self.reports.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Environment:
    endpoint: RecordingEndpoint
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    last_answer_at: float = 0.0  # when the last invocation's answer reached LocalStack's side (time.time())

    def invoke(self, event: dict[str, Any]) -> tuple[str, Any, str]:
        """Send one invocation; returns (response or error, its body, the invocation's logs)."""
        request_id = str(uuid.uuid4())
        body = {
            "invoke-id": request_id,
            "invoked-function-arn": ARN,
            "payload": json.dumps(event),
            "trace-id": "Root=1-x",
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/invoke", json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        logs = self.endpoint.next()
        assert logs.path == f"invocations/{request_id}/logs"
        outcome = self.endpoint.next()
        kind = outcome.path.rsplit("/", 1)[-1]
        assert outcome.path == f"invocations/{request_id}/{kind}"
        self.last_answer_at = outcome.received_at
        return kind, outcome.json(), logs.json()["logs"]

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@dataclass
class SandboxLauncher:
    """Starts sandboxes in `folder`, each reporting to `endpoint`; `stop_all()` kills them and checks that
    nothing of theirs is left."""

    endpoint: RecordingEndpoint
    folder: Path
    started: list[Environment] = field(default_factory=list)

    def start(
        self,
        handler: str,
        code: str,
        *,
        timeout: int = 3,
        files: dict[str, str] | None = None,
        layers: dict[str, str] | None = None,
        layer_links: dict[str, Path] | None = None,
        runtime_python: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Environment:
        """`layers`: files written into the layer; `layer_links`: layer paths linked to existing folders."""
        task = self.folder / "task"
        task.mkdir()
        for name, text in {"app.py": code, **(files or {})}.items():
            (task / name).write_text(textwrap.dedent(text))
        layer_dir = self.folder / "layer"
        for relative, text in (layers or {}).items():
            path = layer_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
            if relative.startswith("extensions/"):
                path.chmod(0o755)
        for relative, target in (layer_links or {}).items():
            (layer_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (layer_dir / relative).symlink_to(target, target_is_directory=True)
        port = free_port()
        environment = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(SANDBOX_PACKAGE),
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(task),
            "AWS_LAMBDA_FUNCTION_NAME": "probe",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/26/[$LATEST]abc",
            "LOCALSTACK_RUNTIME_ENDPOINT": self.endpoint.url,
            "LOCALSTACK_RUNTIME_ID": "env1",
            "_LOCALBUS_PORT": str(port),
            "_LOCALBUS_LAYERS": str(layer_dir) if layers or layer_links else "",
            "_LOCALBUS_RUNTIME_PYTHON": str(runtime_python or lambda_python()),
            **(env or {}),
        }
        log = self.folder / "sandbox.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # the module under test
                [sys.executable, "-m", "eventbus_localstack.sandbox"],
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Environment(self.endpoint, process, port, log)
        self.started.append(started)
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sandbox did not open its port"
            time.sleep(0.02)
        return started

    def stop_all(self) -> None:
        for environment in self.started:
            tree = process_tree(environment.process.pid)
            if environment.process.poll() is None:
                os.killpg(environment.process.pid, signal.SIGKILL)  # the runtime and extensions are in its group
                environment.process.wait(timeout=5)
            deadline = time.monotonic() + 2
            while running(tree) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not running(tree), f"the sandbox left {running(tree)} running"


def children_of(pid: int) -> list[int]:
    """The live processes the sandbox started (the runtime, external extensions)."""
    return [child for child in process_tree(pid) if child != pid]
