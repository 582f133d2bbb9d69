"""Configuration: defaults, the OpenTelemetry variables' standard meaning, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lambda_event_bus.base import ConfigError
from lambda_event_bus.telemetry import TelemetrySettings

LAYER = Path(__file__).resolve().parents[2] / "functions" / "observability_layer"


def test_defaults_follow_the_opentelemetry_specification():
    settings = TelemetrySettings.from_env({})
    assert settings.traces_exporters == ("otlp",)
    assert settings.otlp_protocol == "http/protobuf"
    assert settings.otlp_traces_endpoint == "http://localhost:4318/v1/traces"
    assert settings.sampler == "parentbased_always_on"
    assert settings.propagators == ("tracecontext", "baggage")
    assert settings.pushgateway_url is None
    assert settings.sentry is None
    assert settings.flush_timeout_s == pytest.approx(0.3)


def test_base_endpoint_gets_the_signal_path_and_the_traces_endpoint_is_used_as_is():
    base = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    explicit = TelemetrySettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/custom",
        }
    )
    assert explicit.otlp_traces_endpoint == "https://traces.example/custom"
    grpc = TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert grpc.otlp_traces_endpoint == "http://collector:4317"


def test_service_name_precedence_and_resource_attributes():
    attributes = "service.name=from-attributes,team=payments,note=a%2Cb"
    settings = TelemetrySettings.from_env({"OTEL_RESOURCE_ATTRIBUTES": attributes, "AWS_LAMBDA_FUNCTION_NAME": "fn"})
    assert settings.service_name == "from-attributes"
    assert settings.resource_attributes["note"] == "a,b"
    assert TelemetrySettings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "fn"}).service_name == "fn"
    assert (
        TelemetrySettings.from_env({"OTEL_SERVICE_NAME": "explicit", "OTEL_RESOURCE_ATTRIBUTES": attributes})
    ).service_name == "explicit"


def test_resource_attributes_keep_their_meaning_unless_environment_and_version_are_set():
    attributes = "deployment.environment.name=prod,service.version=1.4.2"
    from_attributes = TelemetrySettings.from_env({"OTEL_RESOURCE_ATTRIBUTES": attributes})
    assert (from_attributes.environment, from_attributes.service_version) == ("prod", "1.4.2")
    explicit = TelemetrySettings.from_env(
        {"OTEL_RESOURCE_ATTRIBUTES": attributes, "ENVIRONMENT": "staging", "VERSION": "2.0.0"}
    )
    assert (explicit.environment, explicit.service_version) == ("staging", "2.0.0")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUSHGATEWAY_URL", "https://metrics:hunter2@pgw.example.com:99999"),
        ("SENTRY_DSN", "https://0123abcdsecretkey@o1.ingest.sentry.io/project"),
    ],
)
def test_credentials_in_urls_are_not_echoed_in_the_error(variable: str, value: str):
    with pytest.raises(ConfigError) as raised:
        TelemetrySettings.from_env({variable: value})
    assert "hunter2" not in str(raised.value)
    assert "secretkey" not in str(raised.value)
    assert "***@" in str(raised.value)


def test_headers_and_sentry_settings():
    settings = TelemetrySettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D,tenant=t1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "tenant=t2",
            "SENTRY_DSN": "https://key@o1.ingest.sentry.io/42",
            "SENTRY_SAMPLE_RATE": "0.5",
            "ENVIRONMENT": "prod",
            "VERSION": "1.2.3",
        }
    )
    assert settings.otlp_headers == {"x-api-key": "abc=", "tenant": "t2"}
    assert settings.sentry is not None
    assert (settings.sentry.environment, settings.sentry.release, settings.sentry.sample_rate) == ("prod", "1.2.3", 0.5)


def test_traces_exporter_none_turns_export_off_and_lists_are_accepted():
    assert TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "none"}).traces_exporters == ()
    both = TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "otlp, console"})
    assert both.traces_exporters == ("otlp", "console")


BAD_VALUES = [
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_TRACES_EXPORTER", "none,otlp"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=value"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ("OTEL_TRACES_SAMPLER_ARG", "nan"),
    ("OTEL_PROPAGATORS", "tracecontext,b3"),
    ("OTEL_LOG_LEVEL", "verbose"),
    ("PUSHGATEWAY_URL", "pushgateway:9091"),
    ("PUSHGATEWAY_URL", "http://host:99999"),
    ("SENTRY_DSN", "https://o1.ingest.sentry.io/42"),
    ("SENTRY_DSN", "not a dsn"),
    ("SENTRY_SAMPLE_RATE", "-0.1"),
    ("METRICS_PORT", "0"),
    ("METRICS_PORT", "eighty"),
    ("METRICS_PATH", "metrics"),
    ("TELEMETRY_FLUSH_TIMEOUT_MS", "0"),
    ("TELEMETRY_FLUSH_TIMEOUT_MS", "fast"),
    ("TELEMETRY_BACKOFF_SECONDS", "-1"),
    ("METRICS_LABEL_VALUE_LIMIT", "0"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_a_bad_value_fails_with_one_line_naming_the_variable(variable: str, value: str):
    with pytest.raises(ConfigError) as raised:
        TelemetrySettings.from_env({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}=")
    assert "expected" in message
    assert "\n" not in message
    assert raised.value.variable == variable


def test_secret_headers_are_not_echoed_in_the_error():
    with pytest.raises(ConfigError) as raised:
        TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_HEADERS": "authorization Bearer s3cr3t"})
    assert "s3cr3t" not in str(raised.value)


def test_blank_values_count_as_unset():
    assert TelemetrySettings.from_env({"PUSHGATEWAY_URL": "  ", "SENTRY_DSN": ""}).pushgateway_url is None


def test_start_up_with_a_bad_value_stops_with_that_line():
    """What a cold start prints: the process fails and the last line names the variable."""
    result = subprocess.run(
        [sys.executable, "-c", "from lambda_event_bus.telemetry import get_telemetry; get_telemetry()"],
        env={"PYTHONPATH": str(LAYER), "OTEL_TRACES_SAMPLER": "sometimes", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "lambda_event_bus.base.exceptions.ConfigError: OTEL_TRACES_SAMPLER='sometimes' is invalid"
    )
