"""infra/docker-compose.yml and what it mounts, for people who have Docker: Grafana's provisioning names the
dashboards' datasource and folder, every image is pinned, every port is published on 127.0.0.1 only, every mounted
file exists, Prometheus' config passes promtool, and the gateway collector sends traces to Jaeger and metrics to
Prometheus."""

from __future__ import annotations

import json
import re
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hoststack.servers import PROMETHEUS_ASSETS
from localbus.dashboards import DASHBOARDS, load_dashboards
from samhost.processes import binary

INFRA = Path(__file__).resolve().parents[2] / "infra"
GRAFANA = INFRA / "grafana"
COMPOSE = INFRA / "docker-compose.yml"
COLLECTOR = INFRA / "collector" / "gateway.yaml"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
BOARDS = load_dashboards()
RAW = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


# --- provisioning ---


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_provisioned_datasource_is_the_one_the_dashboards_name():
    document = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert (source["uid"], source["type"]) == (DATASOURCE["uid"], DATASOURCE["type"])
    assert source["url"] == "http://prometheus:9090"
    assert {uid for board in BOARDS for uid in board.datasource_uids} == {source["uid"]}
    for document in RAW.values():
        for variable in document["templating"]["list"]:
            assert variable["datasource"] == DATASOURCE


def test_the_dashboard_provider_reads_the_folder_compose_mounts():
    document = _yaml(GRAFANA / "provisioning" / "dashboards" / "eventbus.yaml")
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    grafana = _yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(_bind_mounts(grafana))
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(provider["options"]["path"])).is_file()


# --- docker-compose.yml ---


def _volume_entries(service: dict[str, Any]) -> list[tuple[str, str]]:
    entries = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        entries.append((source, target))
    return entries


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, Path]]:
    """(container path, host path) of the service's relative bind mounts."""
    return [
        (target, (COMPOSE.parent / source).resolve())
        for source, target in _volume_entries(service)
        if source.startswith(".")
    ]


COMPOSE_DOC = _yaml(COMPOSE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]


def test_compose_has_the_stacks_services():
    images = {name: service["image"].rsplit(":", 1)[0] for name, service in SERVICES.items()}
    assert images["localstack"] == "localstack/localstack"
    assert images["pushgateway"] == "prom/pushgateway"
    assert images["prometheus"] == "prom/prometheus"
    assert images["grafana"] == "grafana/grafana"
    assert images["collector"] == "otel/opentelemetry-collector-contrib"
    assert images["jaeger"] in {"jaegertracing/jaeger", "jaegertracing/all-in-one"}
    assert any(image in {"apache/kafka", "redpandadata/redpanda"} for image in images.values())


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_pins_its_image(name: str):
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository, f"{name}: {image} has no tag"
    assert "/" not in tag, f"{name}: {image} has no tag"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_published_port_is_on_loopback(name: str):
    for port in SERVICES[name].get("ports", []):
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
        else:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_expected_ports_are_published():
    published = {str(port).split(":")[1] for service in SERVICES.values() for port in service.get("ports", [])}
    assert {"4566", "9092", "9091", "9090", "3000", "4317", "4318", "16686"} <= published


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mount_exists(name: str):
    declared = set(COMPOSE_DOC.get("volumes") or {})
    for source, target in _volume_entries(SERVICES[name]):
        assert target.startswith("/"), f"{name}: {target}"
        if source.startswith("."):
            path = (COMPOSE.parent / source).resolve()
            assert path.exists(), f"{name}: {source} ({path}) does not exist"
            assert INFRA in path.parents or path == INFRA, f"{name}: {source} is outside infra/"
        elif not source.startswith("/"):
            assert source in declared, f"{name}: named volume {source} is not declared"


def _flag(service: dict[str, Any], name: str) -> str | None:
    for argument in service.get("command", []):
        if argument == name or argument.startswith(f"{name}="):
            return argument.partition("=")[2]
    return None


def test_compose_prometheus_reads_a_config_that_passes_promtool():
    prometheus = SERVICES["prometheus"]
    config = Path(str(_flag(prometheus, "--config.file")))
    mounts = dict(_bind_mounts(prometheus))
    host_config = mounts[str(config.parent)] / config.name
    assert host_config == PROMETHEUS_ASSETS / "prometheus.compose.yml"
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(host_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    compose_config = _yaml(host_config)
    local_config = yaml.safe_load(
        string.Template((PROMETHEUS_ASSETS / "prometheus.yml").read_text()).substitute(PUSHGATEWAY="pushgateway:9091")
    )
    assert compose_config["rule_files"] == local_config["rule_files"]
    assert compose_config["scrape_configs"] == local_config["scrape_configs"]
    assert compose_config["scrape_configs"][0]["honor_labels"] is True


# --- the collector ---

COLLECTOR_DOC = _yaml(COLLECTOR)


def test_the_collector_sends_traces_to_jaeger_and_metrics_to_prometheus():
    pipelines = COLLECTOR_DOC["service"]["pipelines"]
    exporters = COLLECTOR_DOC["exporters"]
    (jaeger,) = [name for name in pipelines["traces"]["exporters"] if name.split("/")[0] == "otlp"]
    assert exporters[jaeger]["endpoint"] == "jaeger:4317"
    assert exporters[jaeger]["tls"]["insecure"] is True
    assert "jaeger" in SERVICES
    metric_exporters = {name.split("/")[0] for name in pipelines["metrics"]["exporters"]}
    assert metric_exporters & {"prometheus", "prometheusremotewrite"}
    if "prometheusremotewrite" in metric_exporters:
        assert exporters["prometheusremotewrite"]["endpoint"] == "http://prometheus:9090/api/v1/write"
        assert _flag(SERVICES["prometheus"], "--web.enable-remote-write-receiver") is not None
    receivers = COLLECTOR_DOC["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317")
    assert receivers["http"]["endpoint"].endswith(":4318")


def test_compose_runs_the_collector_with_this_config():
    collector = SERVICES["collector"]
    (config_flag,) = [argument for argument in collector["command"] if argument.startswith("--config=")]
    mounts = dict(_bind_mounts(collector))
    assert mounts[config_flag.partition("=")[2]] == COLLECTOR
