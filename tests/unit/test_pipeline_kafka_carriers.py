"""Kafka: carrier helpers only, tested against a FAKE broker (no Kafka can run on this machine or in CI).

``FakeKafkaTopic`` stands in for a topic and keeps records as the Python clients shape them: a
key, a value and headers as a list of ``(str, bytes)`` (kafka-python, confluent-kafka; aiokafka
hands back a tuple of tuples, and confluent-kafka gives ``None`` for no headers). What is tested
is otelkit's side: inject into and extract from those header shapes, the correlation ID, the
message ID, and that the record key (often a customer or account ID) never becomes an attribute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from _pipeline_support import Telemetry, in_memory_providers

from otelkit import pipeline
from otelkit._names import ATTEMPT_HEADER


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


@dataclass
class FakeRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None
    offset: int = 0


@dataclass
class FakeKafkaTopic:
    """A FAKE Kafka topic (named as such): an append-only list of records with offsets."""

    name: str
    records: list[FakeRecord] = field(default_factory=list)

    def produce(self, value: bytes, *, key: bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> int:
        offset = len(self.records)
        # a broker stores header values as bytes: anything else would be a client error
        assert headers is None or all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
        self.records.append(FakeRecord(key, value, list(headers) if headers is not None else None, offset))
        return offset


SECRET_KEY = b"customer-8812"


def test_produce_and_consume_through_header_lists(otel: Telemetry) -> None:
    topic = FakeKafkaTopic("payments")
    headers: list[tuple[str, bytes]] = [("app-header", b"kept")]
    with pipeline.emit(topic.name, headers, system="kafka", message_id="pay-1") as out:
        topic.produce(b"{}", key=SECRET_KEY, headers=headers)
    record = topic.records[0]
    names = [k for k, _ in record.headers or []]
    assert {"traceparent", "baggage", "otelkit-correlation-id", "otelkit-sent-at", "otelkit-message-id"} <= set(names)
    assert ("app-header", b"kept") in (record.headers or [])
    assert len(names) == len(set(names))  # one entry per key

    with pipeline.receive(topic.name, record.headers, system="kafka", group="ledger") as msg:
        assert msg.correlation_id == out.correlation_id
        assert msg.message_id == "pay-1"
    process, send = otel.span("process payments"), otel.span("send payments")
    assert process.links[0].context.span_id == send.context.span_id
    for span in (send, process):
        values = [str(v) for v in (span.attributes or {}).values()]
        assert not any(SECRET_KEY.decode() in v for v in values)  # the record key is never exported


def test_aiokafka_tuple_headers_and_confluent_none(otel: Telemetry) -> None:
    headers: list[tuple[str, bytes]] = []
    with pipeline.emit("t", headers, system="kafka") as out:
        pass
    with pipeline.receive("t", tuple(headers), system="kafka") as msg:  # aiokafka: a tuple of tuples
        assert msg.correlation_id == out.correlation_id and msg.producer is not None
    with pipeline.receive("t", None, system="kafka") as msg:  # confluent-kafka: no headers at all
        assert msg.producer is None and len(msg.correlation_id or "") == 32


def test_foreign_kafka_correlation_header_and_null_values(otel: Telemetry) -> None:
    record = FakeRecord(None, b"x", [("traceparent", None), ("x-correlation-id", b"upstream-7")])  # type: ignore[list-item]
    with pipeline.receive("t", record.headers, system="kafka") as msg:
        assert msg.correlation_id == "upstream-7" and msg.producer is None


def test_retry_republish_to_a_topic_replaces_headers_not_duplicates(otel: Telemetry) -> None:
    topic = FakeKafkaTopic("jobs")
    first: list[tuple[str, bytes]] = []
    with pipeline.emit("jobs", first, system="kafka"):
        topic.produce(b"job", headers=first)
    received = topic.records[0]
    with pipeline.receive("jobs", received.headers, system="kafka") as msg:
        msg.retry("downstream busy")
    again = list(received.headers or [])  # re-publish the record with its own headers
    with pipeline.emit("jobs-retry", again, system="kafka", retry_of=msg):
        topic.produce(b"job", headers=again)
    names = [k for k, _ in again]
    assert names.count("traceparent") == 1 and names.count(ATTEMPT_HEADER) == 1
    assert dict(again)[ATTEMPT_HEADER] == b"2"
    assert dict(again)["otelkit-correlation-id"] == (msg.correlation_id or "").encode()


def test_a_tuple_carrier_on_emit_is_not_written_but_never_raises(otel: Telemetry) -> None:
    frozen: Any = (("a", b"1"),)
    with pipeline.emit("t", frozen, system="kafka") as out:
        pass
    assert frozen == (("a", b"1"),)  # immutable: the context went to out.headers instead
    assert "traceparent" in out.headers
