"""MaintenanceFunction's Lambda handler (`Handler: app.handler`), run by an EventBridge schedule (the event's
content is not used): CDC connector status into `cdc_connector_status`, stale Pushgateway groups deleted.

Built once per execution environment, at init: telemetry, settings (a bad value fails the cold start with one
line naming the variable), the connector sources (the boto3 `kafkaconnect` client only when MSK Connect
connectors are configured) and the Pushgateway sweeper (only when PUSHGATEWAY_URL is set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from lambda_event_bus.base import LambdaContext
from lambda_event_bus.telemetry import get_telemetry
from maintenance import (
    ConnectorSource,
    KafkaConnectClient,
    KafkaConnectRestSource,
    Maintenance,
    MaintenanceSettings,
    MaintenanceSummary,
    MskConnectSource,
    PushgatewaySweeper,
)

telemetry = get_telemetry()
settings = MaintenanceSettings.from_env()

sources: list[ConnectorSource] = []
if settings.kafka_connect_url:
    sources.append(KafkaConnectRestSource(settings.kafka_connect_url, settings.connect_timeout_s))
if settings.msk_connector_arns:
    from lambda_event_bus.bus import aws

    # botocore's defaults (60 s timeouts, retries) would outlast the schedule's invocation
    kafkaconnect = aws.client("kafkaconnect", aws.fast_config(settings.connect_timeout_s, settings.connect_timeout_s))
    sources.append(MskConnectSource(cast(KafkaConnectClient, kafkaconnect), settings.msk_connector_arns))
if not sources:
    telemetry.logger.warning("no CDC connector source: set KAFKA_CONNECT_URL and/or MSK_CONNECT_CONNECTOR_ARNS")

sweeper = None
if telemetry.settings.pushgateway_url and telemetry.pushgateway is not None:
    sweeper = PushgatewaySweeper(
        telemetry.settings.pushgateway_url,
        max_age_s=settings.stale_group_s,
        timeout_s=settings.pushgateway_timeout_s,
        # this environment's own group is pushed at the end of every invocation: never delete it
        own_group={"job": telemetry.pushgateway.job, **telemetry.pushgateway.grouping_key},
    )

maintenance = Maintenance(
    telemetry,
    sources=sources,
    sweeper=sweeper,
    # the end-of-invocation flush (and the response) need their time after the work
    reserve_s=telemetry.settings.flush_timeout_s + 0.25,
)


@telemetry.lambda_handler(name="maintenance", trigger="timer")
def handler(event: Mapping[str, Any], context: LambdaContext | None) -> MaintenanceSummary:
    # Lambda always passes a context; a manual call without one gets the function's default timeout
    return maintenance.run(context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0)
