"""MaintenanceFunction: scheduled housekeeping for the bus. It reports whether each CDC connector runs
(`cdc_connector_status{connector}`, from MSK Connect or a Kafka Connect REST endpoint) and deletes the
Pushgateway groups of execution environments that stopped pushing."""

from maintenance.connectors import (
    ConnectorFailure,
    ConnectorSource,
    KafkaConnectClient,
    KafkaConnectRestSource,
    MskConnectSource,
    SourceReport,
)
from maintenance.deadline import Deadline
from maintenance.exceptions import DeadlineExceededError, EndpointError, MaintenanceError, UnexpectedAnswerError
from maintenance.groups import PushgatewaySweeper, PushGroup, SweepResult, parse_groups, select_stale
from maintenance.service import Maintenance, MaintenanceSummary
from maintenance.settings import MaintenanceSettings

__all__ = [
    "ConnectorFailure",
    "ConnectorSource",
    "Deadline",
    "DeadlineExceededError",
    "EndpointError",
    "KafkaConnectClient",
    "KafkaConnectRestSource",
    "Maintenance",
    "MaintenanceError",
    "MaintenanceSettings",
    "MaintenanceSummary",
    "MskConnectSource",
    "PushGroup",
    "PushgatewaySweeper",
    "SourceReport",
    "SweepResult",
    "UnexpectedAnswerError",
    "parse_groups",
    "select_stale",
]
