"""samhost.cfn: the YAML short forms, parameters, Conditions and intrinsic functions, on small templates and on
the project's template.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from lambda_event_bus.telemetry.config import METRICS_EXPORTERS
from samhost.cfn import NO_VALUE, Evaluator, MissingPhysicalIdError, TemplateError, load_template
from samhost.kafka_trigger import samconfig_parameters

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"


def template_from(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return load_template(path)


class TestLoader:
    def test_short_forms_become_long_forms_and_aliases_share_the_anchor(self, tmp_path):
        template = template_from(
            tmp_path,
            """
AWSTemplateFormatVersion: 2010-09-09
Resources:
  A:
    Properties:
      Name: !Ref Param
      Arn: !GetAtt Queue.Arn
      Joined: !Join [",", [a, !Sub "${X}"]]
      Shared: &shared !If [Cond, yes-value, !Ref AWS::NoValue]
      Again: *shared
      Check: !And [!Condition C1, !Not [!Equals [a, b]]]
""",
        )
        properties = template["Resources"]["A"]["Properties"]
        assert template["AWSTemplateFormatVersion"] == "2010-09-09", "dates stay strings, as CloudFormation reads them"
        assert properties["Name"] == {"Ref": "Param"}
        assert properties["Arn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
        assert properties["Joined"] == {"Fn::Join": [",", ["a", {"Fn::Sub": "${X}"}]]}
        assert properties["Shared"] == {"Fn::If": ["Cond", "yes-value", {"Ref": "AWS::NoValue"}]}
        assert properties["Again"] == properties["Shared"]
        assert properties["Check"] == {"Fn::And": [{"Condition": "C1"}, {"Fn::Not": [{"Fn::Equals": ["a", "b"]}]}]}

    def test_the_project_template_loads(self):
        template = load_template(TEMPLATE)
        assert template["Resources"]["KafkaConsumerFunction"]["Type"] == "AWS::Serverless::Function"


SMALL = """
Parameters:
  Name: {Type: String, Default: bus}
  Size: {Type: Number, Default: 3}
  Mode: {Type: String, Default: a, AllowedValues: [a, b]}
  Items: {Type: CommaDelimitedList, Default: "x, y ,z"}
  Empty: {Type: CommaDelimitedList, Default: ""}
  Required: {Type: String}
Conditions:
  IsA: !Equals [!Ref Mode, a]
  IsB: !Not [!Condition IsA]
  Either: !Or [!Condition IsA, !Condition IsB]
  HasEmpty: !Equals [!Join ["", !Ref Empty], ""]
  Loop1: !Condition Loop2
  Loop2: !Condition Loop1
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Fn: {Type: AWS::Lambda::Function, Condition: IsB}
"""


@pytest.fixture
def small(tmp_path: Path) -> dict:
    return template_from(tmp_path, SMALL)


class TestParameters:
    def test_defaults_given_values_lists_and_pseudo_parameters(self, small):
        evaluator = Evaluator(small, {"Required": "r", "Name": "other", "AWS::Region": "eu-west-1"})
        assert evaluator.ref("Name") == "other"
        assert evaluator.ref("Size") == "3", "a Number parameter's Ref is a string"
        assert evaluator.ref("Items") == ["x", "y", "z"], "list items are space-trimmed"
        assert evaluator.ref("Empty") == [""]
        assert evaluator.ref("AWS::Region") == "eu-west-1"
        assert evaluator.ref("AWS::AccountId") == "000000000000"
        assert evaluator.ref("AWS::NoValue") is NO_VALUE

    @pytest.mark.parametrize(
        ("given", "message"),
        [
            ({}, "Required has no default"),
            ({"Required": "r", "Nope": "1"}, "not in the template: Nope"),
            ({"Required": "r", "Mode": "c"}, "Mode='c' is not one of"),
        ],
    )
    def test_bad_parameters_fail_naming_them(self, small, given, message):
        with pytest.raises(TemplateError, match=message):
            Evaluator(small, given)


class TestConditions:
    def test_conditions_compose_and_resources_follow_theirs(self, small):
        a = Evaluator(small, {"Required": "r"})
        b = Evaluator(small, {"Required": "r", "Mode": "b"})
        assert (a.condition("IsA"), a.condition("IsB"), a.condition("Either")) == (True, False, True)
        assert (b.condition("IsA"), b.condition("IsB"), b.condition("Either")) == (False, True, True)
        assert a.condition("HasEmpty") is True
        assert (a.resource_condition("Fn"), b.resource_condition("Fn"), a.resource_condition("Queue")) == (
            False,
            True,
            True,
        )

    def test_a_loop_between_conditions_is_an_error(self, small):
        with pytest.raises(TemplateError, match="Loop1 -> Loop2 -> Loop1"):
            Evaluator(small, {"Required": "r"}).condition("Loop1")


class TestFunctions:
    def evaluator(self, small: dict, physical: object = None) -> Evaluator:
        return Evaluator(small, {"Required": "r"}, physical=physical)  # type: ignore[arg-type]

    def test_sub_in_both_forms_with_literals_refs_and_attributes(self, small):
        evaluator = self.evaluator(small, {"Queue": "https://q", "Queue.Arn": "arn:aws:sqs:us-east-1:1:q"})
        assert evaluator.evaluate({"Fn::Sub": "${Name}-${AWS::Region}-${!Literal}"}) == "bus-us-east-1-${Literal}"
        assert evaluator.evaluate({"Fn::Sub": "${Queue} ${Queue.Arn}"}) == "https://q arn:aws:sqs:us-east-1:1:q"
        assert (
            evaluator.evaluate({"Fn::Sub": ["${A}/${Name}", {"A": {"Fn::Select": [1, {"Ref": "Items"}]}}]}) == "y/bus"
        )

    def test_select_split_join(self, small):
        evaluator = self.evaluator(small)
        padded = {"Fn::Split": [",", {"Fn::Sub": ["${T},,", {"T": {"Fn::Join": [",", {"Ref": "Items"}]}}]}]}
        assert evaluator.evaluate(padded) == ["x", "y", "z", "", ""]
        assert evaluator.evaluate({"Fn::Select": ["4", padded]}) == ""
        with pytest.raises(TemplateError, match="index 5 is out of range"):
            evaluator.evaluate({"Fn::Select": [5, padded]})

    def test_if_evaluates_only_the_branch_taken_and_no_value_disappears(self, small):
        evaluator = self.evaluator(small)  # no physical ids at all: the other branch's Ref is never looked at
        node = {
            "Keep": {"Fn::If": ["IsA", "yes", {"Ref": "Queue"}]},
            "Drop": {"Fn::If": ["IsA", {"Ref": "AWS::NoValue"}, {"Ref": "Queue"}]},
            "List": ["a", {"Fn::If": ["IsB", {"Ref": "Queue"}, {"Ref": "AWS::NoValue"}]}, "b"],
        }
        assert evaluator.evaluate(node) == {"Keep": "yes", "List": ["a", "b"]}

    def test_physical_ids_from_a_mapping_or_a_callable(self, small):
        asked: list[str] = []

        def lookup(key: str) -> str:
            asked.append(key)
            return f"id-of-{key}"

        assert self.evaluator(small, lookup).evaluate({"Fn::GetAtt": ["Queue", "Arn"]}) == "id-of-Queue.Arn"
        assert asked == ["Queue.Arn"]
        by_name = self.evaluator(small, {"Queue": "arn:aws:sqs:us-east-1:1:q"})
        assert by_name.evaluate({"Fn::GetAtt": ["Queue", "Arn"]}) == "arn:aws:sqs:us-east-1:1:q"
        with pytest.raises(MissingPhysicalIdError, match="Queue"):
            self.evaluator(small).evaluate({"Ref": "Queue"})
        with pytest.raises(TemplateError, match="Nowhere"):
            self.evaluator(small).evaluate({"Ref": "Nowhere"})

    def test_equals_compares_as_strings(self, small):
        evaluator = self.evaluator(small)
        assert evaluator.evaluate({"Fn::Equals": [{"Ref": "Size"}, 3]}) is True
        assert evaluator.evaluate({"Fn::Equals": [True, "true"]}) is True


class TestProjectTemplate:
    def test_stage_and_kafka_conditions(self):
        template = load_template(TEMPLATE)
        local = Evaluator(template, {"Stage": "local", "KafkaTriggerSource": "self-managed"})
        assert local.condition("IsLocal") is True
        assert local.condition("UseSelfManagedTrigger") is False, "no Kafka mapping on the local stage"
        dev = Evaluator(template, {"KafkaTriggerSource": "self-managed", "KafkaTopics": "a,b,c"})
        assert dev.condition("UseSelfManagedTrigger") is True
        assert [dev.condition(f"HasKafkaTopic{n}") for n in range(2, 7)] == [True, True, False, False, False]
        assert dev.condition("KafkaTriggerIsMisconfigured") is False
        assert dev.condition("HasVpc") is False


def test_a_functions_alias_reference_is_the_function_qualified_by_its_auto_published_alias():
    """SAM's `Ref Function.Alias` (AutoPublishAlias from the function or Globals): `name:alias`, as Invoke takes it."""
    template = {
        "Parameters": {"FunctionAlias": {"Type": "String", "Default": "live"}},
        "Globals": {"Function": {"AutoPublishAlias": {"Ref": "FunctionAlias"}}},
        "Resources": {
            "Consumer": {"Type": "AWS::Serverless::Function", "Properties": {}},
            "Pinned": {"Type": "AWS::Serverless::Function", "Properties": {"AutoPublishAlias": "blue"}},
            "Bare": {"Type": "AWS::Serverless::Function", "Properties": {}},
        },
    }
    physical = {"Consumer": "bus-Consumer-1", "Pinned": "bus-Pinned-2", "Bare": "bus-Bare-3"}
    evaluator = Evaluator(template, {}, physical=physical)
    assert evaluator.evaluate({"Ref": "Consumer.Alias"}) == "bus-Consumer-1:live"
    assert evaluator.evaluate({"Ref": "Pinned.Alias"}) == "bus-Pinned-2:blue"
    del template["Globals"]
    with pytest.raises(TemplateError, match="no AutoPublishAlias"):
        Evaluator(template, {}, physical=physical).evaluate({"Ref": "Bare.Alias"})


class TestRules:
    """The template's Rules, which CloudFormation checks before it changes anything, for samconfig's stages."""

    @staticmethod
    def refused(parameters: dict[str, str]) -> list[str]:
        template = load_template(TEMPLATE)
        evaluator = Evaluator(template, parameters)
        refusals = []
        for rule in template["Rules"].values():
            if "RuleCondition" in rule and not evaluator.evaluate(rule["RuleCondition"]):
                continue
            refusals += [
                check["AssertDescription"] for check in rule["Assertions"] if not evaluator.evaluate(check["Assert"])
            ]
        return refusals

    def stage(self, name: str, **extra: str) -> dict[str, str]:
        return {**samconfig_parameters(TEMPLATE.parent / "samconfig.toml", name), **extra}

    def test_the_local_stage_deploys_as_configured(self):
        assert self.refused(self.stage("local")) == []

    def test_dev_and_prod_are_refused_until_their_cluster_is_named(self):
        dev, prod = self.refused(self.stage("dev")), self.refused(self.stage("prod"))
        assert [refusal.split(" ", 1)[0] for refusal in dev] == ["KafkaBootstrapServers", "KafkaSecurity=scram"]
        assert [refusal.split(" ", 1)[0] for refusal in prod] == [
            "KafkaBootstrapServers",
            "KafkaTriggerSource=msk",
            "KafkaSecurity=iam",
        ]
        secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:AmazonMSK_bus-AbCdEf"
        cluster = "arn:aws:kafka:eu-west-1:123456789012:cluster/bus/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2"
        brokers = "b-1.bus.example:9098,b-2.bus.example:9098"
        assert self.refused(self.stage("dev", KafkaBootstrapServers=brokers, KafkaSaslSecretArn=secret)) == []
        assert self.refused(self.stage("prod", KafkaBootstrapServers=brokers, MskClusterArn=cluster)) == []

    @pytest.mark.parametrize(
        ("parameters", "start"),
        [
            ({"KafkaTriggerSource": "none"}, "KafkaTriggerSource is none"),
            ({"KafkaSecurity": "iam", "KafkaTriggerSource": "self-managed"}, "KafkaSecurity=iam is MSK's"),
            ({"KafkaBootstrapServers": ""}, "KafkaBootstrapServers is the local default"),
            ({"KafkaSecurity": "plain"}, "KafkaSecurity=plain needs KafkaSaslSecretArn"),
            ({"KafkaSecurity": "plain", "KafkaTriggerSource": "msk"}, "KafkaSecurity=plain is for self-managed"),
            ({"KafkaSecurity": "mtls"}, "KafkaSecurity=mtls needs KafkaClientCertificateSecretArn"),
            ({"MetricsExporter": "otlp", "OtlpProtocol": "grpc"}, "MetricsExporter=otlp sends OTLP/HTTP"),
        ],
    )
    def test_contradictions_are_refused_with_their_reason(self, parameters, start):
        given = {"Stage": "prod", "KafkaBootstrapServers": "b-1:9092", "KafkaTriggerSource": "self-managed"}
        given |= {"MskClusterArn": "arn:aws:kafka:eu-west-1:1:cluster/x/y"} | parameters
        assert any(refusal.startswith(start) for refusal in self.refused(given)), self.refused(given)


def test_the_metrics_exporter_is_a_parameter_with_the_layers_own_choices():
    """MetricsExporter sets OTEL_METRICS_EXPORTER in every function: the template offers exactly what the layer's
    configuration accepts, and the Pushgateway stays the default."""
    template = load_template(TEMPLATE)
    parameter = template["Parameters"]["MetricsExporter"]
    assert (parameter["Default"], tuple(parameter["AllowedValues"])) == ("prometheus", METRICS_EXPORTERS)
    for chosen in METRICS_EXPORTERS:
        evaluator = Evaluator(template, {"MetricsExporter": chosen}, physical={"ObservabilityLayer": "arn:layer:1"})
        variables = evaluator.evaluate(template["Globals"]["Function"])["Environment"]["Variables"]
        assert variables["OTEL_METRICS_EXPORTER"] == chosen
    assert TestRules.refused({"Stage": "local", "MetricsExporter": "otlp"}) == []


class TestExtraLayers:
    """ExtraLayers adds layers to every function after the ObservabilityLayer (a collector extension), and with
    them the collector's configuration variables."""

    @staticmethod
    def function_globals(**parameters: str) -> tuple[list[str], dict[str, str]]:
        template = load_template(TEMPLATE)
        evaluator = Evaluator(template, parameters, physical={"ObservabilityLayer": "arn:layer:observability:1"})
        function = evaluator.evaluate(template["Globals"]["Function"])
        return function["Layers"], function["Environment"]["Variables"]

    def test_none_by_default_and_no_collector_variables(self):
        layers, variables = self.function_globals()
        assert layers == ["arn:layer:observability:1"]
        assert "OPENTELEMETRY_COLLECTOR_CONFIG_URI" not in variables
        assert "OTLP_EXPORT_ENDPOINT" not in variables

    def test_each_extra_layer_follows_the_observability_layer_in_order(self):
        collector = "arn:aws:lambda:eu-west-1:184161586896:layer:opentelemetry-collector-amd64-0_12_0:1"
        other = "arn:aws:lambda:eu-west-1:123456789012:layer:secrets-extension:4"
        layers, variables = self.function_globals(
            ExtraLayers=f"{collector},{other}", CollectorExportEndpoint="https://gateway.internal:4318"
        )
        assert layers == ["arn:layer:observability:1", collector, other]
        assert variables["OPENTELEMETRY_COLLECTOR_CONFIG_URI"] == "/opt/python/collector-config/lambda.yaml"
        assert variables["OTLP_EXPORT_ENDPOINT"] == "https://gateway.internal:4318"
        assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318", "the extension's receiver"

    def test_four_fill_lambdas_five_layers_and_a_fifth_is_refused_by_lambda_not_dropped(self):
        arns = [f"arn:aws:lambda:eu-west-1:123456789012:layer:l{index}:1" for index in range(5)]
        layers, _ = self.function_globals(ExtraLayers=",".join(arns[:4]))
        assert layers == ["arn:layer:observability:1", *arns[:4]]
        layers, _ = self.function_globals(ExtraLayers=",".join(arns))
        assert layers == ["arn:layer:observability:1", *arns[:3], ",".join(arns)], "not an ARN: Lambda refuses it"
