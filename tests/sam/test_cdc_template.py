"""The template's CDC slice: CdcFunction, its example sources (OrdersTable's stream, CdcStream), its conditional Kafka
(Debezium) event source mappings, MaintenanceFunction on a schedule, their parameters and outputs.

Contract checks on the template text (no SAM CLI run), read with the tags kept in their long form and evaluated for
given parameter values the way CloudFormation does (the ingest and consumer slices' helpers).
"""

from __future__ import annotations

from typing import Any

import pytest
from sam.test_consumer_template import (
    BROKERS,
    MAPPING,
    ConsumerScenario,
    _actions,
    _by_sid,
    assert_allow_only_scoped,
)
from sam.test_ingest_template import MSK_CLUSTER, NO_VALUE, SCRAM_SECRET, load_intrinsics

pytestmark = pytest.mark.sam

CDC_TOPIC_SLOTS = 3
CDC_MSK_MAPPINGS = [f"CdcMskMapping{slot}" for slot in range(1, CDC_TOPIC_SLOTS + 1)]
CDC_SELF_MANAGED_MAPPINGS = [f"CdcSelfManagedMapping{slot}" for slot in range(1, CDC_TOPIC_SLOTS + 1)]
CDC_MAPPINGS = CDC_MSK_MAPPINGS + CDC_SELF_MANAGED_MAPPINGS
DEBEZIUM_TOPICS = ["dbserver1.inventory.customers", "dbserver1.inventory.orders", "pg.public.payments"]
DLQ_ARN = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
STREAM_EVENTS = {
    "OrdersTableStream": ("DynamoDB", {"Fn::GetAtt": ["OrdersTable", "StreamArn"]}),
    "CdcStreamRecords": ("Kinesis", {"Fn::GetAtt": ["CdcStream", "Arn"]}),
}
CONNECTORS = (
    "arn:aws:kafkaconnect:eu-west-1:123456789012:connector/pg-orders/0f1e2d3c-1111-2222-3333-444455556666-2,"
    "arn:aws:kafkaconnect:eu-west-1:123456789012:connector/mysql-inventory/0f1e2d3c-7777-8888-9999-000011112222-3"
)
MSK_CLUSTER_PATH = "bus/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2"


def _resources() -> dict[str, Any]:
    return load_intrinsics()["Resources"]


def _cdc_mappings(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == MAPPING and resource["Properties"]["FunctionName"] == {"Ref": "CdcFunction.Alias"}
    }


def _active_cdc_mappings(template: dict[str, Any], scenario: ConsumerScenario) -> dict[str, dict[str, Any]]:
    return {
        name: scenario.resolve(resource["Properties"])
        for name, resource in _cdc_mappings(template).items()
        if scenario.active(resource)
    }


def _statements(template: dict[str, Any], function: str, scenario: ConsumerScenario) -> list[dict[str, Any]]:
    policies = scenario.resolve(template["Resources"][function]["Properties"]["Policies"])
    assert all(isinstance(policy, dict) and set(policy) <= {"Version", "Statement"} for policy in policies)
    return [statement for policy in policies for statement in policy["Statement"]]


# ------------------------------------------------------------------------------------------------------ CdcFunction


def test_cdc_function_contract():
    template = load_intrinsics()
    function = template["Resources"]["CdcFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    assert "Condition" not in function, "the function and its stream triggers deploy on every stage"
    properties = function["Properties"]
    assert properties["CodeUri"] == "functions/cdc/"
    assert properties["Handler"] == "app.handler"
    assert properties["Timeout"] == 60
    assert properties["Description"]
    assert "Runtime" not in properties, "the runtime comes from Globals (python3.13)"
    assert template["Globals"]["Function"]["Runtime"] == "python3.13"


def test_cdc_environment_wiring():
    template = load_intrinsics()
    variables = template["Resources"]["CdcFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["CDC_TOPIC"] == {"Ref": "CdcTopic"}
    assert variables["CDC_EVENT_TYPE_PREFIX"] == {"Ref": "CdcEventTypePrefix"}
    assert variables["DLQ_URL"] == {"Ref": "DeadLetterQueue"}, "Ref of an SQS queue is its URL"
    parameters = template["Parameters"]
    assert (parameters["CdcTopic"]["Type"], parameters["CdcTopic"]["Default"]) == ("String", "cdc-events")
    assert (parameters["CdcEventTypePrefix"]["Type"], parameters["CdcEventTypePrefix"]["Default"]) == ("String", "cdc")


def test_cdc_function_declares_only_the_stream_events():
    """DynamoDB and Kinesis triggers work on LocalStack; Kafka ones cannot be conditional as SAM events."""
    events = _resources()["CdcFunction"]["Properties"]["Events"]
    assert {name: event["Type"] for name, event in events.items()} == {
        name: kind for name, (kind, _) in STREAM_EVENTS.items()
    }
    assert all("Condition" not in event for event in events.values())


@pytest.mark.parametrize("name", sorted(STREAM_EVENTS))
def test_stream_events_fail_records_bounded_and_to_the_dlq(name: str):
    kind, stream = STREAM_EVENTS[name]
    event = _resources()["CdcFunction"]["Properties"]["Events"][name]
    assert event["Type"] == kind
    properties = event["Properties"]
    assert properties["Stream"] == stream
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["BatchSize"] == 100
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == {"Ref": "CdcMaxRetryAttempts"}
    assert properties["MaximumRecordAgeInSeconds"] == {"Ref": "CdcMaxRecordAgeSeconds"}
    assert properties["DestinationConfig"] == {"OnFailure": {"Type": "SQS", "Destination": DLQ_ARN}}
    assert "ParallelizationFactor" not in properties, "one batch per shard at a time keeps a key's changes in order"


def test_retries_and_record_age_are_bounded_whatever_the_parameters_say():
    """Never -1 (infinite, the streams' default): one poison record would block its shard until it expires."""
    parameters = load_intrinsics()["Parameters"]
    retries = parameters["CdcMaxRetryAttempts"]
    assert (retries["Type"], retries["Default"], retries["MinValue"], retries["MaxValue"]) == ("Number", 3, 0, 10000)
    age = parameters["CdcMaxRecordAgeSeconds"]
    assert (age["Type"], age["Default"], age["MinValue"], age["MaxValue"]) == ("Number", 3600, 60, 604800)


@pytest.mark.parametrize(("subnets", "groups"), [("", ""), ("subnet-1,subnet-2", "sg-1")])
@pytest.mark.parametrize("function", ["CdcFunction", "MaintenanceFunction"])
def test_vpc_config_only_when_subnets_are_given(function: str, subnets: str, groups: str):
    template = load_intrinsics()
    scenario = ConsumerScenario(template, VpcSubnetIds=subnets, VpcSecurityGroupIds=groups)
    vpc = scenario.resolve(template["Resources"][function]["Properties"]).get("VpcConfig")
    if subnets:
        assert vpc == {"SubnetIds": {"Ref": "VpcSubnetIds"}, "SecurityGroupIds": {"Ref": "VpcSecurityGroupIds"}}
    else:
        assert vpc is None


# ------------------------------------------------------------------------------------------------- the CDC sources


def test_orders_table_streams_old_and_new_images():
    table = _resources()["OrdersTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert "Condition" not in table
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["AttributeDefinitions"] == [{"AttributeName": "order_id", "AttributeType": "S"}]
    assert properties["KeySchema"] == [{"AttributeName": "order_id", "KeyType": "HASH"}]
    assert properties["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


@pytest.mark.parametrize("stage", ["local", "dev", "prod"])
def test_cdc_stream_is_on_demand_and_encrypted_outside_the_local_stage(stage: str):
    template = load_intrinsics()
    stream = template["Resources"]["CdcStream"]
    assert stream["Type"] == "AWS::Kinesis::Stream"
    assert "Condition" not in stream
    properties = ConsumerScenario(template, Stage=stage).resolve(stream["Properties"])
    assert properties["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert "ShardCount" not in properties, "on-demand streams size themselves"
    if stage == "local":
        assert "StreamEncryption" not in properties
    else:
        assert properties["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}


# -------------------------------------------------------------------------------------- Kafka (Debezium) mappings


def test_one_cdc_mapping_per_topic_slot_and_trigger_source():
    mappings = _cdc_mappings(load_intrinsics())
    assert sorted(mappings) == sorted(CDC_MAPPINGS)
    for slot in range(1, CDC_TOPIC_SLOTS + 1):
        assert mappings[f"CdcMskMapping{slot}"]["Condition"] == f"UseMskCdcTopic{slot}"
        assert mappings[f"CdcSelfManagedMapping{slot}"]["Condition"] == f"UseSelfManagedCdcTopic{slot}"


@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
@pytest.mark.parametrize("topics", ["", "a", ",".join(DEBEZIUM_TOPICS), "a,b,c,d"])
def test_no_kafka_mapping_on_the_local_stage_while_the_stream_triggers_stay(source: str, topics: str):
    """LocalStack (community) rolls a stack back on a Kafka mapping; its DynamoDB stream and Kinesis triggers work."""
    template = load_intrinsics()
    local = ConsumerScenario(
        template,
        Stage="local",
        KafkaTriggerSource=source,
        CdcKafkaTopics=topics,
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
    assert local.active(template["Resources"]["CdcFunction"])
    assert set(template["Resources"]["CdcFunction"]["Properties"]["Events"]) == set(STREAM_EVENTS)


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
def test_no_kafka_cdc_mapping_without_cdc_topics(stage: str, source: str):
    template = load_intrinsics()
    scenario = ConsumerScenario(template, Stage=stage, KafkaTriggerSource=source, MskClusterArn=MSK_CLUSTER)
    assert template["Parameters"]["CdcKafkaTopics"]["Type"] == "CommaDelimitedList"
    assert template["Parameters"]["CdcKafkaTopics"]["Default"] == ""
    assert _active_cdc_mappings(template, scenario) == {}
    assert not scenario.condition("KafkaTriggerIsMisconfigured")


@pytest.mark.parametrize(
    ("source", "topics", "expected"),
    [
        ("none", ",".join(DEBEZIUM_TOPICS), {}),
        ("msk", DEBEZIUM_TOPICS[0], {"CdcMskMapping1": DEBEZIUM_TOPICS[0]}),
        ("msk", ",".join(DEBEZIUM_TOPICS), dict(zip(CDC_MSK_MAPPINGS, DEBEZIUM_TOPICS, strict=True))),
        (
            "self-managed",
            ",".join(DEBEZIUM_TOPICS[:2]),
            dict(zip(CDC_SELF_MANAGED_MAPPINGS, DEBEZIUM_TOPICS[:2], strict=False)),
        ),
    ],
)
def test_the_trigger_source_creates_one_cdc_mapping_per_topic(source: str, topics: str, expected: dict[str, str]):
    template = load_intrinsics()
    scenario = ConsumerScenario(
        template,
        Stage="dev",
        KafkaTriggerSource=source,
        CdcKafkaTopics=topics,
        MskClusterArn=MSK_CLUSTER,
        KafkaBootstrapServers=BROKERS,
    )
    active = _active_cdc_mappings(template, scenario)
    assert {name: scenario.evaluate(properties["Topics"]) for name, properties in active.items()} == {
        name: [topic] for name, topic in expected.items()
    }
    for name, properties in active.items():
        # its own consumer group, distinct from the consumer's <prefix>-<topic> (Lambda wants them unique)
        config = (
            properties.get("AmazonManagedKafkaEventSourceConfig") or properties["SelfManagedKafkaEventSourceConfig"]
        )
        assert scenario.evaluate(config["ConsumerGroupId"]) == f"event-bus-consumer-cdc-{expected[name]}"
        if source == "msk":
            assert scenario.evaluate(properties["EventSourceArn"]) == MSK_CLUSTER
        else:
            endpoints = properties["SelfManagedEventSource"]["Endpoints"]["KafkaBootstrapServers"]
            assert scenario.evaluate(endpoints) == BROKERS.split(",")
    assert not scenario.condition("KafkaTriggerIsMisconfigured")


@pytest.mark.parametrize(("topics", "misconfigured"), [("a,b,c", False), ("a,b,c,d", True)])
@pytest.mark.parametrize("source", ["msk", "self-managed"])
def test_more_cdc_topics_than_slots_fails_the_deployment(source: str, topics: str, misconfigured: bool):
    template = load_intrinsics()
    scenario = ConsumerScenario(
        template, Stage="dev", KafkaTriggerSource=source, CdcKafkaTopics=topics, MskClusterArn=MSK_CLUSTER
    )
    assert scenario.condition("KafkaTriggerIsMisconfigured") is misconfigured


@pytest.mark.parametrize("name", CDC_MAPPINGS)
def test_every_cdc_mapping_fails_records_bounded_and_to_the_dlq(name: str):
    properties = _cdc_mappings(load_intrinsics())[name]["Properties"]
    assert properties["FunctionName"] == {"Ref": "CdcFunction.Alias"}  # the published version: SnapStart applies
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["BatchSize"] == 100
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == {"Ref": "CdcMaxRetryAttempts"}
    assert properties["MaximumRecordAgeInSeconds"] == {"Ref": "CdcMaxRecordAgeSeconds"}
    assert properties["DestinationConfig"] == {"OnFailure": {"Destination": DLQ_ARN}}
    # provisioned mode: what lets Kafka mappings use the settings above
    assert properties["ProvisionedPollerConfig"] == {
        "MinimumPollers": {"Ref": "KafkaMinPollers"},
        "MaximumPollers": {"Ref": "KafkaMaxPollers"},
    }


@pytest.mark.parametrize(("security", "subnets"), [("plaintext", ""), ("scram", ""), ("scram", "subnet-1,subnet-2")])
def test_self_managed_cdc_mappings_reach_the_brokers_like_the_consumers(security: str, subnets: str):
    template = load_intrinsics()
    scenario = ConsumerScenario(
        template,
        KafkaTriggerSource="self-managed",
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        CdcKafkaTopics="a,b",
        VpcSubnetIds=subnets,
        VpcSecurityGroupIds="sg-1" if subnets else "",
    )
    expected = [{"Type": "SASL_SCRAM_512_AUTH", "URI": SCRAM_SECRET}] if security == "scram" else []
    expected += [{"Type": "VPC_SUBNET", "URI": f"subnet:{subnet}"} for subnet in subnets.split(",") if subnet]
    expected += [{"Type": "VPC_SECURITY_GROUP", "URI": "security_group:sg-1"}] if subnets else []
    active = _active_cdc_mappings(template, scenario)
    assert sorted(active) == CDC_SELF_MANAGED_MAPPINGS[:2]
    for name, properties in active.items():
        assert scenario.evaluate(properties.get("SourceAccessConfigurations", [])) == expected, name


# ------------------------------------------------------------------------------------------------- CdcFunction IAM


@pytest.mark.parametrize("source", ["none", "msk", "self-managed"])
@pytest.mark.parametrize("security", ["plaintext", "tls", "scram", "iam"])
@pytest.mark.parametrize("subnets", ["", "subnet-1"])
@pytest.mark.parametrize("topics", ["", "dbserver1.inventory.customers"])
def test_cdc_statements_are_least_privilege(source: str, security: str, subnets: str, topics: str):
    template = load_intrinsics()
    scenario = ConsumerScenario(
        template,
        KafkaTriggerSource=source,
        KafkaSecurity=security,
        KafkaSaslSecretArn=SCRAM_SECRET,
        MskClusterArn=MSK_CLUSTER,
        CdcKafkaTopics=topics,
        VpcSubnetIds=subnets,
        VpcSecurityGroupIds="sg-1" if subnets else "",
    )
    statements = _statements(template, "CdcFunction", scenario)
    by_sid = _by_sid(statements)
    assert_allow_only_scoped(statements)

    assert _actions(by_sid["DeadLetters"]) == {"sqs:SendMessage"}
    assert by_sid["DeadLetters"]["Resource"] == DLQ_ARN
    msk_mapping = source == "msk" and bool(topics)
    expected = {"DeadLetters"}
    if security == "scram":
        expected |= {"KafkaSaslSecret", "KafkaSaslSecretKey"}
    if security == "iam":
        expected |= {"MskTargetCluster", "MskTargetTopics"}  # it publishes change events
    if msk_mapping:
        expected.add("MskTriggerCluster")
    if topics and (source == "msk" or (source == "self-managed" and subnets)):
        expected.add("KafkaTriggerNetworkInterfaces")
    if msk_mapping and security == "iam":
        expected |= {"MskTriggerConnect", "MskTriggerTopics", "MskTriggerGroups"}
    assert set(by_sid) == expected

    if security == "scram":
        assert by_sid["KafkaSaslSecret"]["Resource"] == {"Ref": "KafkaSaslSecretArn"}
        assert _actions(by_sid["KafkaSaslSecret"]) == {"secretsmanager:GetSecretValue"}
    if security == "iam":
        assert _actions(by_sid["MskTargetTopics"]) == {"kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"}
        assert by_sid["MskTargetCluster"]["Resource"] == {"Ref": "MskClusterArn"}
    if msk_mapping and security == "iam":
        assert _actions(by_sid["MskTriggerTopics"]) == {"kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"}
        assert _actions(by_sid["MskTriggerGroups"]) == {"kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"}


def test_msk_iam_grants_are_this_clusters_topics_and_the_cdc_groups_only():
    template = load_intrinsics()
    scenario = ConsumerScenario(
        template, KafkaTriggerSource="msk", KafkaSecurity="iam", MskClusterArn=MSK_CLUSTER, CdcKafkaTopics="a"
    )
    by_sid = _by_sid(_statements(template, "CdcFunction", scenario))
    topics = f"arn:aws:kafka:eu-west-1:123456789012:topic/{MSK_CLUSTER_PATH}/*"
    assert scenario.evaluate(by_sid["MskTargetTopics"]["Resource"]) == topics
    assert scenario.evaluate(by_sid["MskTriggerTopics"]["Resource"]) == topics
    groups = f"arn:aws:kafka:eu-west-1:123456789012:group/{MSK_CLUSTER_PATH}/event-bus-consumer-cdc-*"
    assert scenario.evaluate(by_sid["MskTriggerGroups"]["Resource"]) == groups


# ----------------------------------------------------------------------------------------------- MaintenanceFunction


def test_maintenance_function_contract():
    template = load_intrinsics()
    function = template["Resources"]["MaintenanceFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    assert "Condition" not in function
    properties = function["Properties"]
    assert properties["CodeUri"] == "functions/maintenance/"
    assert properties["Handler"] == "app.handler"
    assert properties["Timeout"] == 60
    assert "Runtime" not in properties


def test_maintenance_runs_on_a_schedule():
    """A plain EventBridge rule (Type Schedule), which LocalStack's EventBridge runs."""
    template = load_intrinsics()
    events = template["Resources"]["MaintenanceFunction"]["Properties"]["Events"]
    assert [event["Type"] for event in events.values()] == ["Schedule"]
    (event,) = events.values()
    assert event["Properties"]["Schedule"] == {"Ref": "MaintenanceSchedule"}
    assert template["Parameters"]["MaintenanceSchedule"]["Default"] == "rate(5 minutes)"


@pytest.mark.parametrize(("connect_url", "connectors"), [("", ""), ("http://connect.internal:8083", CONNECTORS)])
def test_maintenance_environment(connect_url: str, connectors: str):
    template = load_intrinsics()
    variables = template["Resources"]["MaintenanceFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["KAFKA_CONNECT_URL"] == {"Ref": "KafkaConnectUrl"}
    assert variables["MSK_CONNECT_CONNECTOR_ARNS"] == {"Fn::Join": [",", {"Ref": "MskConnectConnectorArns"}]}
    assert variables["SCRAPE_INTERVAL_SECONDS"] == {"Ref": "ScrapeIntervalSeconds"}
    assert variables["STALE_GROUP_SCRAPES"] == {"Ref": "StaleGroupScrapes"}
    scenario = ConsumerScenario(template, KafkaConnectUrl=connect_url, MskConnectConnectorArns=connectors)
    assert scenario.evaluate(variables["KAFKA_CONNECT_URL"]) == connect_url
    assert scenario.evaluate(variables["MSK_CONNECT_CONNECTOR_ARNS"]) == connectors
    parameters = template["Parameters"]
    assert (parameters["KafkaConnectUrl"]["Type"], parameters["KafkaConnectUrl"]["Default"]) == ("String", "")
    connector_arns = parameters["MskConnectConnectorArns"]
    assert (connector_arns["Type"], connector_arns["Default"]) == ("CommaDelimitedList", "")
    assert (parameters["ScrapeIntervalSeconds"]["Type"], parameters["ScrapeIntervalSeconds"]["Default"]) == (
        "Number",
        15,
    )
    stale = parameters["StaleGroupScrapes"]
    assert (stale["Type"], stale["Default"], stale["MinValue"]) == ("Number", 60, 2), "never before it was scraped"


@pytest.mark.parametrize("connectors", ["", CONNECTORS])
def test_maintenance_may_only_describe_the_listed_connectors(connectors: str):
    template = load_intrinsics()
    policies = template["Resources"]["MaintenanceFunction"]["Properties"]["Policies"]
    assert policies == [{"Fn::If": ["HasMskConnectConnectors", policies[0]["Fn::If"][1], NO_VALUE]}], (
        "no policy at all without connectors (a policy without statements is invalid)"
    )
    scenario = ConsumerScenario(template, MskConnectConnectorArns=connectors)
    statements = _statements(template, "MaintenanceFunction", scenario)
    if not connectors:
        assert statements == []
        return
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert _actions(statement) == {"kafkaconnect:DescribeConnector"}
    assert statement["Resource"] == {"Ref": "MskConnectConnectorArns"}
    assert scenario.evaluate(statement["Resource"]) == connectors.split(",")


# ------------------------------------------------------------------------------------------------------ outputs


def test_outputs():
    outputs = load_intrinsics()["Outputs"]
    expected = {
        "CdcFunctionName": {"Ref": "CdcFunction"},
        "MaintenanceFunctionName": {"Ref": "MaintenanceFunction"},
        "OrdersTableName": {"Ref": "OrdersTable"},
        "OrdersTableStreamArn": {"Fn::GetAtt": ["OrdersTable", "StreamArn"]},
        "CdcStreamName": {"Ref": "CdcStream"},
    }
    for name, value in expected.items():
        assert outputs[name]["Value"] == value, name
        assert outputs[name]["Description"], name
        assert "Condition" not in outputs[name], name
