"""In-memory stand-ins for AWS clients moto does not have."""

from __future__ import annotations

from typing import Any


class FakeKafkaConnectClient:
    """boto3's `kafkaconnect` client as far as MaintenanceFunction uses it (moto has no kafkaconnect):
    connectorState by ARN, and the ARNs it was asked about."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.calls: list[str] = []

    def describe_connector(self, *, connectorArn: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls.append(connectorArn)
        if connectorArn not in self.states:
            raise LookupError(f"NotFoundException: {connectorArn}")
        name = connectorArn.split("/")[1]
        return {"connectorArn": connectorArn, "connectorName": name, "connectorState": self.states[connectorArn]}
