"""The template's ingest slice: IngestFunction, EventBusApi (REST), IdempotencyTable, their parameters and outputs.

Contract checks on the template text (no SAM CLI run): the names and routes other checks rely on, the API's
auth in both ApiAuth modes, least-privilege IAM for every KafkaSecurity mode, and a stack LocalStack can deploy.

`load_template()` reads short-form tags as plain values (`!Ref X` -> "X"), which is enough for properties. Where
the intrinsic itself matters (conditions, `!If` branches, `!Ref` vs a literal), the template is read a second
time with the tags kept in their long form, and conditions are evaluated for given parameter values the way
CloudFormation does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sam.test_template import TEMPLATE, load_template

pytestmark = pytest.mark.sam

API_ROUTES = {
    ("POST", "/events"),
    ("GET", "/health"),
    ("GET", "/api/events"),
    ("GET", "/api/kafka"),
    ("GET", "/api/cdc"),
    ("GET", "/api/error"),
}
OPEN_ROUTES = {("GET", "/health")}  # load balancers probe it without a key or a signature
NO_VALUE = {"Ref": "AWS::NoValue"}
MSK_CLUSTER = "arn:aws:kafka:eu-west-1:123456789012:cluster/bus/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2"
SCRAM_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:AmazonMSK_bus-AbCdEf"
CLIENT_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bus-client-certificate-AbCdEf"
CA_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bus-private-ca-AbCdEf"


class _IntrinsicLoader(yaml.SafeLoader):
    """Reads short-form tags in their long form: `!Ref X` -> {"Ref": "X"}, `!If [...]` -> {"Fn::If": [...]}."""


def _long_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in {"Ref", "Condition"}:
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_IntrinsicLoader.add_multi_constructor("!", _long_form)


def load_intrinsics() -> dict[str, Any]:
    return dict(yaml.load(TEMPLATE.read_text(), Loader=_IntrinsicLoader))  # noqa: S506 - a SafeLoader subclass


class Scenario:
    """The template under given parameter values: conditions evaluated, `!If` branches chosen."""

    def __init__(self, template: dict[str, Any], **overrides: str) -> None:
        self.template = template
        unknown = set(overrides) - set(template["Parameters"])
        assert not unknown, f"not template parameters: {unknown}"
        self.parameters: dict[str, Any] = {}
        for name, spec in template["Parameters"].items():
            value = str(overrides.get(name, spec.get("Default", "")))
            if "AllowedValues" in spec:
                assert value in [str(allowed) for allowed in spec["AllowedValues"]], f"{name}={value} is not allowed"
            self.parameters[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value

    def condition(self, name: str) -> bool:
        return bool(self.evaluate(self.template["Conditions"][name]))

    def evaluate(self, expression: Any) -> Any:
        """The value of a condition expression (Fn::Equals/Not/And/Or/Join, Condition, Ref to a parameter)."""
        if not (isinstance(expression, dict) and len(expression) == 1):
            return expression
        ((function, argument),) = expression.items()
        match function:
            case "Ref":
                return self.parameters[argument]
            case "Condition":
                return self.condition(argument)
            case "Fn::Equals":
                return self.evaluate(argument[0]) == self.evaluate(argument[1])
            case "Fn::Not":
                return not self.evaluate(argument[0])
            case "Fn::And":
                return all(self.evaluate(item) for item in argument)
            case "Fn::Or":
                return any(self.evaluate(item) for item in argument)
            case "Fn::Join":
                return argument[0].join(self.evaluate(argument[1]))
        raise AssertionError(f"unexpected {function} in a condition")

    def resolve(self, value: Any) -> Any:
        """`value` with every Fn::If replaced by its chosen branch and AWS::NoValue dropped (other intrinsics kept)."""
        if isinstance(value, dict):
            if set(value) == {"Fn::If"}:
                name, when_true, when_false = value["Fn::If"]
                return self.resolve(when_true if self.condition(name) else when_false)
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item != NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item != NO_VALUE]
        return value


def _events(function: dict[str, Any]) -> dict[str, Any]:
    return dict(function["Properties"].get("Events") or {})


def _statements(template: dict[str, Any], scenario: Scenario) -> list[dict[str, Any]]:
    policies = scenario.resolve(template["Resources"]["IngestFunction"]["Properties"]["Policies"])
    return [statement for policy in policies for statement in policy["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _api_methods(body: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in body["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


# ------------------------------------------------------------------------------------------------ IngestFunction


def test_ingest_function_contract():
    template = load_template()
    function = template["Resources"]["IngestFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    properties = function["Properties"]
    assert properties["CodeUri"] == "functions/ingest/"
    assert properties["Handler"] == "app.handler"
    assert properties["Timeout"] == 10
    assert properties["MemorySize"] == 512
    assert properties["Description"]
    assert "Runtime" not in properties, "the runtime comes from Globals (python3.13)"
    assert template["Globals"]["Function"]["Runtime"] == "python3.13"
    assert "Condition" not in function, "ingest deploys on every stage, LocalStack included"


def test_ingest_environment_names_the_contract_variables():
    template = load_intrinsics()
    variables = template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DEFAULT_TOPIC"] == {"Ref": "DefaultTopic"}
    assert variables["TOPIC_ROUTES"] == {"Fn::If": ["HasTopicRoutes", {"Ref": "TopicRoutes"}, NO_VALUE]}
    assert variables["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == {"Ref": "KafkaBootstrapServers"}
    assert shared["KAFKA_SECURITY"] == {"Ref": "KafkaSecurity"}
    assert shared["KAFKA_SASL_SECRET_ARN"] == {"Ref": "KafkaSaslSecretArn"}


@pytest.mark.parametrize("routes", ["", '{"order.*": "orders"}'])
def test_topic_routes_are_set_only_when_given(routes: str):
    template = load_intrinsics()
    scenario = Scenario(template, TopicRoutes=routes)
    variables = scenario.resolve(template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"])
    if routes:
        assert scenario.evaluate(variables["TOPIC_ROUTES"]) == routes
    else:
        assert "TOPIC_ROUTES" not in variables, "unset keeps the routes shipped with the function"


def test_ingest_api_events_are_the_contract_routes_on_event_bus_api():
    template = load_intrinsics()
    events = _events(template["Resources"]["IngestFunction"])
    routes = set()
    for name, event in events.items():
        assert event["Type"] == "Api", name
        properties = event["Properties"]
        assert properties["RestApiId"] == {"Ref": "EventBusApi"}, name
        routes.add((properties["Method"].upper(), properties["Path"]))
    assert routes == API_ROUTES
    assert len(events) == len(API_ROUTES)


@pytest.mark.parametrize(
    ("subnets", "groups", "expected"),
    [
        ("", "", None),
        ("subnet-1,subnet-2", "sg-1", {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}),
    ],
)
def test_vpc_config_only_when_subnets_are_given(subnets: str, groups: str, expected: dict[str, Any] | None):
    template = load_intrinsics()
    scenario = Scenario(template, VpcSubnetIds=subnets, VpcSecurityGroupIds=groups)
    properties = scenario.resolve(template["Resources"]["IngestFunction"]["Properties"])
    vpc = properties.get("VpcConfig")
    if expected is None:
        assert vpc is None
    else:
        assert vpc == {"SubnetIds": {"Ref": "VpcSubnetIds"}, "SecurityGroupIds": {"Ref": "VpcSecurityGroupIds"}}
        assert {key: scenario.evaluate(value) for key, value in vpc.items()} == expected


# --------------------------------------------------------------------------------------------------- EventBusApi


def test_event_bus_api_is_a_rest_api_with_a_usage_plan_and_throttling():
    template = load_intrinsics()
    api = template["Resources"]["EventBusApi"]
    assert api["Type"] == "AWS::Serverless::Api", "REST (v1): LocalStack has no HTTP APIs"
    properties = api["Properties"]
    assert properties["StageName"] == {"Ref": "Stage"}
    assert properties["Description"]
    assert properties["TracingEnabled"] is False
    usage_plan = properties["Auth"]["UsagePlan"]
    assert usage_plan["CreateUsagePlan"] == "PER_API"
    assert usage_plan["Description"]
    assert usage_plan["Throttle"] == {
        "BurstLimit": {"Ref": "ThrottleBurstLimit"},
        "RateLimit": {"Ref": "ThrottleRateLimit"},
    }
    # usage plans throttle keyed requests only (and LocalStack enforces neither): the stage throttles everyone
    assert {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
    } in properties["MethodSettings"]


def test_api_auth_is_not_switched_through_sam_auth():
    """SAM does not evaluate an `!If` in its Auth: DefaultAuthorizer: !If is dropped (an open API in both modes) and
    ApiKeyRequired: !If counts as true (a key in both modes); the DefinitionBody carries the switch instead."""
    auth = load_intrinsics()["Resources"]["EventBusApi"]["Properties"]["Auth"]
    assert "DefaultAuthorizer" not in auth
    assert "ApiKeyRequired" not in auth


def test_api_definition_covers_exactly_the_protected_routes():
    template = load_intrinsics()
    properties = template["Resources"]["EventBusApi"]["Properties"]
    assert properties["MergeDefinitions"] is True, "SAM adds the Lambda integrations from the events"
    body = properties["DefinitionBody"]
    assert body["swagger"] == "2.0"
    assert properties["OpenApiVersion"] == "2.0", "no extra 'Stage' stage"
    declared = {(method, path) for method, path, _ in _api_methods(body)}
    # a declared route without an event would be a method without an integration: API Gateway rejects the import
    assert declared == API_ROUTES - OPEN_ROUTES
    definitions = body["securityDefinitions"]
    assert definitions["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert definitions["AWS_IAM"] == {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "x-amazon-apigateway-authtype": "awsSigv4",
    }


@pytest.mark.parametrize(("api_auth", "scheme"), [("API_KEY", "api_key"), ("IAM", "AWS_IAM")])
def test_each_protected_route_uses_the_scheme_api_auth_selects(api_auth: str, scheme: str):
    template = load_intrinsics()
    scenario = Scenario(template, ApiAuth=api_auth)
    body = scenario.resolve(template["Resources"]["EventBusApi"]["Properties"]["DefinitionBody"])
    for method, path, operation in _api_methods(body):
        assert operation["security"] == [{scheme: []}], (method, path)


def test_health_needs_neither_a_key_nor_a_signature():
    template = load_intrinsics()
    body = template["Resources"]["EventBusApi"]["Properties"]["DefinitionBody"]
    assert "/health" not in body["paths"]
    events = _events(template["Resources"]["IngestFunction"]).values()
    health = [event for event in events if event["Properties"]["Path"] == "/health"]
    assert len(health) == 1
    auth = health[0]["Properties"].get("Auth") or {}
    assert not auth.get("ApiKeyRequired")
    assert auth.get("Authorizer") in {None, "NONE"}


def test_api_auth_parameter_defaults_to_api_keys():
    template = load_intrinsics()
    parameter = template["Parameters"]["ApiAuth"]
    assert parameter["AllowedValues"] == ["API_KEY", "IAM"]
    assert parameter["Default"] == "API_KEY"
    for api_auth, api_key, iam in [("API_KEY", True, False), ("IAM", False, True)]:
        scenario = Scenario(template, ApiAuth=api_auth)
        assert (scenario.condition("UseApiKey"), scenario.condition("UseIamAuth")) == (api_key, iam)


# ---------------------------------------------------------------------------------------------- IdempotencyTable


def test_idempotency_table_has_powertools_default_schema():
    table = load_template()["Resources"]["IdempotencyTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


# ------------------------------------------------------------------------------------------------------------ IAM


def test_ingest_policies_are_inline_statements_only():
    """No SAM policy templates or managed policies: DynamoDBCrudPolicy grants Scan, Query, batch writes ..."""
    policies = load_intrinsics()["Resources"]["IngestFunction"]["Properties"]["Policies"]
    assert all(isinstance(policy, dict) and set(policy) <= {"Version", "Statement"} for policy in policies)


@pytest.mark.parametrize("security", ["plaintext", "tls", "scram", "plain", "mtls", "iam"])
def test_ingest_statements_are_least_privilege(security: str):
    template = load_intrinsics()
    tls_secrets = {"KafkaClientCertificateSecretArn": CLIENT_SECRET, "KafkaServerRootCaSecretArn": CA_SECRET}
    scenario = Scenario(
        template,
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        MskClusterArn=MSK_CLUSTER,
        **(tls_secrets if security == "mtls" else {}),
    )
    statements = _statements(template, scenario)
    actions = {action for statement in statements for action in _actions(statement)}
    assert all(statement["Effect"] == "Allow" for statement in statements)
    assert not any("*" in action for action in actions), actions

    dynamodb = [statement for statement in statements if any(a.startswith("dynamodb:") for a in _actions(statement))]
    assert len(dynamodb) == 1
    assert set(_actions(dynamodb[0])) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    assert dynamodb[0]["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}

    secrets = [statement for statement in statements if "secretsmanager:GetSecretValue" in _actions(statement)]
    kms = [statement for statement in statements if "kms:Decrypt" in _actions(statement)]
    kafka = [statement for statement in statements if any(a.startswith("kafka-cluster:") for a in _actions(statement))]
    if security == "mtls":  # the client certificate and the private CA, nothing else
        assert [statement["Resource"] for statement in secrets] == [
            [{"Ref": "KafkaClientCertificateSecretArn"}, {"Ref": "KafkaServerRootCaSecretArn"}]
        ]
        assert kms == []
    elif security in ("scram", "plain"):
        assert [statement["Resource"] for statement in secrets] == [{"Ref": "KafkaSaslSecretArn"}]
        # MSK's SCRAM secrets use a customer managed key: decrypt only through Secrets Manager, for this secret
        (key,) = kms
        assert key["Condition"]["StringEquals"]["kms:EncryptionContext:SecretARN"] == {"Ref": "KafkaSaslSecretArn"}
        assert "kms:ViaService" in key["Condition"]["StringEquals"]
    else:
        assert secrets == []
        assert kms == []
    if security == "iam":
        by_sid = {statement["Sid"]: statement for statement in kafka}
        cluster, topics = by_sid["MskCluster"], by_sid["MskTopics"]
        assert cluster["Resource"] == {"Ref": "MskClusterArn"}
        assert set(_actions(cluster)) == {
            "kafka-cluster:Connect",
            "kafka-cluster:DescribeCluster",
            "kafka-cluster:WriteDataIdempotently",  # the producer is idempotent
        }
        assert set(_actions(topics)) == {"kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"}
    else:
        assert kafka == []
    # nothing but the table, the secret (and its key, bound by conditions) and the cluster's topics
    for statement in statements:
        if statement["Resource"] == "*":
            assert _actions(statement) == ["kms:Decrypt"]
            assert statement["Condition"]


def test_msk_topic_resource_is_the_clusters_topics():
    """The topic ARN is derived from MskClusterArn: arn:...:cluster/<name>/<uuid> -> arn:...:topic/<name>/<uuid>/*."""
    template = load_intrinsics()
    scenario = Scenario(template, KafkaSecurity="iam", MskClusterArn=MSK_CLUSTER)
    (topics,) = [statement for statement in _statements(template, scenario) if statement["Sid"] == "MskTopics"]
    pattern, variables = topics["Resource"]["Fn::Sub"]
    values = {}
    for name, expression in variables.items():
        index, split = expression["Fn::Select"]
        separator, source = split["Fn::Split"]
        text = source["Fn::Sub"].replace("${MskClusterArn}", MSK_CLUSTER)
        values[name] = text.split(separator)[index]
    resource = pattern
    for name, value in values.items():
        resource = resource.replace(f"${{{name}}}", value)
    assert resource == "arn:aws:kafka:eu-west-1:123456789012:topic/bus/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2/*"


# ------------------------------------------------------------------------------------- local stack and parameters


def test_no_kafka_event_source_mapping_deploys_on_the_local_stage():
    """LocalStack (community) rolls a stack back on a Kafka event source mapping: every one sits under a condition
    that is false for Stage=local, and no function declares Kafka events it cannot make conditional."""
    template = load_intrinsics()
    local = Scenario(template, Stage="local")
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::EventSourceMapping":
            assert "Condition" in resource, name
            assert local.condition(resource["Condition"]) is False, name
        if resource["Type"] == "AWS::Serverless::Function":
            kafka_events = [e for e in _events(resource).values() if e["Type"] in {"MSK", "SelfManagedKafka"}]
            if kafka_events:
                assert "Condition" in resource, name
                assert local.condition(resource["Condition"]) is False, name


def test_parameters_and_their_conditions():
    template = load_intrinsics()
    parameters = template["Parameters"]
    assert parameters["KafkaBootstrapServers"]["Default"] == "127.0.0.1:9092"
    assert parameters["KafkaSecurity"]["AllowedValues"] == ["plaintext", "tls", "scram", "plain", "mtls", "iam"]
    assert parameters["KafkaSecurity"]["Default"] == "plaintext"
    assert parameters["KafkaSaslSecretArn"]["Default"] == ""
    assert parameters["MskClusterArn"]["Default"] == ""
    assert parameters["DefaultTopic"]["Default"] == "events"
    assert parameters["TopicRoutes"]["Default"] == ""
    assert (parameters["ThrottleRateLimit"]["Type"], parameters["ThrottleRateLimit"]["Default"]) == ("Number", 100)
    assert (parameters["ThrottleBurstLimit"]["Type"], parameters["ThrottleBurstLimit"]["Default"]) == ("Number", 200)
    for name in ("VpcSubnetIds", "VpcSecurityGroupIds"):
        assert (parameters[name]["Type"], parameters[name]["Default"]) == ("CommaDelimitedList", "")

    for security in parameters["KafkaSecurity"]["AllowedValues"]:
        scenario = Scenario(template, KafkaSecurity=security)
        assert scenario.condition("UseScram") is (security == "scram")
        assert scenario.condition("UseMskIam") is (security == "iam")
    for stage in parameters["Stage"]["AllowedValues"]:
        assert Scenario(template, Stage=stage).condition("IsLocal") is (stage == "local")
    assert Scenario(template).condition("HasVpc") is False
    assert Scenario(template, VpcSubnetIds="subnet-1").condition("HasVpc") is True
    assert Scenario(template).condition("HasTopicRoutes") is False
    assert Scenario(template, TopicRoutes='{"a": "b"}').condition("HasTopicRoutes") is True


def test_outputs():
    template = load_intrinsics()
    outputs = template["Outputs"]
    assert outputs["EventBusApiUrl"]["Value"] == {
        "Fn::Sub": "https://${EventBusApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"
    }
    assert outputs["EventBusApiId"]["Value"] == {"Ref": "EventBusApi"}
    assert outputs["IngestFunctionName"]["Value"] == {"Ref": "IngestFunction"}
    assert outputs["IdempotencyTableName"]["Value"] == {"Ref": "IdempotencyTable"}
    # SAM names the PER_API usage plan's key <api>ApiKey; it only matters when callers use keys
    assert outputs["EventBusApiKeyId"] == {
        "Condition": "UseApiKey",
        "Description": outputs["EventBusApiKeyId"]["Description"],
        "Value": {"Ref": "EventBusApiApiKey"},
    }
    assert outputs["EventBusApiLocalUrl"]["Condition"] == "IsLocal"
    assert "ObservabilityLayerArn" in outputs


def test_the_api_passes_any_body_through_as_bytes():
    """Binary-mode CloudEvents may carry any body; without binary media types API Gateway would hand it over
    as UTF-8 text and mangle it."""
    api = load_template()["Resources"]["EventBusApi"]["Properties"]
    assert api["BinaryMediaTypes"] == ["*~1*"]


@pytest.mark.parametrize("family", ["DEFAULT_4XX", "DEFAULT_5XX"])
def test_api_gateways_own_answers_are_problem_documents(family: str):
    """A wrong key (403), throttling (429) or a failed integration (5xx) never reaches the function: API Gateway
    answers itself, and those answers must be problem+json like the function's."""
    response = load_template()["Resources"]["EventBusApi"]["Properties"]["GatewayResponses"][family]
    assert response["ResponseParameters"]["Headers"] == {
        "Content-Type": "'application/problem+json'",
        "X-Content-Type-Options": "'nosniff'",
    }
    body = response["ResponseTemplates"]["application/json"]
    rendered = (
        body.replace("$context.error.messageString", '"Forbidden"')
        .replace("$context.error.responseType", "INVALID_API_KEY")
        .replace("$context.path", "/local/events")
        .replace("$context.requestId", "r-1")
    )
    problem = json.loads(rendered)  # valid JSON once API Gateway fills the variables in
    assert problem["type"] == "urn:eventbus:problem:gateway-INVALID_API_KEY"
    assert problem["title"] == "Forbidden"
    assert problem["detail"]
