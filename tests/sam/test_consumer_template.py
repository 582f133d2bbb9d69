"""The template's consumer slice: KafkaConsumerFunction, DeadLetterQueue, the Kafka event source mappings, their
parameters and outputs.

Contract checks on the template text (no SAM CLI run), read with the tags kept in their long form and evaluated
for given parameter values the way CloudFormation does (helpers from the ingest slice's tests, extended here with
the Fn::Select / Fn::Split / Fn::Sub the mapping slots use).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sam.test_ingest_template import MSK_CLUSTER, NO_VALUE, SCRAM_SECRET, Scenario, load_intrinsics

pytestmark = pytest.mark.sam

MAPPING = "AWS::Lambda::EventSourceMapping"
TOPIC_SLOTS = 6
MSK_MAPPINGS = ["KafkaConsumerMskMapping", *(f"KafkaConsumerMskMapping{slot}" for slot in range(2, TOPIC_SLOTS + 1))]
SELF_MANAGED_MAPPINGS = [
    "KafkaConsumerSelfManagedMapping",
    *(f"KafkaConsumerSelfManagedMapping{slot}" for slot in range(2, TOPIC_SLOTS + 1)),
]
DEFAULT_TOPICS = ["orders", "payments", "customers", "events"]
BROKERS = "b-1.bus.example.com:9096,b-2.bus.example.com:9096"
PSEUDO_PARAMETERS = {"AWS::Region": "eu-west-1", "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws"}
# The only Resource "*" grants: the network interfaces a Kafka mapping places in the brokers' VPC (the Describe*
# calls have no resource-level permissions; AWS documents the statement with "*"), and kms:Decrypt bound by
# conditions to Secrets Manager decrypting the SCRAM secret.
NETWORK_INTERFACE_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
}


class ConsumerScenario(Scenario):
    """A Scenario that also evaluates Fn::Select, Fn::Split and Fn::Sub (parameters and pseudo parameters)."""

    def evaluate(self, expression: Any) -> Any:
        if isinstance(expression, list):
            return [self.evaluate(item) for item in expression]
        if not isinstance(expression, dict):
            return expression
        if len(expression) != 1 or not _is_intrinsic(next(iter(expression))):
            return {key: self.evaluate(value) for key, value in expression.items()}
        ((function, argument),) = expression.items()
        match function:
            case "Fn::Select":
                index, items = argument
                values = self.evaluate(items)
                assert index < len(values), f"Fn::Select {index} out of range of {values}"
                return values[index]
            case "Fn::Split":
                separator, source = argument
                return self.evaluate(source).split(separator)
            case "Fn::Sub":
                return self._substitute(argument)
            case "Ref" if argument in PSEUDO_PARAMETERS:
                return PSEUDO_PARAMETERS[argument]
        return super().evaluate(expression)

    def _substitute(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.evaluate(value) for name, value in variables.items()}

        def value_of(match: re.Match[str]) -> str:
            name = match.group(1)
            value = values[name] if name in values else self.evaluate({"Ref": name})
            assert isinstance(value, str), (name, value)
            return value

        return re.sub(r"\$\{([^}]+)\}", value_of, text)

    def active(self, resource: dict[str, Any]) -> bool:
        return "Condition" not in resource or self.condition(resource["Condition"])


def _is_intrinsic(key: str) -> bool:
    return key in {"Ref", "Condition"} or key.startswith("Fn::")


def _scenario(template: dict[str, Any], **overrides: str) -> ConsumerScenario:
    return ConsumerScenario(template, **overrides)


def _mappings(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The consumer's Kafka mappings (CdcFunction has its own, checked in test_cdc_template.py)."""
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == MAPPING
        and resource["Properties"]["FunctionName"] == {"Ref": "KafkaConsumerFunction.Alias"}
    }


def _active_mappings(template: dict[str, Any], scenario: ConsumerScenario) -> dict[str, dict[str, Any]]:
    return {
        name: scenario.resolve(resource["Properties"])
        for name, resource in _mappings(template).items()
        if scenario.active(resource)
    }


def _statements(template: dict[str, Any], scenario: Scenario) -> list[dict[str, Any]]:
    policies = scenario.resolve(template["Resources"]["KafkaConsumerFunction"]["Properties"]["Policies"])
    return [statement for policy in policies for statement in policy["Statement"]]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def assert_allow_only_scoped(statements: list[dict[str, Any]]) -> None:
    """Allow statements only, no wildcard action, and a `*` resource only where AWS takes nothing else: the VPC's
    network interfaces, and KMS decrypt bound to the Kafka secret by its encryption context."""
    assert all(statement["Effect"] == "Allow" for statement in statements)
    actions = {action for statement in statements for action in _actions(statement)}
    assert not any("*" in action for action in actions), actions
    for statement in statements:
        if statement["Resource"] == "*":
            if _actions(statement) == {"kms:Decrypt"}:
                assert statement["Condition"]["StringEquals"]["kms:EncryptionContext:SecretARN"] == {
                    "Ref": "KafkaSaslSecretArn"
                }
            else:
                assert _actions(statement) == NETWORK_INTERFACE_ACTIONS, statement["Sid"]


def _by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_sid = {statement["Sid"]: statement for statement in statements}
    assert len(by_sid) == len(statements), "every statement has its own Sid"
    return by_sid


# ------------------------------------------------------------------------------------------ KafkaConsumerFunction


def test_consumer_function_contract():
    template = load_intrinsics()
    function = template["Resources"]["KafkaConsumerFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    properties = function["Properties"]
    assert properties["CodeUri"] == "functions/consumer/"
    assert properties["Handler"] == "app.handler"
    assert properties["Timeout"] == 60
    assert properties["MemorySize"] == 512
    assert properties["Description"]
    assert "Runtime" not in properties, "the runtime comes from Globals (python3.13)"
    assert template["Globals"]["Function"]["Runtime"] == "python3.13"
    assert "Condition" not in function, "the function deploys on every stage; only its Kafka mappings are conditional"
    # SAM ignores a Condition on an event: the Kafka triggers are raw, conditional event source mappings; the one
    # SAM event is the retry queue's, on every stage
    (retries,) = properties["Events"].values()
    assert retries["Type"] == "SQS"
    assert retries["Properties"]["Queue"] == {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    assert retries["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_consumer_environment_wiring():
    template = load_intrinsics()
    variables = template["Resources"]["KafkaConsumerFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DLQ_URL"] == {"Ref": "DeadLetterQueue"}, "Ref of an SQS queue is its URL"
    assert variables["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert variables["SUBSCRIPTIONS"] == {"Fn::If": ["HasSubscriptions", {"Ref": "Subscriptions"}, NO_VALUE]}
    assert variables["RETRY_MAX_DELAY_SECONDS"] == {"Ref": "RetryMaxDelaySeconds"}
    assert variables["WEBHOOK_TIMEOUT_MS"] == "2000"
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == {"Ref": "KafkaBootstrapServers"}, "Kafka targets use the bus's brokers"


@pytest.mark.parametrize("subscriptions", ["", '[{"name": "a", "match": {"type": "x"}, "target": {"type": "sns"}}]'])
def test_subscriptions_are_set_only_when_given(subscriptions: str):
    template = load_intrinsics()
    scenario = _scenario(template, Subscriptions=subscriptions)
    variables = scenario.resolve(
        template["Resources"]["KafkaConsumerFunction"]["Properties"]["Environment"]["Variables"]
    )
    if subscriptions:
        assert scenario.evaluate(variables["SUBSCRIPTIONS"]) == subscriptions
    else:
        assert "SUBSCRIPTIONS" not in variables, "unset keeps the subscriptions shipped with the function"


@pytest.mark.parametrize(("subnets", "groups"), [("", ""), ("subnet-1,subnet-2", "sg-1")])
def test_consumer_vpc_config_only_when_subnets_are_given(subnets: str, groups: str):
    template = load_intrinsics()
    scenario = _scenario(template, VpcSubnetIds=subnets, VpcSecurityGroupIds=groups)
    vpc = scenario.resolve(template["Resources"]["KafkaConsumerFunction"]["Properties"]).get("VpcConfig")
    if subnets:
        assert vpc == {"SubnetIds": {"Ref": "VpcSubnetIds"}, "SecurityGroupIds": {"Ref": "VpcSecurityGroupIds"}}
    else:
        assert vpc is None


# ------------------------------------------------------------------------------------------------ DeadLetterQueue


def test_dead_letter_queue():
    queue = load_intrinsics()["Resources"]["DeadLetterQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert "Condition" not in queue
    assert queue["Properties"]["MessageRetentionPeriod"] == 1209600, "14 days, SQS's longest retention"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_outputs():
    outputs = load_intrinsics()["Outputs"]
    assert outputs["KafkaConsumerFunctionName"]["Value"] == {"Ref": "KafkaConsumerFunction"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "DeadLetterQueue"}
    assert outputs["DeadLetterQueueArn"]["Value"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    for name in ("KafkaConsumerFunctionName", "DeadLetterQueueUrl", "DeadLetterQueueArn"):
        assert "Condition" not in outputs[name], name
        assert outputs[name]["Description"], name


# ------------------------------------------------------------------------------------- Kafka event source mappings


def test_one_mapping_per_topic_slot_and_trigger_source():
    """A Kafka event source mapping takes exactly one topic: one mapping per slot of KafkaTopics, per source."""
    mappings = _mappings(load_intrinsics())
    assert sorted(mappings) == sorted(MSK_MAPPINGS + SELF_MANAGED_MAPPINGS)
    assert mappings["KafkaConsumerMskMapping"]["Condition"] == "UseMskTrigger"
    assert mappings["KafkaConsumerSelfManagedMapping"]["Condition"] == "UseSelfManagedTrigger"


@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
@pytest.mark.parametrize("topics", ["orders", "orders,payments,customers,events", "a,b,c,d,e,f,g"])
def test_no_mapping_and_no_guard_on_the_local_stage(source: str, topics: str):
    """LocalStack (community) rolls a stack back on a Kafka mapping: each has a condition false for Stage=local."""
    template = load_intrinsics()
    local = _scenario(
        template,
        Stage="local",
        KafkaTriggerSource=source,
        KafkaTopics=topics,
        MskClusterArn=MSK_CLUSTER,
        KafkaSecurity="scram",
        KafkaSaslSecretArn=SCRAM_SECRET,
    )
    for name, resource in template["Resources"].items():
        # A WaitCondition is what can fail a stack; the handles it waits on never do
        # (ApiGatewayAccountReady is a handle present on every stage).
        if resource["Type"] in (MAPPING, "AWS::CloudFormation::WaitCondition"):
            assert "Condition" in resource, name
            assert local.condition(resource["Condition"]) is False, name


@pytest.mark.parametrize(
    ("stage", "source", "topics", "expected"),
    [
        ("dev", "none", "orders", {}),
        ("dev", "msk", "orders", {"KafkaConsumerMskMapping": "orders"}),
        ("prod", "self-managed", "orders", {"KafkaConsumerSelfManagedMapping": "orders"}),
        ("dev", "msk", ",".join(DEFAULT_TOPICS), dict(zip(MSK_MAPPINGS, DEFAULT_TOPICS, strict=False))),
        ("dev", "self-managed", "a,b,c,d,e,f", dict(zip(SELF_MANAGED_MAPPINGS, "abcdef", strict=True))),
    ],
)
def test_the_trigger_source_creates_one_mapping_per_topic(
    stage: str, source: str, topics: str, expected: dict[str, str]
):
    template = load_intrinsics()
    scenario = _scenario(
        template, Stage=stage, KafkaTriggerSource=source, KafkaTopics=topics, MskClusterArn=MSK_CLUSTER
    )
    active = _active_mappings(template, scenario)
    assert {name: scenario.evaluate(properties["Topics"]) for name, properties in active.items()} == {
        name: [topic] for name, topic in expected.items()
    }
    # each mapping joins its own consumer group (Lambda wants group ids unique across Kafka mappings)
    for name, properties in active.items():
        config = (
            properties.get("AmazonManagedKafkaEventSourceConfig") or properties["SelfManagedKafkaEventSourceConfig"]
        )
        assert scenario.evaluate(config["ConsumerGroupId"]) == f"event-bus-consumer-{expected[name]}"
    assert not scenario.condition("KafkaTriggerIsMisconfigured")


@pytest.mark.parametrize("name", MSK_MAPPINGS + SELF_MANAGED_MAPPINGS)
def test_every_mapping_fails_records_bounded_and_to_the_dlq(name: str):
    template = load_intrinsics()
    properties = _mappings(template)[name]["Properties"]
    assert properties["FunctionName"] == {"Ref": "KafkaConsumerFunction.Alias"}  # the published version
    assert properties["StartingPosition"] == {"Ref": "KafkaStartingPosition"}  # TRIM_HORIZON unless changed
    assert properties["BatchSize"] == {"Ref": "KafkaBatchSize"}
    assert properties["MaximumBatchingWindowInSeconds"] == {"Ref": "KafkaBatchWindowSeconds"}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}}
    # provisioned mode: what lets Kafka mappings use the settings above
    assert properties["ProvisionedPollerConfig"] == {
        "MinimumPollers": {"Ref": "KafkaMinPollers"},
        "MaximumPollers": {"Ref": "KafkaMaxPollers"},
    }
    # bounded retries and record age: never -1 (infinite, Kafka's default), whatever the parameters say
    parameters = template["Parameters"]
    assert properties["MaximumRetryAttempts"] == {"Ref": "KafkaMaxRetryAttempts"}
    retries = parameters["KafkaMaxRetryAttempts"]
    assert (retries["Type"], retries["Default"], retries["MinValue"], retries["MaxValue"]) == ("Number", 3, 0, 10000)
    assert properties["MaximumRecordAgeInSeconds"] == {"Ref": "KafkaMaxRecordAgeSeconds"}
    age = parameters["KafkaMaxRecordAgeSeconds"]
    assert (age["Type"], age["Default"], age["MinValue"], age["MaxValue"]) == ("Number", 3600, 60, 604800)


@pytest.mark.parametrize("security", ["plaintext", "tls", "scram", "iam"])
def test_msk_mappings_read_the_cluster(security: str):
    template = load_intrinsics()
    scenario = _scenario(
        template,
        KafkaTriggerSource="msk",
        KafkaSecurity=security,
        MskClusterArn=MSK_CLUSTER,
        KafkaSaslSecretArn=SCRAM_SECRET,
    )
    active = _active_mappings(template, scenario)
    assert sorted(active) == sorted(MSK_MAPPINGS[: len(DEFAULT_TOPICS)])
    for name, properties in active.items():
        assert scenario.evaluate(properties["EventSourceArn"]) == MSK_CLUSTER, name
        assert "SelfManagedEventSource" not in properties, name
        access = scenario.evaluate(properties.get("SourceAccessConfigurations", []))
        # IAM is what Lambda uses on an IAM-enabled cluster when no secret is given
        expected = [{"Type": "SASL_SCRAM_512_AUTH", "URI": SCRAM_SECRET}] if security == "scram" else []
        assert access == expected, name


@pytest.mark.parametrize(
    ("security", "subnets", "groups"),
    [
        ("plaintext", "", ""),
        ("tls", "subnet-1", "sg-1"),
        ("scram", "", ""),
        ("scram", "subnet-1,subnet-2,subnet-3", "sg-1,sg-2"),
    ],
)
def test_self_managed_mappings_reach_the_brokers(security: str, subnets: str, groups: str):
    template = load_intrinsics()
    scenario = _scenario(
        template,
        KafkaTriggerSource="self-managed",
        KafkaBootstrapServers=BROKERS,
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        VpcSubnetIds=subnets,
        VpcSecurityGroupIds=groups,
    )
    expected = [{"Type": "SASL_SCRAM_512_AUTH", "URI": SCRAM_SECRET}] if security == "scram" else []
    expected += [{"Type": "VPC_SUBNET", "URI": f"subnet:{subnet}"} for subnet in subnets.split(",") if subnet]
    expected += [
        {"Type": "VPC_SECURITY_GROUP", "URI": f"security_group:{group}"} for group in groups.split(",") if group
    ]
    active = _active_mappings(template, scenario)
    assert sorted(active) == sorted(SELF_MANAGED_MAPPINGS[: len(DEFAULT_TOPICS)])
    for name, properties in active.items():
        assert "EventSourceArn" not in properties, name
        endpoints = properties["SelfManagedEventSource"]["Endpoints"]["KafkaBootstrapServers"]
        assert scenario.evaluate(endpoints) == BROKERS.split(","), name
        assert scenario.evaluate(properties.get("SourceAccessConfigurations", [])) == expected, name
    assert not scenario.condition("KafkaTriggerIsMisconfigured")


CLIENT_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bus-client-certificate-AbCdEf"
CA_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bus-private-ca-AbCdEf"


@pytest.mark.parametrize(
    ("source", "security", "ca", "expected"),
    [
        ("self-managed", "plain", "", [{"Type": "BASIC_AUTH", "URI": SCRAM_SECRET}]),
        (
            "self-managed",
            "mtls",
            CA_SECRET,
            [
                {"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": CLIENT_SECRET},
                {"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": CA_SECRET},
            ],
        ),
        ("self-managed", "tls", CA_SECRET, [{"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": CA_SECRET}]),
        ("self-managed", "scram", CA_SECRET, [
            {"Type": "SASL_SCRAM_512_AUTH", "URI": SCRAM_SECRET},
            {"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": CA_SECRET},
        ]),
        ("msk", "mtls", "", [{"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": CLIENT_SECRET}]),
    ],
)  # fmt: skip
def test_the_mappings_authenticate_as_the_functions_do(source: str, security: str, ca: str, expected: list):
    """SASL/PLAIN (BASIC_AUTH, e.g. Confluent Cloud), mTLS (CLIENT_CERTIFICATE_TLS_AUTH) and a private CA
    (SERVER_ROOT_CA_CERTIFICATE) read the same secrets the functions' own clients read."""
    template = load_intrinsics()
    scenario = _scenario(
        template,
        KafkaTriggerSource=source,
        KafkaBootstrapServers=BROKERS,
        MskClusterArn=MSK_CLUSTER,
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        KafkaClientCertificateSecretArn=CLIENT_SECRET,
        KafkaServerRootCaSecretArn=ca,
    )
    active = _active_mappings(template, scenario)
    assert active
    for name, properties in active.items():
        assert scenario.evaluate(properties.get("SourceAccessConfigurations", [])) == expected, name
    assert not scenario.condition("KafkaTriggerIsMisconfigured")


@pytest.mark.parametrize(
    ("overrides", "misconfigured"),
    [
        ({"KafkaTriggerSource": "msk", "MskClusterArn": MSK_CLUSTER, "KafkaTopics": "a,b,c,d,e,f"}, False),
        ({"KafkaTriggerSource": "msk", "MskClusterArn": MSK_CLUSTER, "KafkaTopics": "a,b,c,d,e,f,g"}, True),
        ({"KafkaTriggerSource": "msk"}, True),  # no cluster
        ({"KafkaTriggerSource": "self-managed", "KafkaSecurity": "scram"}, True),  # no secret
        ({"KafkaTriggerSource": "self-managed", "KafkaSecurity": "iam"}, True),  # MSK IAM is for MSK mappings
        (
            {"KafkaTriggerSource": "self-managed", "VpcSubnetIds": "s-1,s-2,s-3", "VpcSecurityGroupIds": "g-1,g-2"},
            False,
        ),
        ({"KafkaTriggerSource": "self-managed", "VpcSubnetIds": "s-1,s-2,s-3,s-4", "VpcSecurityGroupIds": "g-1"}, True),
        ({"KafkaTriggerSource": "self-managed", "VpcSubnetIds": "s-1", "VpcSecurityGroupIds": "g-1,g-2,g-3"}, True),
        ({"KafkaTriggerSource": "msk", "VpcSubnetIds": "s-1,s-2,s-3,s-4", "MskClusterArn": MSK_CLUSTER}, False),
        ({"KafkaTriggerSource": "none", "KafkaTopics": "a,b,c,d,e,f,g", "KafkaSecurity": "scram"}, False),
    ],
)
def test_a_trigger_that_cannot_work_fails_the_deployment(overrides: dict[str, str], misconfigured: bool):
    """What the slots cannot hold (and settings a mapping cannot use) fails loudly instead of being dropped."""
    template = load_intrinsics()
    resources = template["Resources"]
    assert resources["KafkaTriggerMisconfigured"]["Type"] == "AWS::CloudFormation::WaitCondition"
    assert resources["KafkaTriggerMisconfigured"]["Properties"]["Handle"] == {"Ref": "KafkaTriggerMisconfiguredHandle"}
    assert resources["KafkaTriggerMisconfiguredHandle"]["Type"] == "AWS::CloudFormation::WaitConditionHandle"
    for name in ("KafkaTriggerMisconfigured", "KafkaTriggerMisconfiguredHandle"):
        assert resources[name]["Condition"] == "KafkaTriggerIsMisconfigured"
    scenario = _scenario(template, Stage="dev", **overrides)
    assert scenario.condition("KafkaTriggerIsMisconfigured") is misconfigured
