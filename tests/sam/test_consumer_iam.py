"""The consumer's IAM in the template: inline statements only, least privilege for each trigger source, security
mode and network, MSK IAM grants scoped to this cluster's topics and groups, subscription targets by ARN."""

from __future__ import annotations

import pytest
from sam.test_consumer_template import (
    DEFAULT_TOPICS,
    _actions,
    _by_sid,
    _scenario,
    _statements,
    assert_allow_only_scoped,
)
from sam.test_ingest_template import MSK_CLUSTER, SCRAM_SECRET, load_intrinsics
from sam.test_template import TEMPLATE, load_template

pytestmark = pytest.mark.sam


def test_consumer_policies_are_inline_statements_only():
    policies = load_intrinsics()["Resources"]["KafkaConsumerFunction"]["Properties"]["Policies"]
    assert all(isinstance(policy, dict) and set(policy) <= {"Version", "Statement"} for policy in policies)


@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
@pytest.mark.parametrize("security", ["plaintext", "tls", "scram", "iam"])
@pytest.mark.parametrize("subnets", ["", "subnet-1"])
def test_consumer_statements_are_least_privilege(source: str, security: str, subnets: str):
    template = load_intrinsics()
    scenario = _scenario(
        template,
        KafkaTriggerSource=source,
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        MskClusterArn=MSK_CLUSTER,
        VpcSubnetIds=subnets,
        VpcSecurityGroupIds="sg-1" if subnets else "",
    )
    statements = _statements(template, scenario)
    by_sid = _by_sid(statements)
    assert_allow_only_scoped(statements)

    assert by_sid["DeadLetters"]["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert _actions(by_sid["DeadLetters"]) == {"sqs:SendMessage"}
    assert by_sid["IdempotencyRecords"]["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
    assert _actions(by_sid["IdempotencyRecords"]) == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",  # the lanes of a batch's ordered subscriptions, in one call
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }

    msk_trigger = source == "msk"
    assert by_sid["RetryQueue"]["Resource"] == {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    assert _actions(by_sid["RetryQueue"]) == {"sqs:SendMessage"}
    expected = {"DeadLetters", "IdempotencyRecords", "RetryQueue"}
    if security == "scram":
        expected |= {"KafkaSaslSecret", "KafkaSaslSecretKey"}
    if msk_trigger:
        expected.add("MskTriggerCluster")
    if msk_trigger or (source == "self-managed" and subnets):
        expected.add("KafkaTriggerNetworkInterfaces")
    if msk_trigger and security == "iam":
        expected |= {"MskTriggerConnect", "MskTriggerTopics", "MskTriggerGroups"}
    if security == "iam":
        expected |= {"MskTargetCluster", "MskTargetTopics"}  # Kafka targets produce with the idempotent producer
    assert set(by_sid) == expected

    if security == "scram":
        assert by_sid["KafkaSaslSecret"]["Resource"] == {"Ref": "KafkaSaslSecretArn"}
        assert _actions(by_sid["KafkaSaslSecret"]) == {"secretsmanager:GetSecretValue"}
    if msk_trigger:
        assert by_sid["MskTriggerCluster"]["Resource"] == {"Ref": "MskClusterArn"}
        assert _actions(by_sid["MskTriggerCluster"]) == {
            "kafka:DescribeCluster",
            "kafka:DescribeClusterV2",
            "kafka:GetBootstrapBrokers",
        }
    if msk_trigger and security == "iam":
        assert _actions(by_sid["MskTriggerConnect"]) == {
            "kafka-cluster:Connect",
            "kafka-cluster:DescribeClusterDynamicConfiguration",
        }
        assert by_sid["MskTriggerConnect"]["Resource"] == {"Ref": "MskClusterArn"}
        assert _actions(by_sid["MskTriggerTopics"]) == {"kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"}
        assert _actions(by_sid["MskTriggerGroups"]) == {"kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"}
    if security == "iam":
        assert _actions(by_sid["MskTargetCluster"]) == {
            "kafka-cluster:Connect",
            "kafka-cluster:DescribeCluster",
            "kafka-cluster:WriteDataIdempotently",
        }
        assert _actions(by_sid["MskTargetTopics"]) == {"kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"}


def test_msk_iam_grants_are_this_clusters_topics_and_the_consumers_own_groups():
    """ARNs derive from MskClusterArn: arn:...:cluster/<name>/<uuid> -> arn:...:topic|group/<name>/<uuid>/..."""
    template = load_intrinsics()
    scenario = _scenario(template, KafkaTriggerSource="msk", KafkaSecurity="iam", MskClusterArn=MSK_CLUSTER)
    by_sid = _by_sid(_statements(template, scenario))
    cluster_path = "bus/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2"
    topics = f"arn:aws:kafka:eu-west-1:123456789012:topic/{cluster_path}/*"
    assert scenario.evaluate(by_sid["MskTriggerTopics"]["Resource"]) == topics
    assert scenario.evaluate(by_sid["MskTargetTopics"]["Resource"]) == topics
    groups = f"arn:aws:kafka:eu-west-1:123456789012:group/{cluster_path}/event-bus-consumer-*"
    assert scenario.evaluate(by_sid["MskTriggerGroups"]["Resource"]) == groups


@pytest.mark.parametrize(
    ("queues", "topics"),
    [
        ("", ""),
        ("arn:aws:sqs:eu-west-1:123456789012:fulfilment,arn:aws:sqs:eu-west-1:123456789012:billing", ""),
        ("", "arn:aws:sns:eu-west-1:123456789012:notifications"),
    ],
)
def test_subscription_targets_are_granted_by_arn(queues: str, topics: str):
    template = load_intrinsics()
    scenario = _scenario(template, DeliveryQueueArns=queues, DeliveryTopicArns=topics)
    by_sid = _by_sid(_statements(template, scenario))
    if queues:
        assert _actions(by_sid["DeliveryQueues"]) == {"sqs:SendMessage"}
        assert scenario.evaluate(by_sid["DeliveryQueues"]["Resource"]) == queues.split(",")
    else:
        assert "DeliveryQueues" not in by_sid
    if topics:
        assert _actions(by_sid["DeliveryTopics"]) == {"sns:Publish"}
        assert scenario.evaluate(by_sid["DeliveryTopics"]["Resource"]) == topics.split(",")
    else:
        assert "DeliveryTopics" not in by_sid


# --------------------------------------------------------------------------------------------------- parameters


def test_consumer_parameters():
    parameters = load_intrinsics()["Parameters"]
    assert parameters["KafkaTriggerSource"]["AllowedValues"] == ["none", "msk", "self-managed"]
    assert parameters["KafkaTriggerSource"]["Default"] == "none"
    assert parameters["KafkaTopics"]["Type"] == "CommaDelimitedList"
    assert parameters["KafkaTopics"]["Default"] == ",".join(DEFAULT_TOPICS)
    assert parameters["KafkaConsumerGroupId"]["Default"] == "event-bus-consumer"
    for name, default, low, high in [
        ("KafkaBatchSize", 100, 1, 10000),
        ("KafkaBatchWindowSeconds", 1, 0, 300),
        ("KafkaMinPollers", 1, 1, 200),
        ("KafkaMaxPollers", 2, 1, 2000),
    ]:
        spec = parameters[name]
        assert (spec["Type"], spec["Default"], spec["MinValue"], spec["MaxValue"]) == ("Number", default, low, high)
    assert parameters["Subscriptions"]["Default"] == ""
    for name in ("DeliveryQueueArns", "DeliveryTopicArns"):
        assert (parameters[name]["Type"], parameters[name]["Default"]) == ("CommaDelimitedList", "")


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
def test_trigger_conditions(stage: str, source: str):
    template = load_intrinsics()
    scenario = _scenario(template, Stage=stage, KafkaTriggerSource=source, MskClusterArn=MSK_CLUSTER)
    deployed = stage != "local"
    assert scenario.condition("UseMskTrigger") is (deployed and source == "msk")
    assert scenario.condition("UseSelfManagedTrigger") is (deployed and source == "self-managed")
    # msk without a cluster creates no mapping (and fails the deployment through KafkaTriggerIsMisconfigured)
    assert _scenario(template, Stage=stage, KafkaTriggerSource=source).condition("UseMskTrigger") is False


def test_delivery_and_subscription_conditions():
    template = load_intrinsics()
    default = _scenario(template)
    assert not default.condition("HasSubscriptions")
    assert not default.condition("HasDeliveryQueues")
    assert not default.condition("HasDeliveryTopics")
    assert _scenario(template, Subscriptions="[]").condition("HasSubscriptions")
    assert _scenario(template, DeliveryQueueArns="arn:aws:sqs:eu-west-1:1:q").condition("HasDeliveryQueues")
    assert _scenario(template, DeliveryTopicArns="arn:aws:sns:eu-west-1:1:t").condition("HasDeliveryTopics")


def test_optional_configuration_sources_get_exactly_their_permissions():
    template = load_template()
    function = template["Resources"]["KafkaConsumerFunction"]["Properties"]
    assert "SUBSCRIPTIONS_PARAMETER" in function["Environment"]["Variables"]
    text = TEMPLATE.read_text()
    assert "Action: ssm:GetParameter" in text
    assert ":parameter${SubscriptionsParameterName}" in text
    assert "Resource: !Ref WebhookSecretArns" in text
