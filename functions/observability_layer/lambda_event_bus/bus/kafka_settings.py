"""Kafka client settings from the environment: bootstrap servers and the authentication options of MSK and of
self-managed clusters (the same ones Lambda's Kafka event source mappings offer)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lambda_event_bus.base import ConfigError, EnvReader

__all__ = ["SASL_MODES", "SECURITY_MODES", "KafkaSettings", "msk_iam_token_callback", "read_secret"]

SECURITY_MODES = ("plaintext", "tls", "scram", "plain", "mtls", "iam")
SASL_MODES = ("scram", "plain")
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class KafkaSettings:
    """`KAFKA_BOOTSTRAP_SERVERS` and `KAFKA_SECURITY`:

    - plaintext: local brokers;
    - tls: TLS, server authenticated (`KAFKA_SSL_CA_LOCATION` for a private CA);
    - scram: SASL/SCRAM over TLS with `KAFKA_SASL_USERNAME`/`KAFKA_SASL_PASSWORD`, or with
      `KAFKA_SASL_SECRET_ARN`, a Secrets Manager secret holding {"username", "password"} (MSK's
      AmazonMSK_ convention); `KAFKA_SASL_MECHANISM` SCRAM-SHA-512 (MSK's) or SCRAM-SHA-256;
    - plain: SASL/PLAIN over TLS (Confluent Cloud's API keys, the mappings' BASIC_AUTH), credentials as for scram;
    - mtls: TLS with a client certificate from `KAFKA_SSL_CLIENT_SECRET_ARN`, a secret in the format of the
      mappings' CLIENT_CERTIFICATE_TLS_AUTH: {"certificate": PEM chain, "privateKey": PEM,
      "privateKeyPassword"?};
    - iam: SASL/OAUTHBEARER with tokens from the MSK IAM signer, for the function's role and `AWS_REGION`.

    Any TLS mode trusts a private CA from `KAFKA_SSL_CA_SECRET_ARN` ({"certificate": PEM}, the mappings'
    SERVER_ROOT_CA_CERTIFICATE format) or `KAFKA_SSL_CA_LOCATION` (a file).
    """

    bootstrap_servers: str
    security: str = "plaintext"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = None
    sasl_secret_arn: str | None = None
    ssl_ca_location: str | None = None
    ssl_ca_secret_arn: str | None = None
    ssl_client_secret_arn: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        env = EnvReader(environ)
        bootstrap = env.text("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        if any(not server.rpartition(":")[2].isdigit() for server in bootstrap.split(",")):
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS", bootstrap, "comma-separated host:port pairs")
        settings = cls(
            bootstrap_servers=bootstrap,
            security=env.choice("KAFKA_SECURITY", SECURITY_MODES, "plaintext"),
            sasl_mechanism=env.choice(
                "KAFKA_SASL_MECHANISM", [m.lower() for m in SCRAM_MECHANISMS], "scram-sha-512"
            ).upper(),
            sasl_username=env.raw("KAFKA_SASL_USERNAME"),
            sasl_password=env.raw("KAFKA_SASL_PASSWORD"),
            sasl_secret_arn=env.raw("KAFKA_SASL_SECRET_ARN"),
            ssl_ca_location=env.raw("KAFKA_SSL_CA_LOCATION"),
            ssl_ca_secret_arn=env.raw("KAFKA_SSL_CA_SECRET_ARN"),
            ssl_client_secret_arn=env.raw("KAFKA_SSL_CLIENT_SECRET_ARN"),
            region=env.raw("AWS_REGION") or env.raw("AWS_DEFAULT_REGION"),
        )
        if settings.security in SASL_MODES and not (
            settings.sasl_secret_arn or (settings.sasl_username and settings.sasl_password)
        ):
            raise ConfigError(
                "KAFKA_SECURITY",
                settings.security,
                "KAFKA_SASL_SECRET_ARN, or KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
            )
        if settings.security == "mtls" and not settings.ssl_client_secret_arn:
            raise ConfigError("KAFKA_SECURITY", "mtls", "KAFKA_SSL_CLIENT_SECRET_ARN (the client certificate's secret)")
        if settings.security == "iam" and not settings.region:
            raise ConfigError("KAFKA_SECURITY", "iam", "AWS_REGION set (the MSK IAM token is signed per region)")
        return settings

    @property
    def first_broker(self) -> str:
        return self.bootstrap_servers.split(",")[0]

    def client_config(self, secret_reader: Callable[[str], str] | None = None) -> dict[str, Any]:
        """librdkafka settings for these credentials (secrets are fetched here, once, at init)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "client.id": socket.gethostname()}
        if self.security == "plaintext":
            return config
        read = secret_reader or read_secret
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_ca_secret_arn:
            config["ssl.ca.pem"] = _secret_field(read, self.ssl_ca_secret_arn, "certificate")
        if self.security in ("tls", "mtls"):
            config["security.protocol"] = "SSL"
            if self.security == "mtls" and self.ssl_client_secret_arn:
                secret = json.loads(read(self.ssl_client_secret_arn))
                config["ssl.certificate.pem"] = _secret_field(read, self.ssl_client_secret_arn, "certificate", secret)
                config["ssl.key.pem"] = _secret_field(read, self.ssl_client_secret_arn, "privateKey", secret)
                if secret.get("privateKeyPassword"):
                    config["ssl.key.password"] = secret["privateKeyPassword"]
            return config
        config["security.protocol"] = "SASL_SSL"
        if self.security in SASL_MODES:
            username, password = self.sasl_username, self.sasl_password
            if self.sasl_secret_arn:
                secret = json.loads(read(self.sasl_secret_arn))
                username, password = secret["username"], secret["password"]
            mechanism = "PLAIN" if self.security == "plain" else self.sasl_mechanism
            config.update({"sasl.mechanism": mechanism, "sasl.username": username, "sasl.password": password})
            return config
        config.update({"sasl.mechanism": "OAUTHBEARER", "oauth_cb": msk_iam_token_callback(self.region or "")})
        return config


def _secret_field(read: Callable[[str], str], arn: str, name: str, secret: Mapping[str, Any] | None = None) -> str:
    """One field of a JSON secret; a ConfigError names the secret and the field when it is missing."""
    document = secret if secret is not None else json.loads(read(arn))
    value = document.get(name) if isinstance(document, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ConfigError("Kafka secret", arn, f'a JSON object with "{name}" (a PEM string)')
    return value


def read_secret(arn: str) -> str:
    """A Secrets Manager secret's string (honours AWS_ENDPOINT_URL, like every client here)."""
    from lambda_event_bus.bus import aws

    response = aws.client("secretsmanager").get_secret_value(SecretId=arn)
    return str(response["SecretString"])


def msk_iam_token_callback(region: str) -> Callable[[str], tuple[str, float]]:
    """librdkafka's oauth_cb: an MSK IAM auth token signed with the function's credentials."""

    def token(_config: str) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # type: ignore[import-untyped]

        auth_token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return auth_token, expiry_ms / 1000

    return token
