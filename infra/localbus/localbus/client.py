"""A client of the deployed local bus: what a user (the demo) and the end-to-end tests do with it.

Everything goes through the real front doors: HTTP to API Gateway (with the stage's API key), writes to the
DynamoDB table, records to the broker, and reads back from the places a user would look: the webhook receiver's
record, the SQS queues, the functions' CloudWatch logs on LocalStack, Prometheus and the OTLP receiver's spans.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hoststack.state import StackState
from hoststack.traces import TraceStore
from samhost.deploy import aws_client
from samhost.invoke import log_events


class BusError(RuntimeError):
    """The local bus is not deployed, or did not do what was waited for in time."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: Any  # JSON when the answer is JSON, else text

    @classmethod
    def read(cls, status: int, headers: Any, raw: bytes) -> HttpAnswer:  # noqa: ANN401 - http.client's headers
        text = raw.decode(errors="replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        return cls(status, {key.lower(): value for key, value in headers.items()}, body)


@dataclass
class LocalBus:
    state: StackState
    _traces: TraceStore | None = field(default=None, repr=False)

    @classmethod
    def of(cls, state_dir: Path) -> LocalBus:
        state = StackState.load(state_dir)
        if state is None or not state.deployment:
            raise BusError(f"no deployed local bus in {state_dir}: run `make demo` (or `make up deploy`)")
        return cls(state)

    @property
    def deployment(self) -> dict[str, Any]:
        if not self.state.deployment:
            raise BusError("the local bus is not deployed")
        return self.state.deployment

    @property
    def state_dir_path(self) -> Path:
        return Path(self.state.state_dir)

    @property
    def endpoint(self) -> str:
        return self.state.localstack_url

    def client(self, service: str) -> Any:  # noqa: ANN401 - a boto3 client of any service
        return aws_client(service, self.endpoint)

    def resource(self, logical_id: str) -> str:
        return str(self.deployment["resources"][logical_id])

    def service(self, logical_id: str) -> str:
        """A function's service name (OTEL_SERVICE_NAME: its spans' `service.name`, its metrics' `job`), as
        deployed; stable across replacements, unlike its physical name."""
        configuration = self.client("lambda").get_function_configuration(FunctionName=self.resource(logical_id))
        return str(configuration["Environment"]["Variables"]["OTEL_SERVICE_NAME"])

    @property
    def api_url(self) -> str:
        outputs, stage = self.deployment["outputs"], self.deployment["parameters"]["Stage"]
        return f"{self.endpoint}/_aws/execute-api/{outputs['EventBusApiId']}/{stage}"

    @cached_property
    def api_key(self) -> str:
        key_id = self.deployment["outputs"]["EventBusApiKeyId"]
        return str(self.client("apigateway").get_api_key(apiKey=key_id, includeValue=True)["value"])

    # --- HTTP through API Gateway ----------------------------------------------------------------------------------

    def http(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/cloudevents+json",
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        url = f"{self.api_url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - the local stack's gateway
        request.add_header("x-api-key", self.api_key)
        if data is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the local stack's gateway
                return HttpAnswer.read(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return HttpAnswer.read(error.code, error.headers, error.read())

    # --- where deliveries land -------------------------------------------------------------------------------------

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery the stack's webhook receiver verified, oldest first."""
        path = self.state_dir_path / "webhook.jsonl"
        try:
            text = path.read_text()
        except OSError:
            return []
        # only whole lines: the receiver may be writing the last one right now
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def fail_webhook(self, count: int, status: int = 503) -> None:
        """Make the webhook answer `status` to its next `count` deliveries (a subscriber having a bad minute)."""
        url = f"{self.state.address('webhook')}/fail?count={count}&status={status}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):  # noqa: S310 - ours
            pass

    def webhook_down(self, seconds: float) -> None:
        """Make the webhook answer 503 to every delivery for `seconds` from now (a subscriber that is down)."""
        url = f"{self.state.address('webhook')}/down?seconds={seconds}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):  # noqa: S310 - ours
            pass

    def queue_messages(self, queue_url: str, wait_s: int = 1) -> list[dict[str, Any]]:
        """Receive (and delete) what the queue holds now."""
        sqs = self.client("sqs")
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            messages += batch
            wait_s = 0

    @property
    def fulfilment_queue(self) -> str:
        return str(self.deployment["targets"]["queue_url"])

    @property
    def dead_letter_queue(self) -> str:
        return str(self.deployment["outputs"]["DeadLetterQueueUrl"])

    # --- what a user reads back -------------------------------------------------------------------------------------

    def function_log_lines(self, logical_id: str) -> list[str]:
        """Every line of the function's CloudWatch log group on LocalStack."""
        events = log_events(self.client("logs"), f"/aws/lambda/{self.resource(logical_id)}", since_ms=0)
        return [event.message.rstrip("\n") for event in events]

    def prometheus(self, expression: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expression})
        url = f"{self.state.address('prometheus')}/api/v1/query?{query}"
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - the local stack's Prometheus
            return list(json.loads(answer.read())["data"]["result"])

    def pushgateway_groups(self) -> list[dict[str, str]]:
        """The Pushgateway's groups now (their grouping labels), straight from its API."""
        url = f"{self.state.address('pushgateway')}/api/v1/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - the local stack's Pushgateway
            return [dict(group["labels"]) for group in json.loads(answer.read())["data"]]

    @property
    def traces(self) -> TraceStore:
        if self._traces is None:
            self._traces = TraceStore(self.state.address("kafka"))
        return self._traces

    def close(self) -> None:
        if self._traces is not None:
            self._traces.close()


def wait_until[T](check: Callable[[], T | None], what: str, timeout: float = 30.0, every: float = 0.25) -> T:
    """The first truthy value of `check()`; BusError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BusError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
