"""The collector configurations: the one the ObservabilityLayer ships for a collector extension (ExtraLayers), which
receives where the functions export by default and forwards to the endpoint the template gives it, and the
gateway of infra/docker-compose.yml. A pipeline naming a component the file does not define stops a collector
at start-up; one defined and unused is a mistake waiting."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from samhost.cfn import load_template

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "functions" / "observability_layer"
CONFIG = LAYER / "collector-config" / "lambda.yaml"
GATEWAY = ROOT / "infra" / "collector" / "gateway.yaml"
KINDS = ("receivers", "processors", "exporters")


def undefined_components(config: dict) -> list[str]:
    """Components a pipeline names that the configuration does not define (the collector refuses to start)."""
    missing = []
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in KINDS:
            missing += [f"{name}.{kind}.{item}" for item in pipeline.get(kind, []) if item not in config.get(kind, {})]
    missing += [
        f"extensions.{item}"
        for item in config["service"].get("extensions", [])
        if item not in config.get("extensions", {})
    ]
    return missing


def unused_components(config: dict) -> list[str]:
    used = {
        (kind, item)
        for pipeline in config["service"]["pipelines"].values()
        for kind in KINDS
        for item in pipeline.get(kind, [])
    }
    return [f"{kind}.{item}" for kind in KINDS for item in config.get(kind) or {} if (kind, item) not in used]


@pytest.mark.parametrize("path", [CONFIG, GATEWAY], ids=["lambda", "gateway"])
def test_every_pipeline_names_only_defined_components_and_every_component_is_used(path: Path):
    config = yaml.safe_load(path.read_text())
    assert undefined_components(config) == []
    assert unused_components(config) == []
    for name, pipeline in config["service"]["pipelines"].items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}, name
        assert pipeline["receivers"], name
        assert pipeline["exporters"], name


def test_the_extension_carries_traces_and_metrics():
    assert set(yaml.safe_load(CONFIG.read_text())["service"]["pipelines"]) == {"traces", "metrics"}


def test_a_pipeline_naming_an_undefined_component_is_caught():
    config = yaml.safe_load(CONFIG.read_text())
    config["service"]["pipelines"]["traces"]["exporters"].append("awsxray")
    assert undefined_components(config) == ["traces.exporters.awsxray"]
    config["exporters"]["debug"] = {}
    assert unused_components(config) == ["exporters.debug"]


def test_it_receives_on_localhost_where_the_functions_export_by_default():
    config = yaml.safe_load(CONFIG.read_text())
    default_endpoint = urlsplit(load_template(ROOT / "template.yaml")["Parameters"]["OtlpEndpoint"]["Default"])
    receiver = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver == f"{default_endpoint.hostname}:{default_endpoint.port}" == "localhost:4318"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].startswith("localhost:")


def test_it_forwards_to_the_endpoint_the_template_sets_and_is_where_the_template_says():
    template = load_template(ROOT / "template.yaml")
    config = yaml.safe_load(CONFIG.read_text())
    assert config["exporters"]["otlphttp"]["endpoint"] == "${env:OTLP_EXPORT_ENDPOINT}"
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert "OTLP_EXPORT_ENDPOINT" in variables
    # Lambda unpacks a Python layer's build (SAM puts the layer's files under python/) in /opt
    default_uri = template["Parameters"]["CollectorConfigUri"]["Default"]
    assert default_uri == "/opt/python/" + CONFIG.relative_to(LAYER).as_posix()
