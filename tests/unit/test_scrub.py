"""Secret scrubbing of error context."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry.errors import FILTERED, scrub, scrub_text


def test_secret_keys_are_filtered_at_any_depth():
    context = {
        "user": "ada",
        "password": "hunter2",
        "headers": {"Authorization": "Bearer x", "X-Api-Key": "k", "accept": "json"},
        "items": [{"client_secret": "s", "id": 1}],
        "db": {"connection": {"Private-Key": "pem", "host": "db"}},
        "refresh_token": "t",
        "apikey": "a",
    }
    scrubbed = scrub(context)
    assert scrubbed == {
        "user": "ada",
        "password": FILTERED,
        "headers": {"Authorization": FILTERED, "X-Api-Key": FILTERED, "accept": "json"},
        "items": [{"client_secret": FILTERED, "id": 1}],
        "db": {"connection": {"Private-Key": FILTERED, "host": "db"}},
        "refresh_token": FILTERED,
        "apikey": FILTERED,
    }
    assert context["password"] == "hunter2", "the caller's mapping is not modified"


def test_values_become_json_safe_and_depth_is_bounded():
    nested: dict[str, object] = {}
    cursor = nested
    for _ in range(20):
        cursor["next"] = {}
        cursor = cursor["next"]  # type: ignore[assignment]
    scrubbed = scrub({"raw": b"\x00\x01", "obj": object(), "nested": nested, "tuple": (1, 2)})
    assert scrubbed["raw"] == "<2 bytes>"
    assert scrubbed["obj"].startswith("<object object")
    assert scrubbed["tuple"] == [1, 2]
    assert "[Truncated]" in str(scrubbed["nested"])


def test_names_in_header_lists_and_key_value_items_are_honoured():
    scrubbed = scrub(
        {
            "headers": [("Authorization", "Bearer abc"), ("content-type", "json")],
            "kafka_headers": [{"key": "token", "value": "s3cr3t"}, {"key": "ce_id", "value": "1"}],
            "camel": {"accessToken": "t", "clientSecret": "s", "xApiKey": "k", "Set-Cookie": "c"},
        }
    )
    assert scrubbed["headers"] == [["Authorization", FILTERED], ["content-type", "json"]]
    assert scrubbed["kafka_headers"] == [{"key": "token", "value": FILTERED}, {"key": "ce_id", "value": "1"}]
    assert set(scrubbed["camel"].values()) == {FILTERED}


def test_secret_words_inside_other_words_are_not_secrets():
    harmless = {"passenger_count": 3, "bypass_cache": True, "tokens_used": 120, "compass": "N", "key": "o-1"}
    assert scrub(harmless) == harmless


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://user:pw@host/path failed", f"GET https://user:{FILTERED}@host/path failed"),
        ("connect postgres://admin:s3cr3t@db:5432/x refused", f"connect postgres://admin:{FILTERED}@db:5432/x refused"),
        ("dsn https://abc123@o1.ingest.sentry.io/1", f"dsn https://{FILTERED}@o1.ingest.sentry.io/1"),
        ("login with password=hunter2 user=ada", f"login with password={FILTERED} user=ada"),
        ("GET /cb?token=t0k3n&page=2", f"GET /cb?token={FILTERED}&page=2"),
        ("pw=abc, hmac=def; sig=ghi dsn=jkl", f"pw={FILTERED}, hmac={FILTERED}; sig={FILTERED} dsn={FILTERED}"),
        ('{"api_key": "k-123", "id": "o-1"}', f'{{"api_key": "{FILTERED}", "id": "o-1"}}'),
        ("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: {FILTERED}"),
        ("sent Basic dXNlcjpwYXNz upstream", f"sent Basic {FILTERED} upstream"),
        ("order o-1 at 12:30, key=o-1 passenger_count=3", "order o-1 at 12:30, key=o-1 passenger_count=3"),
        ("mailto:ops@example.com", "mailto:ops@example.com"),
    ],
)
def test_secrets_inside_values_are_filtered(text, expected):
    assert scrub_text(text) == expected
    assert scrub({"message": text}) == {"message": expected}, "scrub applies it to every string it walks"


def test_pw_hmac_sig_and_dsn_are_secret_names():
    assert scrub({"pw": "a", "hmac": "b", "sig": "c", "sentry_dsn": "d", "signal": "e"}) == {
        "pw": FILTERED,
        "hmac": FILTERED,
        "sig": FILTERED,
        "sentry_dsn": FILTERED,
        "signal": "e",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"password": "correct horse battery"}', f'{{"password": "{FILTERED}"}}'),
        ("password=abc,def next", f"password={FILTERED} next"),
        ("postgres://u:p@ss@db/x", f"postgres://u:{FILTERED}@db/x"),
        ("Authorization: Negotiate YIIabcdef123", f"Authorization: {FILTERED}"),
        ("sent NTLM TlRMTVNTUAABAAAA upstream", f"sent NTLM {FILTERED} upstream"),
    ],
)
def test_whole_values_are_filtered(text, expected):
    assert scrub_text(text) == expected
