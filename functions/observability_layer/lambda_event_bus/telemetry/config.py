"""Telemetry settings, read once from the environment; a bad value fails start-up with one line.

The OpenTelemetry variables keep the meaning the OpenTelemetry specification gives them. They are
parsed here rather than left to the SDK because the SDK logs a warning and falls back on a bad
value, and a misconfigured function should say so at its first cold start instead of running blind.
`EnvReader` is public so that functions read their own variables with the same one-line errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lambda_event_bus.base import ConfigError, EnvReader, redact_userinfo

TRACES_EXPORTERS = ("otlp", "console", "none")
METRICS_EXPORTERS = ("prometheus", "otlp", "none")
"""OTEL_METRICS_EXPORTER: `prometheus` (the default) pushes to PUSHGATEWAY_URL when it is set; `otlp` sends the same
catalog as OTLP/HTTP metrics to the collector; `none` keeps metrics in memory only."""
# auto: after the response when running in Lambda (an internal extension), else inline
FLUSH_MODES = ("auto", "inline", "after_response")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
OTLP_COMPRESSIONS = ("none", "gzip", "deflate")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROPAGATORS = ("tracecontext", "baggage", "xray", "none")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")

DEFAULT_FLUSH_TIMEOUT_MS = 300
DEFAULT_BACKOFF_SECONDS = 30.0
DEFAULT_EXPORT_INTERVAL_MS = 0
DEFAULT_LABEL_VALUE_LIMIT = 100


@dataclass(frozen=True)
class LambdaEnvironment:
    """What the Lambda runtime tells a process about itself (never validated: AWS sets these)."""

    function_name: str | None = None
    function_version: str | None = None
    region: str | None = None
    memory_mb: int | None = None
    log_stream: str | None = None
    execution_env: str | None = None
    runtime_api: str | None = None  # host:port of the Runtime and Extensions APIs (set only inside Lambda)

    @classmethod
    def read(cls, env: EnvReader) -> LambdaEnvironment:
        memory = env.raw("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        return cls(
            function_name=env.raw("AWS_LAMBDA_FUNCTION_NAME"),
            function_version=env.raw("AWS_LAMBDA_FUNCTION_VERSION"),
            region=env.raw("AWS_REGION") or env.raw("AWS_DEFAULT_REGION"),
            memory_mb=int(memory) if memory and memory.isdigit() else None,
            log_stream=env.raw("AWS_LAMBDA_LOG_STREAM_NAME"),
            execution_env=env.raw("AWS_EXECUTION_ENV"),
            runtime_api=env.raw("AWS_LAMBDA_RUNTIME_API"),
        )


@dataclass(frozen=True)
class SentrySettings:
    dsn: str
    environment: str
    release: str
    sample_rate: float


@dataclass(frozen=True)
class TelemetrySettings:
    """Everything the layer needs, as plain values. Build with `TelemetrySettings.from_env()`."""

    service_name: str
    service_version: str
    environment: str
    resource_attributes: dict[str, str] = field(default_factory=dict)
    traces_exporters: tuple[str, ...] = ("otlp",)
    disabled: bool = False  # OTEL_SDK_DISABLED=true: no spans, no metrics, nothing exported (errors still logged)
    otlp_protocol: str = "http/protobuf"
    otlp_traces_endpoint: str = "http://localhost:4318/v1/traces"
    otlp_headers: dict[str, str] = field(default_factory=dict)
    otlp_compression: str = "none"
    otlp_certificate: str | None = None  # CA bundle for an https collector (else the system's)
    otlp_client_certificate: str | None = None  # mTLS
    otlp_client_key: str | None = None
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    log_level: str = "info"
    pushgateway_url: str | None = None
    metrics_exporter: str = "prometheus"
    otlp_metrics_endpoint: str = "http://localhost:4318/v1/metrics"
    otlp_metrics_headers: dict[str, str] = field(default_factory=dict)
    otlp_metrics_compression: str = "none"
    sentry: SentrySettings | None = None
    metrics_port: int = 8000
    metrics_path: str = "/metrics"
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_MS / 1000
    backoff_s: float = DEFAULT_BACKOFF_SECONDS
    flush_mode: str = "auto"
    export_interval_s: float = DEFAULT_EXPORT_INTERVAL_MS / 1000  # the flush after the response (ExportSchedule)
    label_value_limit: int = DEFAULT_LABEL_VALUE_LIMIT
    aws: LambdaEnvironment = field(default_factory=LambdaEnvironment)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = EnvReader(environ)
        aws = LambdaEnvironment.read(env)
        resource_attributes = env.key_values("OTEL_RESOURCE_ATTRIBUTES")
        service_name = (
            env.raw("OTEL_SERVICE_NAME") or resource_attributes.get("service.name") or aws.function_name or "event-bus"
        )
        # ENVIRONMENT and VERSION win when set; otherwise OTEL_RESOURCE_ATTRIBUTES keeps its meaning
        environment = (
            env.raw("ENVIRONMENT")
            or resource_attributes.get("deployment.environment.name")
            or resource_attributes.get("deployment.environment")
            or "dev"
        )
        version = env.raw("VERSION") or resource_attributes.get("service.version") or "unknown"
        protocol = env.choice(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            OTLP_PROTOCOLS,
            env.choice("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "http/protobuf"),
        )
        return cls(
            service_name=service_name,
            service_version=version,
            environment=environment,
            resource_attributes=resource_attributes,
            traces_exporters=_traces_exporters(env),
            disabled=_sdk_disabled(env),
            otlp_protocol=protocol,
            otlp_traces_endpoint=_otlp_traces_endpoint(env, protocol),
            otlp_headers=env.key_values("OTEL_EXPORTER_OTLP_HEADERS", secret=True)
            | env.key_values("OTEL_EXPORTER_OTLP_TRACES_HEADERS", secret=True),
            otlp_compression=env.choice(
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                OTLP_COMPRESSIONS,
                env.choice("OTEL_EXPORTER_OTLP_COMPRESSION", OTLP_COMPRESSIONS, "none"),
            ),
            otlp_certificate=_otlp_file(env, "CERTIFICATE"),
            otlp_client_certificate=_otlp_file(env, "CLIENT_CERTIFICATE"),
            otlp_client_key=_otlp_file(env, "CLIENT_KEY"),
            sampler=env.choice("OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on"),
            sampler_ratio=env.number("OTEL_TRACES_SAMPLER_ARG", 1.0, 0.0, 1.0),
            propagators=env.choices("OTEL_PROPAGATORS", PROPAGATORS, ("tracecontext", "baggage")),
            log_level=env.choice("OTEL_LOG_LEVEL", LOG_LEVELS, "info"),
            pushgateway_url=env.url("PUSHGATEWAY_URL"),
            metrics_exporter=_metrics_exporter(env),
            otlp_metrics_endpoint=_otlp_metrics_endpoint(env),
            otlp_metrics_headers=env.key_values("OTEL_EXPORTER_OTLP_HEADERS", secret=True)
            | env.key_values("OTEL_EXPORTER_OTLP_METRICS_HEADERS", secret=True),
            otlp_metrics_compression=env.choice(
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                OTLP_COMPRESSIONS,
                env.choice("OTEL_EXPORTER_OTLP_COMPRESSION", OTLP_COMPRESSIONS, "none"),
            ),
            sentry=_sentry(env, environment, version),
            metrics_port=env.integer("METRICS_PORT", 8000, 1, 65535),
            metrics_path=_metrics_path(env),
            flush_timeout_s=env.integer("TELEMETRY_FLUSH_TIMEOUT_MS", DEFAULT_FLUSH_TIMEOUT_MS, 1, 30_000) / 1000,
            backoff_s=env.number("TELEMETRY_BACKOFF_SECONDS", DEFAULT_BACKOFF_SECONDS, 0.0, 3600.0),
            flush_mode=env.choice("TELEMETRY_FLUSH", FLUSH_MODES, "auto"),
            export_interval_s=env.integer("TELEMETRY_EXPORT_INTERVAL_MS", DEFAULT_EXPORT_INTERVAL_MS, 0, 60_000) / 1000,
            label_value_limit=env.integer("METRICS_LABEL_VALUE_LIMIT", DEFAULT_LABEL_VALUE_LIMIT, 1, 100_000),
            aws=aws,
        )


def _traces_exporters(env: EnvReader) -> tuple[str, ...]:
    exporters = env.choices("OTEL_TRACES_EXPORTER", TRACES_EXPORTERS, ("otlp",))
    if "none" in exporters and len(exporters) > 1:
        raise ConfigError("OTEL_TRACES_EXPORTER", ",".join(exporters), "'none' alone, or otlp and/or console")
    return () if exporters == ("none",) else exporters


def _metrics_exporter(env: EnvReader) -> str:
    exporter = env.choice("OTEL_METRICS_EXPORTER", METRICS_EXPORTERS, "prometheus")
    if exporter == "otlp":
        protocol = env.choice(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            OTLP_PROTOCOLS,
            env.choice("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "http/protobuf"),
        )
        if protocol != "http/protobuf":
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                protocol,
                "http/protobuf: OTEL_METRICS_EXPORTER=otlp sends OTLP/HTTP (set it when the base protocol is grpc)",
            )
    return exporter


def _otlp_metrics_endpoint(env: EnvReader) -> str:
    """The metrics signal endpoint as the spec says: the metrics variable as is, the base one with /v1/metrics."""
    metrics = env.url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if metrics:
        return metrics
    base = env.url("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return base.rstrip("/") + "/v1/metrics"


def _sdk_disabled(env: EnvReader) -> bool:
    """OTEL_SDK_DISABLED as the OpenTelemetry specification defines it: only a case-insensitive "true" disables;
    any other value means enabled, with a warning unless it is "false" or empty."""
    value = (env.raw("OTEL_SDK_DISABLED") or "").strip().lower()
    if value not in ("", "true", "false"):
        logging.getLogger("lambda_event_bus.telemetry").warning(
            "OTEL_SDK_DISABLED=%r is not a boolean: telemetry stays on", value
        )
    return value == "true"


def _otlp_file(env: EnvReader, name: str) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>: a file path (TLS material)."""
    return env.raw(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.raw(f"OTEL_EXPORTER_OTLP_{name}")


def _otlp_traces_endpoint(env: EnvReader, protocol: str) -> str:
    """The signal endpoint as the spec says: the traces variable is used as is, the base one gets /v1/traces."""
    traces = env.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.url("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        return base or "http://localhost:4317"
    if base is None:
        return "http://localhost:4318/v1/traces"
    return base.rstrip("/") + "/v1/traces"


def _sentry(env: EnvReader, environment: str, version: str) -> SentrySettings | None:
    dsn = env.raw("SENTRY_DSN")
    sample_rate = env.number("SENTRY_SAMPLE_RATE", 1.0, 0.0, 1.0)
    if dsn is None:
        return None
    try:
        parts = urlsplit(dsn)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.username)
            and bool(parts.hostname)
            and parts.path.rstrip("/").rsplit("/", 1)[-1].isdigit()
        )
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            "SENTRY_DSN", redact_userinfo(dsn), "a Sentry DSN like https://<public key>@<host>/<project id>"
        )
    return SentrySettings(
        dsn=dsn,
        environment=env.text("SENTRY_ENVIRONMENT", environment),
        release=env.text("SENTRY_RELEASE", version),
        sample_rate=sample_rate,
    )


def _metrics_path(env: EnvReader) -> str:
    path = env.text("METRICS_PATH", "/metrics")
    if not path.startswith("/") or " " in path:
        raise ConfigError("METRICS_PATH", path, "a URL path starting with /")
    return path
