"""Carriers: bytes-safe getter/setter for dict, redis-py stream fields, Kafka header lists, JSON envelopes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.propagators.textmap import DefaultGetter

from otelkit._names import ENVELOPE_MARKER
from otelkit._pipeline import carriers

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("carrier", [
    {"traceparent": TP},
    {b"traceparent": TP.encode()},           # redis-py stream fields, decode_responses=False
    {"traceparent": TP.encode()},            # str keys, bytes values (DefaultGetter raises here)
    {b"traceparent": TP},
    [("traceparent", TP.encode())],          # Kafka headers
    [(b"traceparent", TP.encode())],
    (("other", b"x"), ("traceparent", TP)),
])
def test_getter_reads_every_shape(carrier: Any) -> None:
    assert carriers.GETTER.get(carrier, "traceparent") == [TP]
    assert "traceparent" in carriers.GETTER.keys(carrier)


def test_default_getter_really_fails_on_bytes() -> None:
    # The reason this module exists: the OTel default getter finds nothing under bytes keys.
    assert DefaultGetter().get({b"traceparent": TP.encode()}, "traceparent") is None


@pytest.mark.parametrize("value", [b"\xff\xfe\x00", 12, None, 3.5, ["a"], {"a": 1}, b"x" * 9000, "x" * 9000])
def test_unreadable_values_read_as_absent(value: object) -> None:
    assert carriers.GETTER.get({"traceparent": value}, "traceparent") is None
    assert carriers.GETTER.get([("traceparent", value)], "traceparent") is None


@pytest.mark.parametrize("carrier", [None, 5, object(), "a string", b"bytes", [1, 2, 3], [("only-one",)]])
def test_foreign_carrier_types_never_raise(carrier: object) -> None:
    assert carriers.GETTER.get(carrier, "traceparent") is None
    assert isinstance(carriers.GETTER.keys(carrier), list)


def test_setter_writes_str_into_dicts_and_bytes_into_lists() -> None:
    headers: dict[Any, Any] = {b"traceparent": b"old", "keep": "1"}
    carriers.SETTER.set(headers, "traceparent", TP)
    assert headers == {"traceparent": TP, "keep": "1"}  # the bytes twin is replaced, not duplicated
    kafka: list[tuple[Any, Any]] = [("traceparent", b"old"), (b"traceparent", b"old2"), ("keep", b"1")]
    carriers.SETTER.set(kafka, "traceparent", TP)
    assert kafka == [("keep", b"1"), ("traceparent", TP.encode())]


def test_setter_rejects_immutable_carriers_with_a_clear_message() -> None:
    with pytest.raises(TypeError, match="dict, a list of"):
        carriers.set_header(("a", "b"), "traceparent", TP)


@pytest.mark.parametrize("payload", ["text", '{"json": "text"}', b"raw bytes", b"\xff\x00binary", {"a": [1, 2]},
                                     [1, "x"], 42, "", b""])
def test_envelope_round_trip_keeps_type(payload: Any) -> None:
    raw = carriers.wrap(payload, {"traceparent": TP})
    assert raw.startswith('{"' + ENVELOPE_MARKER + '":')
    for form in (raw, raw.encode(), bytearray(raw.encode())):
        body, headers = carriers.unwrap(form)
        assert body == payload and type(body) is type(payload)
        assert headers == {"traceparent": TP}


@pytest.mark.parametrize("legacy", [b'{"token": "abc"}', '{"token": "abc"}', b"plain", "plain", b"\xff\xfe",
                                    b"", '{"' + ENVELOPE_MARKER + '": 1, broken', 123])
def test_legacy_and_malformed_payloads_come_back_unchanged(legacy: Any) -> None:
    body, headers = carriers.unwrap(legacy)
    assert body is legacy
    assert headers == {}


def test_envelope_with_spaces_is_recognised() -> None:
    raw = json.dumps({ENVELOPE_MARKER: 1, "headers": {"a": "b"}, "payload": "p"})
    assert carriers.unwrap(raw) == ("p", {"a": "b"})
