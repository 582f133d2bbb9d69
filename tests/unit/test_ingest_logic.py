"""IngestFunction's plain logic: settings, routing and partition keys, Kafka client settings per MSK auth mode."""

from __future__ import annotations

import json

import boto3
import pytest
from cloudevents.core.v1.event import CloudEvent
from eventbus.kafka_settings import KafkaSettings
from ingest.routing import TopicRouter, partition_key
from ingest.settings import IngestSettings, load_shipped_routes
from moto import mock_aws
from observability import ConfigError


def event(**attributes: str) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t", **attributes}, None)


class TestRouting:
    def test_exact_beats_prefix_and_the_longest_prefix_wins(self):
        router = TopicRouter(
            [("com.example.*", "general"), ("com.example.order.*", "orders"), ("com.example.order.audit", "audit")],
            "events",
        )
        assert router.topic_for("com.example.order.audit") == "audit"
        assert router.topic_for("com.example.order.created") == "orders"
        assert router.topic_for("com.example.user.created") == "general"
        assert router.topic_for("org.other") == "events"

    def test_partition_key_prefers_partitionkey_then_subject_then_id(self):
        assert partition_key(event(partitionkey="p", subject="s")) == "p"
        assert partition_key(event(subject="s")) == "s"
        assert partition_key(event()) == "e-1"

    def test_the_shipped_routes_are_valid(self):
        assert dict(load_shipped_routes())["com.example.order.*"] == "orders"


class TestSettings:
    def test_topic_routes_override_the_shipped_ones(self):
        settings = IngestSettings.from_env({"TOPIC_ROUTES": '{"a.*": "t-a", "b": "t-b"}', "DEFAULT_TOPIC": "rest"})
        assert settings.routes == (("a.*", "t-a"), ("b", "t-b"))
        assert settings.default_topic == "rest"

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("TOPIC_ROUTES", "not json"),
            ("TOPIC_ROUTES", '["a", "b"]'),
            ("TOPIC_ROUTES", '{"a*b": "t"}'),
            ("TOPIC_ROUTES", '{"a.*": "bad topic!"}'),
            ("DEFAULT_TOPIC", "has space"),
            ("MAX_EVENT_BYTES", "12"),
            ("PRODUCE_TIMEOUT_MS", "soon"),
            ("IDEMPOTENCY_TTL_SECONDS", "0"),
        ],
    )
    def test_bad_values_fail_with_one_line_naming_the_variable(self, variable, value):
        with pytest.raises(ConfigError) as raised:
            IngestSettings.from_env({variable: value})
        assert str(raised.value).startswith(f"{variable}=")
        assert "\n" not in str(raised.value)


class TestKafkaSettings:
    def test_plaintext_and_tls(self):
        assert "security.protocol" not in KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"}).client_config()
        tls = KafkaSettings.from_env({"KAFKA_SECURITY": "tls", "KAFKA_SSL_CA_LOCATION": "/ca.pem"}).client_config()
        assert (tls["security.protocol"], tls["ssl.ca.location"]) == ("SSL", "/ca.pem")

    def test_scram_from_the_environment(self):
        config = KafkaSettings.from_env(
            {"KAFKA_SECURITY": "scram", "KAFKA_SASL_USERNAME": "bus", "KAFKA_SASL_PASSWORD": "pw"}
        ).client_config()
        assert config["security.protocol"] == "SASL_SSL"
        assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
            "SCRAM-SHA-512",
            "bus",
            "pw",
        )

    def test_scram_from_a_secrets_manager_secret(self, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            arn = boto3.client("secretsmanager").create_secret(
                Name="AmazonMSK_bus", SecretString=json.dumps({"username": "bus", "password": "from-secret"})
            )["ARN"]
            settings = KafkaSettings.from_env(
                {"KAFKA_SECURITY": "scram", "KAFKA_SASL_SECRET_ARN": arn, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}
            )
            config = settings.client_config()
        assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
            "SCRAM-SHA-256",
            "bus",
            "from-secret",
        )

    def test_msk_iam_signs_a_token_with_the_functions_credentials(self, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        config = KafkaSettings.from_env({"KAFKA_SECURITY": "iam", "AWS_REGION": "eu-west-1"}).client_config()
        assert (config["security.protocol"], config["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
        token, expiry = config["oauth_cb"]("")
        assert token
        assert expiry > 0

    @pytest.mark.parametrize(
        "environ",
        [
            {"KAFKA_SECURITY": "kerberos"},
            {"KAFKA_SECURITY": "scram"},
            {"KAFKA_SECURITY": "iam"},
            {"KAFKA_BOOTSTRAP_SERVERS": "broker-without-port"},
        ],
    )
    def test_incomplete_security_settings_fail_at_start_up(self, environ):
        with pytest.raises(ConfigError):
            KafkaSettings.from_env(environ)
