"""Fixtures: the real local servers (started once per session, stopped by PID) and telemetry factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hoststack import servers
from lambda_event_bus.telemetry import Telemetry
from samhost import deploy
from support.context import LambdaContext
from support.sentry_stub import SentryIngest


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def pushgateway(server_logs: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's prometheus-pushgateway); yields its base URL."""
    server = servers.start_pushgateway(server_logs)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(server_logs: Path) -> Iterator[str]:
    """A real Kafka-compatible broker (tansu, memory storage); yields its bootstrap address."""
    server = servers.start_tansu(server_logs)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def otlp_receiver(server_logs: Path, kafka_bootstrap: str) -> Iterator[servers.OtlpReceiver]:
    """A real OTLP receiver (rotel) that writes what it receives to the broker, where its store reads it."""
    receiver = servers.start_rotel(server_logs, kafka_bootstrap)
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def prometheus(
    server_logs: Path, tmp_path_factory: pytest.TempPathFactory, pushgateway: str
) -> Iterator[servers.Prometheus]:
    """A real Prometheus with the shipped config (infra/prometheus), scraping the Pushgateway every second."""
    server = servers.start_prometheus(server_logs, tmp_path_factory.mktemp("prometheus"), pushgateway)
    server.wait_for_pushgateway()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sam_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `sam build` (no container) of template.yaml per session: the SAM checks and the local deploy share it."""
    build_dir = tmp_path_factory.mktemp("sam-build")
    deploy.build(build_dir)
    return build_dir


@pytest.fixture
def sentry_ingest() -> Iterator[SentryIngest]:
    ingest = SentryIngest()
    yield ingest
    ingest.stop()


@pytest.fixture
def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:10]}"


TelemetryFactory = Callable[..., Telemetry]


@pytest.fixture
def make_telemetry(service_name: str) -> Iterator[TelemetryFactory]:
    """Build Telemetry from an environment given as keyword arguments (os.environ is never touched).

    Defaults: the test's own service name, no trace export, no push; each test opts into backends.
    """
    built: list[Telemetry] = []

    def factory(**environ: str) -> Telemetry:
        env = {"OTEL_SERVICE_NAME": service_name, "OTEL_TRACES_EXPORTER": "none", "ENVIRONMENT": "test"}
        env.update(environ)
        telemetry = Telemetry.from_environment(env)
        built.append(telemetry)
        return telemetry

    yield factory
    for telemetry in built:
        telemetry.tracing.shutdown()
        if telemetry.sentry is not None:
            telemetry.sentry.close(0.1)


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()
