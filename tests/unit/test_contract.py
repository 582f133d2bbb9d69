"""The event contract's pieces on their own (lambda_event_bus.bus.contract): header values, attribute rules, data by
content type, and the Kafka binding's round trip. The same rules through the real handlers are in
tests/functional/test_conformance_*.py."""

from __future__ import annotations

import base64
import json
import urllib.parse
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lambda_event_bus.bus.contract import (
    EVENT_FORMAT,
    InvalidEventError,
    TypePattern,
    canonical,
    data_value,
    make_event,
    partition_key,
    read_kafka,
    read_structured,
    structured_document,
    to_kafka_record,
)
from lambda_event_bus.bus.contract.attributes import time_problem, uri_problem
from lambda_event_bus.bus.contract.event import bytes_kind
from lambda_event_bus.bus.contract.http import header_value

# CloudEvents strings: no control characters, noncharacters or lone surrogates (spec.md, Type System)
TEXT = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\ufdd0\ufffe\uffff"), min_size=1, max_size=30
).filter(lambda text: not any(0x7F <= ord(c) <= 0x9F for c in text))
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True).filter(
    lambda name: (
        name not in {"specversion", "id", "source", "type", "subject", "time", "data", "dataschema"}
        and name != "datacontenttype"
    )
)


def spec_percent_encode(value: str) -> str:
    """http-protocol-binding.md §3.1.3.2's encoding: space, double quote, percent and anything outside
    printable ASCII, as UTF-8 bytes."""
    return "".join(
        character
        if 0x21 <= ord(character) <= 0x7E and character not in '"%'
        else urllib.parse.quote(character, safe="")
        for character in value
    )


class TestHeaderValues:
    @given(TEXT)
    def test_what_the_spec_encodes_decodes_to_the_same_text(self, value):
        assert header_value("ce-x", spec_percent_encode(value)) == value

    @given(TEXT)
    def test_a_double_quoted_value_is_unquoted_first(self, value):
        quoted = '"' + spec_percent_encode(value).replace("\\", "\\\\") + '"'
        assert header_value("ce-x", quoted) == value

    @given(st.binary(min_size=1, max_size=8))
    def test_bytes_that_are_not_utf8_are_refused_never_replaced(self, raw):
        encoded = "".join(f"%{byte:02X}" for byte in raw)
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(InvalidEventError, match="not UTF-8"):
                header_value("ce-x", encoded)
        else:
            assert header_value("ce-x", encoded) == expected

    @pytest.mark.parametrize("value", ["%C0%A0", "%ED%A0%80", "%E2%82", "%", "100%", "%G1", '"open', '"a"b"', '"a\\"'])
    def test_the_specs_examples_of_what_to_refuse(self, value):
        with pytest.raises(InvalidEventError):
            header_value("ce-x", value)

    def test_the_specs_example_and_lower_case_hex(self):
        assert header_value("ce-x", "Euro%20%E2%82%AC%20%F0%9F%98%80") == "Euro € 😀"
        assert header_value("ce-x", "%e2%82%ac") == "€"


class TestAttributeRules:
    @given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(["Z", "z", "+00:00", "-05:30"]), st.integers(0, 9))
    def test_rfc3339_timestamps_in_their_forms(self, moment, zone, digits):
        fraction = f".{moment.microsecond:06d}{'0' * 3}"[: digits + 1] if digits else ""
        text = moment.replace(tzinfo=None, microsecond=0).isoformat() + fraction + zone
        assert time_problem(text) is None

    @pytest.mark.parametrize(
        "text",
        ["2018-02-30T00:00:00Z", "2018-13-01T00:00:00Z", "2018-04-05T24:00:00Z", "2018-04-05", "2018-04-05T03:56:24",
         "2018-04-05 03:56:24Z", "yesterday", "2018-04-05T03:56:24+25:00"],
    )  # fmt: skip
    def test_what_is_not_a_timestamp(self, text):
        assert time_problem(text) is not None

    @pytest.mark.parametrize(
        ("value", "absolute", "valid"),
        [
            ("/mycontext/subcontext", False, True),
            ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", False, True),
            ("https://github.com/cloudevents/spec/pull/123?x=1#frag", False, True),
            ("mailto:cncf-wg-serverless@lists.cncf.io", False, True),
            ("1-555-123-4567", False, True),
            ("/a%20b", False, True),
            ("/a b", False, False),
            ("/ümlaut", False, False),
            ("/a%zz", False, False),
            ("1a:b", False, False),
            ("a#b#c", False, False),
            ("https://example.com/schema.json", True, True),
            ("/schema.json", True, False),
        ],
    )
    def test_uri_references_and_uris(self, value, absolute, valid):
        assert (uri_problem(value, "x", absolute=absolute) is None) is valid

    def test_null_is_unset_and_nothing_is_invented(self):
        event = read_structured({"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "subject": None})
        assert event.get_attributes() == {"specversion": "1.0", "id": "i", "source": "/s", "type": "t"}
        assert event.get_time() is None

    def test_time_keeps_its_text_and_still_reads_as_a_datetime(self):
        event = make_event(
            {"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "time": "2018-04-05T03:56:24.000+02:00"}
        )
        assert event.get_attributes()["time"] == "2018-04-05T03:56:24.000+02:00"
        assert event.get_time() == datetime(2018, 4, 5, 3, 56, 24, tzinfo=timezone(timedelta(hours=2)))

    @pytest.mark.parametrize(
        ("attributes", "detail"),
        [
            ({"specversion": "1.0", "source": "/s", "type": "t"}, "'id' is required"),
            ({"specversion": "0.3", "id": "i", "source": "/s", "type": "t"}, "specversion"),
            ({"specversion": "1.0", "id": "", "source": "/s", "type": "t"}, "non-empty"),
            ({"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "data": "x"}, "reserved"),
            ({"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "datacontenttype": "json"}, "media type"),
            ({"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "x": -(2**31) - 1}, "32-bit"),
            ({"specversion": "1.0", "id": "i", "source": "/s", "type": "t", "x": [1]}, "array"),
        ],
    )
    def test_broken_rules_are_named(self, attributes, detail):
        with pytest.raises(InvalidEventError, match=detail):
            make_event(attributes)


class TestData:
    @pytest.mark.parametrize(
        ("content_type", "kind"),
        [
            (None, "binary"),
            ("application/json", "json"),
            ("application/json; charset=utf-8", "json"),
            ("application/vnd.api+json", "json"),
            ("text/json", "json"),
            ("text/plain", "text"),
            ("text/plain; charset=UTF-8", "text"),
            ("text/plain; charset=iso-8859-1", "binary"),
            ("application/xml", "text"),
            ("application/atom+xml", "text"),
            ("application/octet-stream", "binary"),
            ("image/png", "binary"),
            ("application/jsonl", "binary"),
        ],
    )
    def test_the_content_type_decides_what_bytes_are(self, content_type, kind):
        assert bytes_kind(content_type) == kind

    def test_structured_writing_follows_the_content_type(self):
        def written(content_type: str | None, data: object) -> dict:
            attributes = {"specversion": "1.0", "id": "i", "source": "/s", "type": "t"}
            if content_type:
                attributes["datacontenttype"] = content_type
            return structured_document(make_event(attributes, data))

        assert (
            written("application/octet-stream", b"utf-8 text")["data_base64"]
            == base64.b64encode(b"utf-8 text").decode()
        )
        assert written(None, b"\x00")["data_base64"] == "AA=="
        assert written("text/plain", "h\u00e9".encode())["data"] == "h\u00e9"
        assert written("application/json", b' {"a": [1]} ')["data"] == {"a": [1]}
        assert written("application/json", "a string")["data"] == "a string"
        assert "data" not in written("application/json", None)


EXTENSIONS = st.dictionaries(NAMES, st.one_of(TEXT, st.integers(-(2**31), 2**31 - 1), st.booleans()), max_size=4)
JSON_VALUES = st.recursive(
    st.none() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
DATA = st.one_of(
    st.tuples(st.just("application/json"), JSON_VALUES),
    st.tuples(st.just("text/plain"), TEXT),
    st.tuples(st.sampled_from(["application/octet-stream", None]), st.binary(min_size=1, max_size=20)),
)


@given(
    TEXT,
    st.sampled_from(["/s", "urn:x", "https://example.com/a?b=c"]),
    st.one_of(st.none(), TEXT),
    EXTENSIONS,
    DATA,
)
def test_an_event_written_to_kafka_reads_back_the_same(event_id, source, subject, extensions, content_and_data):
    """kafka-protocol-binding.md §3.2: binary mode both ways keeps every attribute (as its canonical string) and
    the data, and adds nothing (the key included)."""
    content_type, data = content_and_data
    attributes: dict[str, object] = {"specversion": "1.0", "id": event_id, "source": source, "type": "t", **extensions}
    if subject:
        attributes["subject"] = subject
    if content_type:
        attributes["datacontenttype"] = content_type
    event = make_event(attributes, data)
    record = to_kafka_record(event, "topic")
    read = read_kafka(list(record.headers), record.value or None)
    assert record.key == partition_key(event).encode()
    assert read is not None
    assert read.get_attributes() == {name: canonical(value) for name, value in attributes.items()}
    assert data_value(read) == data_value(event)
    assert json.loads(EVENT_FORMAT.write(read)) == structured_document(event) | {
        name: canonical(value) for name, value in attributes.items()
    }


class TestRouting:
    def test_partition_key_prefers_partitionkey_then_subject_then_id(self):
        base = {"specversion": "1.0", "id": "i", "source": "/s", "type": "t"}
        assert partition_key(make_event(base | {"partitionkey": 7, "subject": "s"})) == "7"
        assert partition_key(make_event(base | {"subject": "s"})) == "s"
        assert partition_key(make_event(base)) == "i"

    def test_type_patterns(self):
        assert TypePattern("com.example.*").matches("com.example.order")
        assert not TypePattern("com.example.*").matches("com.other")
        assert TypePattern("*").matches("anything")
        assert TypePattern("a.b").rank > TypePattern("a.*").rank > TypePattern("*").rank
        with pytest.raises(ValueError, match="prefix ending"):
            TypePattern("a*b")
