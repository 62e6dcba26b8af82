"""A consumer adopts a correlation ID it did not make; retries re-emitted after receive exits; IDs and attributes.

In-memory SDK providers; the real-broker versions are in tests/integration/test_pipeline_interop.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _pipeline_support import Telemetry, in_memory_providers
from opentelemetry.trace import SpanKind

from otelkit import _active, pipeline
from otelkit._config import DEFAULT_CORRELATION_HEADERS, ConfigError, resolve
from otelkit._names import ATTEMPT_HEADER, ATTR_ATTEMPT, CORRELATION_ATTRIBUTE, SENT_AT_HEADER
from otelkit._pipeline.correlation import carried_correlation_id, correlation_headers, foreign_correlation_id
from otelkit._pipeline.scopes import ENQUEUED_AT_HEADER, MESSAGE_ID_HEADER

CONVERSATION = "messaging.message.conversation_id"
E2E = "otelkit.messaging.message.end_to_end.duration"
IN_QUEUE = "otelkit.messaging.message.time_in_queue"


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


class AmqpProperties:
    """Shaped like pika's ``BasicProperties`` / an aio-pika message: attributes, not a mapping."""

    def __init__(self, correlation_id: object = None, message_id: object = None) -> None:
        self.correlation_id = correlation_id
        self.message_id = message_id


class HostileProperties:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("a property object whose accessor raises")


def consumer_cid(carrier: Any = None, **kwargs: Any) -> str:
    with pipeline.receive("q", carrier, system="rabbitmq", **kwargs) as msg:
        assert pipeline.correlation_id() == msg.correlation_id
        cid = msg.correlation_id
    assert cid is not None
    return cid


# --- adoption -------------------------------------------------------------------------------------

def test_explicit_correlation_id_wins(otel: Telemetry) -> None:
    headers: dict[str, str] = {}
    with pipeline.emit("q", headers, system="rabbitmq", correlation_id="from-producer"):
        pass
    assert consumer_cid(headers, correlation_id="order-42") == "order-42"
    span = otel.spans("process q")[-1]
    assert span.attributes[CONVERSATION] == "order-42"
    assert span.attributes[CORRELATION_ATTRIBUTE] == "order-42"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "line\nbreak", 42, b"bytes"])
def test_an_invalid_explicit_id_is_ignored(otel: Telemetry, bad: Any) -> None:
    assert consumer_cid({"otelkit-correlation-id": "carried-1"}, correlation_id=bad) == "carried-1"


def test_an_enclosing_correlate_is_honoured_when_the_message_carries_none(otel: Telemetry) -> None:
    with pipeline.correlate("batch-7"):
        assert consumer_cid({}) == "batch-7"
        assert consumer_cid(None) == "batch-7"
        # the message's own ID still wins over the ambient one
        assert consumer_cid({"otelkit-correlation-id": "msg-1"}) == "msg-1"
        assert pipeline.correlation_id() == "batch-7"


def test_amqp_correlation_id_property_is_adopted(otel: Telemetry) -> None:
    assert consumer_cid({}, properties=AmqpProperties("amqp-cid-1")) == "amqp-cid-1"
    assert consumer_cid({}, properties={"correlation_id": "kombu-cid"}) == "kombu-cid"
    # otelkit's own ID first, then the property, then the headers
    assert consumer_cid({"otelkit-correlation-id": "own"}, properties=AmqpProperties("amqp")) == "own"
    assert consumer_cid({"x-correlation-id": "hdr"}, properties=AmqpProperties("amqp")) == "amqp"


@pytest.mark.parametrize("name", DEFAULT_CORRELATION_HEADERS)
def test_default_headers_are_adopted(otel: Telemetry, name: str) -> None:
    assert consumer_cid({name: "foreign-1"}) == "foreign-1"
    assert consumer_cid({name.encode(): b"foreign-2"}) == "foreign-2"  # bytes keys and values
    assert consumer_cid([(name, b"foreign-3")]) == "foreign-3"  # a Kafka-style header list


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "a\r\nInjected: 1", b"\xff\xfe", 12, "x" * 20000, ""])
def test_malformed_foreign_ids_are_replaced_never_trusted(otel: Telemetry, bad: Any) -> None:
    cid = consumer_cid({"x-correlation-id": bad}, properties=AmqpProperties(bad))
    assert cid != bad and len(cid) == 32  # a fresh one
    with pipeline.correlate("outer"):  # or the enclosing scope's
        assert consumer_cid({"correlation_id": bad}, properties={"correlation_id": bad}) == "outer"


def test_header_names_match_case_insensitively_in_list_order(otel: Telemetry) -> None:
    assert consumer_cid({"X-Correlation-Id": "nats-style"}) == "nats-style"
    assert consumer_cid([(b"Correlation-ID", b"kafka-style")]) == "kafka-style"
    # the configured order decides, not the carrier's: correlation_id is listed before x-correlation-id
    assert consumer_cid({"X-CORRELATION-ID": "second", "Correlation_Id": "first"}) == "first"
    assert consumer_cid({"X-Correlation-Id": "bad value", "CORRELATION-ID": "ok"}) == "ok"


def test_a_valid_header_after_an_invalid_one_is_adopted(otel: Telemetry) -> None:
    assert consumer_cid({"correlation_id": "bad value", "x-correlation-id": "good"}) == "good"


def test_hostile_properties_and_carriers_never_raise(otel: Telemetry) -> None:
    assert len(consumer_cid({}, properties=HostileProperties())) == 32
    assert foreign_correlation_id(object(), HostileProperties()) is None
    assert carried_correlation_id(object()) is None


def test_baggage_only_carrier_is_read_without_an_extracted_context() -> None:
    assert carried_correlation_id({"baggage": "correlation_id=from-baggage"}) == "from-baggage"


def test_correlation_headers_setting(monkeypatch: pytest.MonkeyPatch, otel: Telemetry) -> None:
    settings = resolve(environ={"OTELKIT_CORRELATION_HEADERS": "X-Trace-Ref, req_id"})
    assert settings.correlation_headers == ("X-Trace-Ref", "req_id")
    monkeypatch.setattr(_active, "settings", lambda: settings)
    assert correlation_headers() == ("X-Trace-Ref", "req_id")
    assert consumer_cid({"req_id": "r-1"}) == "r-1"
    assert len(consumer_cid({"x-correlation-id": "not-listed"})) == 32
    off = resolve(environ={"OTELKIT_CORRELATION_HEADERS": "none"})
    assert off.correlation_headers == ()
    monkeypatch.setattr(_active, "settings", lambda: off)
    assert consumer_cid({"correlation_id": "c"}, properties=AmqpProperties("amqp")) == "amqp"  # property still read
    assert len(consumer_cid({"correlation_id": "c"})) == 32


@pytest.mark.parametrize("bad", ["a b", "x" * 65, ",", "ok," + "bad name", ",".join(f"h{i}" for i in range(17)),
                                 "é"])
def test_bad_correlation_headers_setting_names_setting_value_and_accepted(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTELKIT_CORRELATION_HEADERS": bad})
    text = str(info.value)
    assert "OTELKIT_CORRELATION_HEADERS" in text
    assert repr(bad)[:60] in text or "characters)" in text
    assert "header names" in text
    with pytest.warns(Warning, match="OTELKIT_CORRELATION_HEADERS"):
        lenient = resolve(environ={"OTELKIT_CORRELATION_HEADERS": bad, "OTELKIT_STRICT": "false"})
    assert lenient.correlation_headers == DEFAULT_CORRELATION_HEADERS


def test_batch_adopts_explicit_shared_foreign_or_enclosing_ids(otel: Telemetry) -> None:
    foreign = [{"x-correlation-id": "f-1"}, {"x-correlation-id": "f-1"}]
    with pipeline.receive_batch("q", foreign, system="redis") as batch:
        assert batch.correlation_id == "f-1"
    with pipeline.receive_batch("q", [{}, {}], system="redis", correlation_id="b-9") as batch:
        assert batch.correlation_id == "b-9"
        assert pipeline.correlation_id() == "b-9"
    with pipeline.correlate("outer"):
        with pipeline.receive_batch("q", [{"x-correlation-id": "a"}, {"x-correlation-id": "b"}],
                                    system="redis") as batch:
            assert batch.correlation_id == "outer"
            assert [m.correlation_id for m in batch.messages] == ["a", "b"]


def _pulled(release_calls: list[Any]) -> Any:
    """A scope as an integration leaves a pulled message (pika basic_get, aio-pika get, NATS fetch): current."""
    from otelkit._pipeline.scopes import Reception

    outer = Reception("q", {"x-correlation-id": "pulled-1"}, system="rabbitmq")
    outer.__enter__()

    def release(scope: Any, exc: BaseException | None) -> None:
        release_calls.append(exc)
        scope._detach()
        scope.__exit__(type(exc) if exc is not None else None, exc, None)

    outer._release = release
    return outer


def test_an_adopted_message_settled_inside_the_block_reports_that_outcome(otel: Telemetry) -> None:
    calls: list[Any] = []
    outer = _pulled(calls)
    with pipeline.receive("q", {}, system="rabbitmq") as msg:
        assert msg.correlation_id == "pulled-1"
        # the application rejects it (the integration's settle: the outcome, the context detached, the span ended)
        outer._set_outcome("dead_letter", "reject(requeue=False)")
        outer._detach()
        outer.__exit__(None, None, None)
    assert calls == [] and msg.outcome == outer.outcome == "dead_letter"
    (span,) = otel.spans("process q")
    assert span.attributes is not None and span.attributes["otelkit.outcome"] == "dead_letter"
    assert pipeline.correlation_id() is None


def test_an_adopted_message_left_unsettled_takes_the_blocks_outcome(otel: Telemetry) -> None:
    calls: list[Any] = []
    outer = _pulled(calls)
    with pytest.raises(TimeoutError), pipeline.receive("q", {}, system="rabbitmq", attempt=2, max_attempts=2) as msg:
        raise TimeoutError("slow")
    assert len(calls) == 1 and msg.outcome == outer.outcome == "dead_letter"
    (span,) = otel.spans("process q")
    assert span.attributes is not None and span.attributes["otelkit.message.attempt"] == 2
    assert pipeline.correlation_id() is None


def test_a_decorated_receive_adopts_like_the_block(otel: Telemetry) -> None:
    calls: list[Any] = []
    outer = _pulled(calls)

    @pipeline.receive("q", carrier=lambda m: m, system="rabbitmq", max_attempts=3)
    def handle(message: dict[str, str]) -> str | None:
        return pipeline.correlation_id()

    assert handle({}) == "pulled-1"
    assert len(calls) == 1 and outer.outcome == "ack" and outer.max_attempts == 3
    assert len(otel.spans("process q")) == 1 and pipeline.correlation_id() is None


@pytest.mark.parametrize("pulled", [True, False], ids=["pulled", "callback"])
def test_an_integrations_own_scope_never_adopts_the_current_one(otel: Telemetry, pulled: bool) -> None:
    """A batch settled out of order (the next message's scope starts while this one is current), or a consumer
    callback / job run of an integration while a pulled message is current: that message's own span and ID."""
    from otelkit._pipeline.scopes import Reception

    calls: list[Any] = []
    first = _pulled(calls)
    second = Reception("q", {"x-correlation-id": "pulled-2"}, system="rabbitmq")
    if pulled:
        second._release = first._release
    second.__enter__()
    assert pipeline.correlation_id() == "pulled-2"
    second._set_outcome("dead_letter", "msg.term()")
    second._detach()
    second.__exit__(None, None, None)
    assert pipeline.correlation_id() == "pulled-1" and calls == []
    first._set_outcome("ack")
    first._detach()
    first.__exit__(None, None, None)
    spans = {s.attributes["otelkit.correlation_id"]: s.attributes["otelkit.outcome"] for s in otel.spans("process q")
             if s.attributes is not None}
    assert spans == {"pulled-1": "ack", "pulled-2": "dead_letter"}


# --- retries re-emitted after receive exits -------------------------------------------------------

def test_retry_of_keeps_id_attempt_and_first_send_time(otel: Telemetry) -> None:
    first_sent = time.time() - 3600.0  # the first attempt was emitted an hour ago
    headers = {"otelkit-correlation-id": "order-1", SENT_AT_HEADER: f"{first_sent * 1000.0:.3f}"}
    retry_headers: dict[str, str] = {}
    try:
        with pipeline.receive("jobs", headers, system="redis") as msg:
            raise TimeoutError("upstream timed out")
    except TimeoutError:
        # after the block: the failure log line and the re-publication keep the ID
        with pipeline.emit("jobs", retry_headers, system="redis", retry_of=msg) as again:
            assert pipeline.correlation_id() == "order-1"
            assert again.correlation_id == "order-1"
    assert msg.outcome == "retry"
    assert retry_headers["otelkit-correlation-id"] == "order-1"
    assert retry_headers[ATTEMPT_HEADER] == "2"
    assert float(retry_headers[SENT_AT_HEADER]) == pytest.approx(first_sent * 1000.0, abs=1.0)
    assert float(retry_headers[ENQUEUED_AT_HEADER]) > first_sent * 1000.0 + 3_000_000

    failed = otel.spans("process jobs")[0]
    send = otel.span("send jobs")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == failed.context.span_id  # the failed attempt's trace
    assert send.context.trace_id == failed.context.trace_id
    assert send.attributes[ATTR_ATTEMPT] == 2

    with pipeline.receive("jobs", retry_headers, system="redis") as second:
        assert second.correlation_id == "order-1"
        assert second.attempt == 2
    assert second.sent_at == pytest.approx(first_sent, abs=0.01)
    assert otel.spans("process jobs")[1].attributes[ATTR_ATTEMPT] == 2
    e2e = otel.points(E2E)[0]
    in_queue = otel.points(IN_QUEUE)[0]
    assert e2e.count == 2 and e2e.min >= 3600.0  # both attempts' latency counts from the first emission
    assert in_queue.count == 2 and in_queue.min < 3600.0  # queue time of the retry starts at its re-publication


def test_retry_inside_a_span_links_the_failed_attempt_and_counts_on(otel: Telemetry) -> None:
    with pipeline.receive("jobs", {ATTEMPT_HEADER: "4", "otelkit-correlation-id": "c-4"}, system="redis") as msg:
        pass
    with pipeline.stage("requeue"):
        with pipeline.emit("jobs", system="redis", retry_of=msg) as again:
            pass
    send = otel.span("send jobs")
    assert [link.context.span_id for link in send.links] == [otel.span("process jobs").context.span_id]
    assert again.headers[ATTEMPT_HEADER] == "5"
    assert again.correlation_id == "c-4"


def test_retry_of_a_batch_message_and_of_junk(otel: Telemetry) -> None:
    with pipeline.receive_batch("q", [{"otelkit-correlation-id": "m-1"}], system="redis") as batch:
        pass
    with pipeline.emit("q", system="redis", retry_of=batch.messages[0]) as again:
        pass
    assert again.correlation_id == "m-1" and again.headers[ATTEMPT_HEADER] == "2"
    with pipeline.emit("q", system="redis", retry_of=object()) as junk:  # never raises: a plain emission + attempt 2
        pass
    assert junk.correlation_id is not None and junk.headers[ATTEMPT_HEADER] == "2"


# --- message IDs and attributes -------------------------------------------------------------------

def test_emit_message_id_reaches_the_consumer(otel: Telemetry) -> None:
    headers: dict[str, str] = {}
    with pipeline.emit("q", headers, system="nats", message_id="evt-1"):
        pass
    assert headers[MESSAGE_ID_HEADER] == "evt-1"
    with pipeline.receive("q", headers, system="nats") as msg:
        assert msg.message_id == "evt-1"
    assert otel.span("process q").attributes["messaging.message.id"] == "evt-1"
    # a broker-given ID passed to receive wins
    with pipeline.receive("q", headers, system="nats", message_id="broker-9") as msg:
        assert msg.message_id == "broker-9"


def test_message_id_set_before_wrap_travels_in_the_envelope(otel: Telemetry) -> None:
    with pipeline.emit("q", system="redis") as out:
        out.message_id = 17
        raw = out.wrap({"n": 1})
    with pipeline.receive("q", raw, system="redis") as msg:
        assert msg.message_id == "17" and msg.payload == {"n": 1}


def test_amqp_message_id_property(otel: Telemetry) -> None:
    with pipeline.receive("q", {}, system="rabbitmq", properties=AmqpProperties(message_id="amqp-m")) as msg:
        assert msg.message_id == "amqp-m"


def test_batch_message_ids_from_headers(otel: Telemetry) -> None:
    with pipeline.receive_batch("q", [{MESSAGE_ID_HEADER: "a"}, {}], system="redis", message_ids=[None, "b"]) as b:
        assert [m.message_id for m in b.messages] == ["a", "b"]


def test_server_and_rabbitmq_attributes(otel: Telemetry) -> None:
    with pipeline.emit("orders", system="rabbitmq", server_address="mq.local", server_port=5672,
                       routing_key="orders.eu"):
        pass
    with pipeline.receive("orders", {}, system="rabbitmq", server_address="mq.local", server_port="5672",
                          routing_key="orders.eu", delivery_tag=7):
        pass
    send, process = otel.span("send orders"), otel.span("process orders")
    for span in (send, process):
        assert span.attributes["server.address"] == "mq.local"
        assert span.attributes["server.port"] == 5672
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == "orders.eu"
    assert process.attributes["messaging.rabbitmq.message.delivery_tag"] == 7
    assert "messaging.rabbitmq.message.delivery_tag" not in send.attributes
    with pipeline.receive("t", {}, system="nats", routing_key="k", delivery_tag=3, server_port=99999):
        pass
    attrs = otel.span("process t").attributes
    assert not any(k.startswith("messaging.rabbitmq") for k in attrs)  # RabbitMQ attributes only for RabbitMQ
    assert "server.port" not in attrs  # out of range


def test_decorated_receive_keeps_the_new_arguments(otel: Telemetry) -> None:
    @pipeline.receive("q", carrier="headers", system="rabbitmq", correlation_id="deco-1", routing_key="rk")
    def handle(headers: dict[str, str]) -> str | None:
        return pipeline.correlation_id()

    assert handle({}) == "deco-1"
    assert otel.span("process q").attributes["messaging.rabbitmq.destination.routing_key"] == "rk"


# --- which receive adopts a pulled message (the integration's scope) ---------------------------------

def _pulled_with_id(message_id: str = "m-1") -> Any:
    """A scope made as the broker integrations make a pulled message's: entered, with a release hook."""
    from otelkit._pipeline.scopes import Reception

    scope = Reception("orders.created", {"otelkit-correlation-id": "pulled-cid"}, system="rabbitmq",
                      message_id=message_id)
    scope.__enter__()

    def release(pulled: Any, exc: BaseException | None) -> None:
        pulled.__exit__(type(exc) if exc is not None else None, exc, None)

    scope._release = release
    return scope


@pytest.mark.parametrize(("kwargs", "adopted"), [
    ({"message_id": "m-1"}, True),  # its message ID, under another destination name (the queue)
    ({"properties": AmqpProperties(message_id="m-1")}, True),  # its message ID in the AMQP properties
    ({"message_id": "m-2"}, False),  # another message ID, another destination, no headers: another message
    ({"properties": AmqpProperties(message_id="m-2")}, False),
    ({}, False),  # nothing to compare: another destination is another message
])
def test_a_receive_adopts_the_pulled_message_by_its_message_id(otel: Telemetry, kwargs: dict[str, Any],
                                                               adopted: bool) -> None:
    pulled = _pulled_with_id()
    try:
        with pipeline.receive("orders", None, system="rabbitmq", **kwargs) as msg:
            assert (msg.span is pulled.span) == adopted
            assert msg.correlation_id == "pulled-cid"  # adopted, or the current one (no carried ID)
        if not adopted:
            assert pipeline.correlation_id() == "pulled-cid"  # the pulled message is current again
    finally:
        if pulled._cv_token is not None:  # not settled by an adopting block: never left current for the next test
            pulled.__exit__(None, None, None)
    assert pipeline.correlation_id() is None
    assert len(otel.spans("process orders.created")) == 1
    assert len(otel.spans("process orders")) == (0 if adopted else 1)


@pytest.mark.parametrize("bad", ["x" * 65, "a b"])
def test_bad_correlation_header_setting_is_refused_with_its_limit(bad: str) -> None:
    # The single-header setting once matched against the multi-header pattern (no 64-character limit).
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTELKIT_CORRELATION_HEADER": bad})
    assert "OTELKIT_CORRELATION_HEADER" in str(info.value) and "at most 64 characters" in str(info.value)
    assert resolve(environ={"OTELKIT_CORRELATION_HEADER": "x" * 64}).correlation_header == "x" * 64
