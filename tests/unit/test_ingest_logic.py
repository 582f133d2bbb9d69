"""IngestFunction's plain logic: settings, routing and partition keys, Kafka client settings per MSK auth mode."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from cloudevents.core.v1.event import CloudEvent
from ingest.routing import TopicRouter, partition_key
from ingest.settings import IngestSettings, load_shipped_routes
from lambda_event_bus.base import ConfigError
from lambda_event_bus.bus.kafka_settings import KafkaSettings
from moto import mock_aws
from support.moto import use_moto_credentials


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
            ("DEMO_ROUTES", "yes"),
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
        use_moto_credentials(monkeypatch, "eu-west-1")
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

    def test_sasl_plain_from_a_secret_as_confluent_cloud_needs(self, monkeypatch):
        use_moto_credentials(monkeypatch, "eu-west-1")
        with mock_aws():
            arn = boto3.client("secretsmanager").create_secret(
                Name="confluent", SecretString=json.dumps({"username": "API-KEY", "password": "api-secret"})
            )["ARN"]
            config = KafkaSettings.from_env({"KAFKA_SECURITY": "plain", "KAFKA_SASL_SECRET_ARN": arn}).client_config()
        assert (config["security.protocol"], config["sasl.mechanism"], config["sasl.username"]) == (
            "SASL_SSL",
            "PLAIN",
            "API-KEY",
        )

    def test_mtls_and_a_private_ca_from_secrets_in_the_mappings_formats_load_into_librdkafka(self, monkeypatch):
        """The secrets Lambda's mappings read (CLIENT_CERTIFICATE_TLS_AUTH, SERVER_ROOT_CA_CERTIFICATE) serve the
        functions' own clients too; librdkafka parses the PEMs when the client is made."""
        from confluent_kafka import Producer

        certificate, key = self_signed("client.bus.example")
        use_moto_credentials(monkeypatch, "eu-west-1")
        with mock_aws():
            secrets = boto3.client("secretsmanager")
            client = secrets.create_secret(
                Name="client", SecretString=json.dumps({"certificate": certificate, "privateKey": key})
            )["ARN"]
            ca = secrets.create_secret(Name="ca", SecretString=json.dumps({"certificate": certificate}))["ARN"]
            environ = {"KAFKA_SECURITY": "mtls", "KAFKA_SSL_CLIENT_SECRET_ARN": client, "KAFKA_SSL_CA_SECRET_ARN": ca}
            config = KafkaSettings.from_env(environ).client_config()
            broken = secrets.create_secret(Name="broken", SecretString=json.dumps({"cert": certificate}))["ARN"]
            with pytest.raises(ConfigError, match='"certificate"'):
                KafkaSettings.from_env({**environ, "KAFKA_SSL_CLIENT_SECRET_ARN": broken}).client_config()
        assert config["security.protocol"] == "SSL"
        assert (config["ssl.certificate.pem"], config["ssl.key.pem"], config["ssl.ca.pem"]) == (
            certificate,
            key,
            certificate,
        )
        Producer(config).flush(0)  # raises KafkaException when librdkafka cannot read a PEM

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
            {"KAFKA_SECURITY": "plain"},
            {"KAFKA_SECURITY": "mtls"},
            {"KAFKA_SECURITY": "iam"},
            {"KAFKA_BOOTSTRAP_SERVERS": "broker-without-port"},
        ],
    )
    def test_incomplete_security_settings_fail_at_start_up(self, environ):
        with pytest.raises(ConfigError):
            KafkaSettings.from_env(environ)


class TestDeliveryOutcomes:
    """What each delivery report means for the idempotency claim and the answer (in-memory fakes of the
    producer and the store: the real ones are exercised in tests/functional/test_ingest.py)."""

    def test_the_kafka_error_decides_between_not_sent_and_unknown(self):
        from confluent_kafka import KafkaError
        from lambda_event_bus.bus.producer import DELIVERED, NOT_SENT, UNKNOWN, _outcome

        assert _outcome(None, None) == UNKNOWN, "no report by the deadline: it was in flight"
        assert _outcome(KafkaError(KafkaError._PURGE_QUEUE), None) == NOT_SENT
        assert _outcome(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None) == NOT_SENT
        assert _outcome(KafkaError(KafkaError._MSG_TIMED_OUT), None) == UNKNOWN
        assert _outcome(BufferError("queue full"), None) == NOT_SENT
        assert _outcome(None, object()) == DELIVERED

    def test_unknown_outcomes_keep_their_claim_and_not_sent_ones_release_it(self):
        from ingest.errors import UnavailableError
        from ingest.service import IngestService
        from ingest.validation import SchemaRegistry
        from lambda_event_bus.bus.idempotency import Claim, ClaimState
        from lambda_event_bus.bus.producer import DELIVERED, NOT_SENT, UNKNOWN, Delivery

        calls: list[tuple[str, str]] = []

        class Store:
            def claim(self, key, hold_ms):
                calls.append(("claim", key["id"]))
                return Claim(ClaimState.NEW)

            def complete(self, key, result):
                calls.append(("complete", key["id"]))

            def release(self, key, reason):
                calls.append(("release", key["id"]))

        outcomes = {"a": DELIVERED, "b": NOT_SENT, "c": UNKNOWN}

        class Producer:
            def send(self, records, timeout_s):
                return [Delivery(record, outcomes[record.event_id], partition=0, offset=1) for record in records]

        service = IngestService(
            IngestSettings(),
            producer=Producer,
            idempotency=Store(),
            schemas=SchemaRegistry(Path("/nonexistent")),
        )
        events = [event(id=name) for name in "abc"]
        with pytest.raises(UnavailableError) as raised:
            service.accept(events, time_left_s=5)
        statuses = {result["id"]: result["status"] for result in raised.value.results}
        assert statuses == {"a": "accepted", "b": "failed", "c": "unknown"}
        assert sorted(call for call in calls if call[0] != "claim") == [("complete", "a"), ("release", "b")]
        assert "possibly on the broker" in raised.value.detail


def self_signed(name: str) -> tuple[str, str]:
    """A self-signed certificate and its key, as PEM text."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem
