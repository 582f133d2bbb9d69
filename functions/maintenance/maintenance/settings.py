"""MaintenanceFunction's settings from the environment (a bad value fails the cold start with one line
naming the variable). PUSHGATEWAY_URL is the layer's: read once, by `TelemetrySettings`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lambda_event_bus.base import ConfigError, EnvReader

DEFAULT_SCRAPE_INTERVAL_SECONDS = 15  # Prometheus's own default
DEFAULT_STALE_GROUP_SCRAPES = 60  # 15 minutes at the default interval
DEFAULT_TIMEOUT_MS = 2000

MSK_CONNECTOR_ARN = re.compile(r"^arn:aws[a-z-]*:kafkaconnect:[a-z0-9-]+:\d{12}:connector/(?P<name>[^/]+)/[^/]+$")


@dataclass(frozen=True)
class MaintenanceSettings:
    kafka_connect_url: str | None = None
    """A Kafka Connect REST endpoint (self-managed Debezium); None: not checked."""
    msk_connector_arns: tuple[str, ...] = ()
    """MSK Connect connectors, checked with kafkaconnect:DescribeConnector."""
    connect_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    """Per request, to Kafka Connect's REST API and to MSK Connect (connect and read timeouts)."""
    scrape_interval_s: int = DEFAULT_SCRAPE_INTERVAL_SECONDS
    """How often Prometheus scrapes the Pushgateway."""
    stale_group_scrapes: int = DEFAULT_STALE_GROUP_SCRAPES
    """A Pushgateway group not pushed for this many scrape intervals is deleted: its final push has been
    scraped that many times over (a group is never deleted sooner, or its last values would be lost)."""
    pushgateway_timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    """Per request to the Pushgateway (listing the groups, each delete)."""

    @property
    def stale_group_s(self) -> int:
        """A group last pushed longer ago than this is stale."""
        return self.scrape_interval_s * self.stale_group_scrapes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MaintenanceSettings:
        env = EnvReader(environ)
        return cls(
            kafka_connect_url=env.url("KAFKA_CONNECT_URL"),
            msk_connector_arns=_connector_arns(env),
            connect_timeout_s=env.integer("CONNECT_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 10, 60_000) / 1000,
            scrape_interval_s=env.integer("SCRAPE_INTERVAL_SECONDS", DEFAULT_SCRAPE_INTERVAL_SECONDS, 1, 3600),
            stale_group_scrapes=env.integer("STALE_GROUP_SCRAPES", DEFAULT_STALE_GROUP_SCRAPES, 2, 100_000),
            pushgateway_timeout_s=env.integer("PUSHGATEWAY_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 10, 60_000) / 1000,
        )


def connector_name_from_arn(arn: str) -> str:
    """`arn:aws:kafkaconnect:<region>:<account>:connector/<name>/<uuid>` -> `<name>` (the metric's label)."""
    match = MSK_CONNECTOR_ARN.match(arn)
    return match.group("name") if match else arn


def _connector_arns(env: EnvReader) -> tuple[str, ...]:
    value = env.raw("MSK_CONNECT_CONNECTOR_ARNS")
    if value is None:
        return ()
    arns = tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    if not arns or not all(MSK_CONNECTOR_ARN.match(arn) for arn in arns):
        raise ConfigError(
            "MSK_CONNECT_CONNECTOR_ARNS",
            value,
            "a comma-separated list of arn:aws:kafkaconnect:<region>:<account>:connector/<name>/<id>",
        )
    return arns
