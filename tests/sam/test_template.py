"""The SAM template: it lints, it builds offline without Docker, and the built layer works on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from samhost import deploy
from samhost.cfn import Evaluator
from samhost.cfn import load_template as load_with_intrinsics
from samhost.kafka_trigger import samconfig_parameters

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

pytestmark = pytest.mark.sam


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _any_tag)


def load_template() -> dict[str, Any]:
    return dict(yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader))  # noqa: S506 - a SafeLoader subclass


def sam(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The SAM CLI as `make` installs it, with the runtime's interpreter first on PATH (samhost.deploy)."""
    return subprocess.run(
        [deploy.sam_binary(), *args],
        cwd=cwd,
        env={**deploy.sam_environment(), "AWS_DEFAULT_REGION": "eu-west-1"},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def test_contract_names_and_layer_build_method():
    template = load_template()
    resources = template["Resources"]
    layer = resources["ObservabilityLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    assert globals_["Layers"][0] == "ObservabilityLayer"
    assert all(extra[0].startswith("HasExtraLayer") for extra in globals_["Layers"][1:]), "!If, read as its arguments"
    variables = globals_["Environment"]["Variables"]
    assert {"ENVIRONMENT", "VERSION", "OTEL_EXPORTER_OTLP_ENDPOINT", "PUSHGATEWAY_URL", "SENTRY_DSN"} <= set(variables)


def test_sam_validate_lint():
    result = sam("validate", "--lint", "--template-file", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def build_dir(sam_build_dir: Path) -> Path:
    return sam_build_dir


@pytest.fixture(scope="module")
def built_layer(build_dir: Path) -> Path:
    return build_dir / "ObservabilityLayer" / "python"


def test_sam_build_puts_the_layer_and_its_pinned_dependencies_under_python(built_layer: Path):
    assert (built_layer / "lambda_event_bus" / "telemetry" / "__init__.py").exists()
    # the collector extension's configuration, at CollectorConfigUri's default once Lambda unpacks it in /opt
    assert (built_layer / "collector-config" / "lambda.yaml").is_file()
    requirements = (ROOT / "functions" / "observability_layer" / "requirements.txt").read_text().splitlines()
    pins = [line.split("==") for line in requirements if line and not line.startswith("#")]
    assert pins
    assert all(len(pin) == 2 for pin in pins), "every layer dependency is pinned"
    installed = {path.name.lower() for path in built_layer.glob("*.dist-info")}
    for name, version in pins:
        assert f"{name.replace('-', '_')}-{version}.dist-info".lower() in installed, name


def test_the_built_layer_runs_a_wrapped_handler_with_nothing_else_on_the_path(built_layer: Path):
    """As in Lambda: the layer's python/ folder alone (no site-packages) must hold everything."""
    probe = (
        "import json, sys\n"
        "from lambda_event_bus.telemetry import get_telemetry\n"
        "telemetry = get_telemetry()\n"
        "handler = telemetry.http_handler(lambda event, context: {'statusCode': 204})\n"
        "print(json.dumps(handler({'httpMethod': 'GET', 'resource': '/health', 'path': '/health'}, None)))\n"
        "assert not any('site-packages' in path for path in sys.path), sys.path\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": str(built_layer), "OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '{"statusCode": 204}'


HEALTH_CHECK = {"httpMethod": "GET", "resource": "/health", "path": "/health", "headers": {}}
EMPTY_KAFKA_BATCH = {"eventSource": "aws:kafka", "bootstrapServers": "127.0.0.1:9", "records": {}}


@pytest.mark.parametrize(
    ("function", "code_uri", "event", "expected"),
    [
        ("IngestFunction", "functions/ingest/", HEALTH_CHECK, {"statusCode": 200, "body": '{"status":"ok"}'}),
        ("KafkaConsumerFunction", "functions/consumer/", EMPTY_KAFKA_BATCH, {"batchItemFailures": []}),
        ("CdcFunction", "functions/cdc/", {"Records": []}, {"batchItemFailures": []}),
        ("MaintenanceFunction", "functions/maintenance/", {"source": "aws.events"}, {"connectors": {}}),
    ],
)
def test_each_function_loads_as_lambda_loads_it(
    build_dir: Path,
    built_layer: Path,
    function: str,
    code_uri: str,
    event: dict[str, object],
    expected: dict[str, object],
):
    """Only the function's built CodeUri folder and the layer's python/ folder on sys.path: the template's
    Handler (module.function) imports and answers."""
    properties = load_template()["Resources"][function]["Properties"]
    assert properties["CodeUri"] == code_uri
    module, _, attribute = properties["Handler"].partition(".")
    probe = (
        "import importlib, json, sys\n"
        f"handler = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        f"print(json.dumps(handler({event!r}, None)))\n"
        "assert not any('site-packages' in path for path in sys.path), sys.path\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={
            "PYTHONPATH": f"{build_dir / function}{os.pathsep}{built_layer}",
            "OTEL_TRACES_EXPORTER": "none",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "PATH": "/usr/bin:/bin",
        },
        cwd=build_dir / function,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    response = json.loads(result.stdout.strip().splitlines()[-1])
    assert {key: response.get(key) for key in expected} == expected


def test_snapstart_is_one_parameter_and_every_trigger_invokes_the_published_alias():
    """SnapStart applies to published versions only: SAM publishes one per deployment under FunctionAlias, and the
    triggers SAM makes (API routes, queues, streams, schedule) and the template's own Kafka mappings invoke it."""
    template = load_template()
    parameters = template["Parameters"]
    assert parameters["SnapStart"]["AllowedValues"] == ["None", "PublishedVersions"]
    assert parameters["SnapStart"]["Default"] == "None"
    assert parameters["FunctionAlias"]["Default"] == "live"
    globals_ = template["Globals"]["Function"]
    assert globals_["SnapStart"] == {"ApplyOn": "SnapStart"}  # !Ref, read as its argument
    assert globals_["AutoPublishAlias"] == "FunctionAlias"
    targets = {
        resource["Properties"]["FunctionName"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert targets == {"KafkaConsumerFunction.Alias", "CdcFunction.Alias"}


def test_each_function_has_a_stable_service_name_and_demo_routes_are_off_but_locally():
    """OTEL_SERVICE_NAME (spans' service.name, the Pushgateway job) comes from a parameter and the function's
    role, not its generated name, which a replacement changes; the demo routes are on only where asked for."""

    template = load_template()
    names = {
        logical: resource["Properties"]["Environment"]["Variables"].get("OTEL_SERVICE_NAME")
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert names == {  # !Sub, read as its argument
        "IngestFunction": "${ServiceNamePrefix}-ingest",
        "KafkaConsumerFunction": "${ServiceNamePrefix}-consumer",
        "CdcFunction": "${ServiceNamePrefix}-cdc",
        "MaintenanceFunction": "${ServiceNamePrefix}-maintenance",
    }
    assert template["Parameters"]["ServiceNamePrefix"]["Default"] == "event-bus"
    assert template["Parameters"]["DemoRoutes"]["Default"] == "disabled"
    ingest = template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]
    assert ingest["DEMO_ROUTES"] == "DemoRoutes"
    stages = {stage: samconfig_parameters(ROOT / "samconfig.toml", stage) for stage in ("local", "dev", "prod")}
    assert {stage: parameters.get("DemoRoutes") for stage, parameters in stages.items()} == {
        "local": "enabled",
        "dev": None,
        "prod": None,
    }


def test_alarms_watch_the_dead_letters_every_function_and_the_triggers_lag():
    """What needs a person: dead letters (how many, how old), each function's Errors and Throttles, the Kafka
    mappings' OffsetLag and the streams' IteratorAge, each notifying AlarmActions or the stack's AlarmTopic."""
    resources = load_template()["Resources"]
    alarms = {
        logical: resource for logical, resource in resources.items() if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    watched = {
        (
            alarm["Properties"]["Namespace"],
            alarm["Properties"]["MetricName"],
            alarm["Properties"]["Dimensions"][0]["Value"],
        )
        for alarm in alarms.values()
    }
    functions = ("IngestFunction", "KafkaConsumerFunction", "CdcFunction", "MaintenanceFunction")
    assert watched == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue.QueueName"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", "DeadLetterQueue.QueueName"),
        ("AWS/Lambda", "OffsetLag", "KafkaConsumerFunction"),
        ("AWS/Lambda", "IteratorAge", "CdcFunction"),
        *{("AWS/Lambda", metric, function) for function in functions for metric in ("Errors", "Throttles")},
    }
    actions = ["HasAlarmActions", "AlarmActions", ["AlarmTopic"]]  # !If, read as its arguments
    assert all(
        alarm["Properties"]["AlarmActions"] == alarm["Properties"]["OKActions"] == actions for alarm in alarms.values()
    )
    assert all(alarm["Properties"]["TreatMissingData"] == "notBreaching" for alarm in alarms.values())
    assert alarms["KafkaOffsetLagAlarm"]["Condition"] == "UseKafkaTrigger", "no mapping, no lag metric"
    assert resources["AlarmTopic"]["Condition"] == "HasNoAlarmActions"


def test_the_consumers_starting_position_is_a_parameter():
    """TRIM_HORIZON by default (nothing written before the deployment is missed, the topic's retention is
    replayed), LATEST when asked for; CDC's mappings always start at the beginning of Debezium's topics."""
    template = load_template()
    assert template["Parameters"]["KafkaStartingPosition"]["Default"] == "TRIM_HORIZON"
    positions = {
        logical: resource["Properties"]["StartingPosition"]
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    consumer = {value for logical, value in positions.items() if logical.startswith("KafkaConsumer")}
    cdc = {value for logical, value in positions.items() if logical.startswith("Cdc")}
    assert (consumer, cdc) == ({"KafkaStartingPosition"}, {"TRIM_HORIZON"})
    assert len(positions) == 18


def test_every_function_has_a_log_group_with_a_retention():
    """Lambda's own log groups keep logs forever; the stack makes each function's, with LogRetentionDays."""
    template = load_template()
    groups = {
        resource["Properties"]["LogGroupName"]: resource["Properties"]["RetentionInDays"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    functions = [logical for logical, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert groups == {
        **{f"/aws/lambda/${{{function}}}": "LogRetentionDays" for function in functions},
        "/aws/apigateway/${AWS::StackName}-access": "LogRetentionDays",
    }
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_api_access_logs_are_a_parameter_and_the_account_role_is_only_made_when_asked():
    """Access logs go to the stack's log group in JSON; API Gateway needs the account's CloudWatch role for them,
    which the stack sets only with ApiGatewayAccountRole=create (and keeps when deleted: it is account-wide)."""
    template = load_with_intrinsics(TEMPLATE)
    physical = {"ApiAccessLogGroup.Arn": "arn:aws:logs:eu-west-1:123456789012:log-group:access"}

    def api_and_resources(**parameters: str) -> tuple[dict[str, Any], set[str]]:
        evaluator = Evaluator(template, parameters, physical=physical)
        api = evaluator.evaluate(template["Resources"]["EventBusApi"]["Properties"])
        made = {logical for logical in template["Resources"] if evaluator.resource_condition(logical)}
        return api, made

    api, made = api_and_resources()
    assert "AccessLogSetting" not in api
    assert not {"ApiAccessLogGroup", "ApiGatewayCloudWatchRole", "ApiGatewayAccountSettings"} & made

    api, made = api_and_resources(ApiAccessLogs="enabled")
    setting = api["AccessLogSetting"]
    assert setting["DestinationArn"] == physical["ApiAccessLogGroup.Arn"]
    fields = json.loads(setting["Format"])
    assert {"requestId", "status", "resourcePath", "integrationLatency", "errorType"} <= set(fields)
    assert "ApiAccessLogGroup" in made
    assert not {"ApiGatewayCloudWatchRole", "ApiGatewayAccountSettings"} & made

    _, made = api_and_resources(ApiAccessLogs="enabled", ApiGatewayAccountRole="create")
    assert {"ApiGatewayCloudWatchRole", "ApiGatewayAccountSettings"} <= made
    resources = template["Resources"]
    assert resources["EventBusApi"]["DependsOn"] == "ApiGatewayAccountReady"
    assert resources["ApiGatewayAccountSettings"]["DeletionPolicy"] == "Retain"
    assert resources["ApiGatewayCloudWatchRole"]["DeletionPolicy"] == "Retain"
    stages = {stage: samconfig_parameters(ROOT / "samconfig.toml", stage) for stage in ("local", "dev", "prod")}
    assert {stage: parameters.get("ApiAccessLogs") for stage, parameters in stages.items()} == {
        "local": None,
        "dev": "enabled",
        "prod": "enabled",
    }
