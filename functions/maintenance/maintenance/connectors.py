"""Where connector status comes from: a Kafka Connect REST endpoint (self-managed Debezium) and MSK Connect.

Each source answers one `SourceReport` per run: running or not for every connector it could name, and the
failures met on the way. A source never raises for a backend that is down: that is a report, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from maintenance.deadline import Deadline
from maintenance.exceptions import DeadlineExceededError, UnexpectedAnswerError
from maintenance.rest import Endpoint
from maintenance.settings import connector_name_from_arn

RUNNING = "RUNNING"


@dataclass(frozen=True)
class ConnectorFailure:
    operation: str
    error: Exception
    connector: str | None = None
    """None when the failure is about the source as a whole (its connector list)."""


@dataclass(frozen=True)
class SourceReport:
    running: Mapping[str, bool] = field(default_factory=dict)
    failures: Sequence[ConnectorFailure] = ()
    complete: bool = True
    """False when the source could not say which connectors it has (their status is unknown, not absent)."""


class ConnectorSource(Protocol):
    @property
    def name(self) -> str:
        """For logs and error context: `kafka_connect`, `msk_connect`."""
        ...

    @property
    def endpoint(self) -> str:
        """Where the source reads from, without credentials."""
        ...

    def check(self, deadline: Deadline) -> SourceReport: ...


def connect_status_running(status: object) -> bool:
    """Kafka Connect's `GET /connectors/<name>/status` answer: running when the connector is RUNNING and so
    is every task, with at least one task (a connector without tasks captures no changes)."""
    if not isinstance(status, Mapping):
        raise UnexpectedAnswerError("connector status is not a JSON object")
    connector = status.get("connector")
    tasks = status.get("tasks", [])
    if not isinstance(connector, Mapping) or not isinstance(connector.get("state"), str):
        raise UnexpectedAnswerError("connector status has no connector.state")
    if not isinstance(tasks, list) or not all(isinstance(task, Mapping) for task in tasks):
        raise UnexpectedAnswerError("connector status has no task list")
    return connector["state"] == RUNNING and bool(tasks) and all(task.get("state") == RUNNING for task in tasks)


def connector_names(answer: object) -> list[str]:
    """Kafka Connect's `GET /connectors` answer: a JSON list of names."""
    if not isinstance(answer, list) or not all(isinstance(name, str) for name in answer):
        raise UnexpectedAnswerError("GET /connectors did not answer a list of connector names")
    return list(dict.fromkeys(answer))


class KafkaConnectRestSource:
    """Kafka Connect's REST API: `GET /connectors`, then `GET /connectors/<name>/status` for each."""

    name = "kafka_connect"

    def __init__(self, url: str, timeout_s: float) -> None:
        self._endpoint = Endpoint.parse(url)
        self._timeout_s = timeout_s

    @property
    def endpoint(self) -> str:
        return self._endpoint.base_url

    def check(self, deadline: Deadline) -> SourceReport:
        try:
            names = connector_names(self._endpoint.get_json("/connectors", deadline.timeout(self._timeout_s)))
        except Exception as error:
            return SourceReport(failures=(ConnectorFailure("list_connectors", error),), complete=False)
        running: dict[str, bool] = {}
        failures: list[ConnectorFailure] = []
        for position, name in enumerate(names):
            try:
                timeout = deadline.timeout(self._timeout_s)
                status = self._endpoint.get_json(f"/connectors/{quote(name, safe='')}/status", timeout)
                running[name] = connect_status_running(status)
            except DeadlineExceededError as error:  # one failure for all the unchecked ones, not one each
                running.update(dict.fromkeys(names[position:], False))
                failures.append(ConnectorFailure("connector_status", error, name))
                break
            except Exception as error:  # e.g. deleted between the two calls (404): not running
                running[name] = False
                failures.append(ConnectorFailure("connector_status", error, name))
        return SourceReport(running, failures)


class KafkaConnectClient(Protocol):
    """The part of boto3's `kafkaconnect` client this function uses (an in-memory fake in tests)."""

    def describe_connector(self, *, connectorArn: str) -> Mapping[str, Any]: ...  # noqa: N803 - boto3's name


class MskConnectSource:
    """MSK Connect: `DescribeConnector` for each configured ARN; running when `connectorState` is RUNNING.

    The connector label is the name inside the ARN, so a connector keeps its label when the call fails.
    """

    name = "msk_connect"
    endpoint = "kafkaconnect"

    def __init__(self, client: KafkaConnectClient, arns: Sequence[str]) -> None:
        self._client = client
        self._arns = tuple(arns)

    def check(self, deadline: Deadline) -> SourceReport:
        running: dict[str, bool] = dict.fromkeys(map(connector_name_from_arn, self._arns), False)
        failures: list[ConnectorFailure] = []
        for arn in self._arns:
            name = connector_name_from_arn(arn)
            if deadline.expired():  # the client's own timeouts bound each call; this bounds the loop
                failures.append(ConnectorFailure("describe_connector", DeadlineExceededError("time ran out"), name))
                break
            try:
                description = self._client.describe_connector(connectorArn=arn)
            except Exception as error:  # throttled, denied, not found, endpoint down: not running
                failures.append(ConnectorFailure("describe_connector", error, name))
                continue
            running[name] = description.get("connectorState") == RUNNING
        return SourceReport(running, failures)
