"""emit / receive / receive_batch / stage: spans, links, correlation, outcomes, metrics (in-memory SDK)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _pipeline_support import Telemetry, in_memory_providers
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

import otelkit
from otelkit import _errors, pipeline
from otelkit._correlation import is_valid_correlation_id
from otelkit._names import (
    ATTEMPT_HEADER,
    ATTR_ATTEMPT,
    ATTR_ERROR_CLASS,
    ATTR_LINKS_DROPPED,
    ATTR_OUTCOME,
    CORRELATION_ATTRIBUTE,
    CORRELATION_HEADER,
    SENT_AT_HEADER,
)


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


SENT = "messaging.client.sent.messages"
CONSUMED = "messaging.client.consumed.messages"
OP_DURATION = "messaging.client.operation.duration"
PROCESS_DURATION = "messaging.process.duration"
E2E = "otelkit.messaging.message.end_to_end.duration"
IN_QUEUE = "otelkit.messaging.message.time_in_queue"
SETTLED = "otelkit.messaging.settled.messages"


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[BaseException, Any, dict[str, object]]]]:
    calls: list[tuple[BaseException, Any, dict[str, object]]] = []

    def record(exc: BaseException, span: Any = None, *, context: Any = None) -> None:
        calls.append((exc, span, dict(context or {})))

    monkeypatch.setattr(_errors, "report_exception", record)
    yield calls


def emitted(destination: str = "q", **kwargs: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    with pipeline.emit(destination, headers, system="redis", **kwargs):
        pass
    return headers


# --- emission ---------------------------------------------------------------------------------------

def test_emit_producer_span_and_injected_headers(otel: Telemetry) -> None:
    fields = {"token": "abc"}
    with pipeline.emit("tokens", fields, system="redis") as msg:
        msg.message_id = b"1-0"  # what XADD returns
        assert otelkit.correlation_id() == msg.correlation_id
    span = otel.span("send tokens")
    assert span.kind is SpanKind.PRODUCER
    attrs = span.attributes or {}
    assert attrs["messaging.system"] == "redis"
    assert attrs["messaging.destination.name"] == "tokens"
    assert attrs["messaging.operation.type"] == "send"
    assert attrs["messaging.operation.name"] == "send"
    assert attrs["messaging.message.id"] == "1-0"
    assert attrs["messaging.message.conversation_id"] == msg.correlation_id == attrs[CORRELATION_ATTRIBUTE]
    assert fields["token"] == "abc"
    assert fields["traceparent"].split("-")[1] == format(span.context.trace_id, "032x")
    assert fields["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
    assert f"correlation_id={msg.correlation_id}" in fields["baggage"]
    assert fields[CORRELATION_HEADER] == msg.correlation_id
    assert abs(float(fields[SENT_AT_HEADER]) / 1000 - time.time()) < 60
    assert otel.point(SENT, **{"messaging.destination.name": "tokens"}).value == 1
    assert otel.point(OP_DURATION, **{"messaging.destination.name": "tokens"}).count == 1
    assert otelkit.correlation_id() is None  # the emission scope is closed



def test_emit_message_id_given_up_front_and_replaced_inside(otel: Telemetry) -> None:
    # Given up front, the ID is on the span from the start (not set again at the end); one the broker assigns
    # inside the block is what the span ends with.
    with pipeline.emit("ids-a", {}, system="redis", message_id="m-1"):
        pass
    with pipeline.emit("ids-b", {}, system="redis", message_id="m-1") as msg:
        msg.message_id = "m-2"
    with pipeline.emit("ids-c", {}, system="redis", message_id=7):
        pass
    assert (otel.span("send ids-a").attributes or {})["messaging.message.id"] == "m-1"
    assert (otel.span("send ids-b").attributes or {})["messaging.message.id"] == "m-2"
    assert (otel.span("send ids-c").attributes or {})["messaging.message.id"] == "7"

def test_emit_kafka_headers_are_bytes(otel: Telemetry) -> None:
    headers: list[tuple[str, bytes]] = [("app", b"1")]
    with pipeline.emit("topic", headers, system="kafka"):
        pass
    keys = [k for k, _ in headers]
    assert keys[0] == "app" and "traceparent" in keys and "baggage" in keys
    assert all(isinstance(v, bytes) for _, v in headers)


def test_emit_without_carrier_gives_headers_and_envelope(otel: Telemetry) -> None:
    with pipeline.emit("list", system="redis") as msg:
        raw = msg.wrap({"token": "abc"})
    assert "traceparent" in msg.headers
    with pipeline.receive("list", raw.encode(), system="redis") as rec:
        assert rec.payload == {"token": "abc"}
        assert rec.correlation_id == msg.correlation_id


def test_emit_keeps_the_current_correlation_id_and_accepts_an_explicit_one(otel: Telemetry) -> None:
    with pipeline.correlate("batch-7"):
        assert emitted()[CORRELATION_HEADER] == "batch-7"
    assert emitted(correlation_id="forced")[CORRELATION_HEADER] == "forced"
    fresh = emitted(correlation_id="bad id with spaces")[CORRELATION_HEADER]
    assert is_valid_correlation_id(fresh) and fresh != "bad id with spaces"


def test_each_first_emission_gets_its_own_id(otel: Telemetry) -> None:
    assert emitted()[CORRELATION_HEADER] != emitted()[CORRELATION_HEADER]


def test_emit_failure_is_recorded_and_reraised(otel: Telemetry) -> None:
    with pytest.raises(ConnectionError), pipeline.emit("q", {}, system="redis"):
        raise ConnectionError("broker down")
    span = otel.span("send q")
    assert span.status.status_code is StatusCode.ERROR
    assert otel.point(SENT, **{"error.type": "ConnectionError"}).value == 1


def test_emit_wrong_carrier_type_never_raises(otel: Telemetry) -> None:
    # A telemetry call: one warning (test_bad_input_pipeline.py), the span recorded, the context in msg.headers.
    with pipeline.emit("q", ("a",), system="redis") as msg:
        assert isinstance(msg.headers, dict) and "traceparent" in msg.headers
    assert trace.get_current_span() is trace.INVALID_SPAN


# --- reception ----------------------------------------------------------------------------------------

def test_receive_is_a_root_span_linked_to_the_producer(otel: Telemetry) -> None:
    headers = emitted("tokens")
    producer = otel.span("send tokens")
    with pipeline.receive("tokens", headers, system="redis", message_id="m1", group="workers") as msg:
        assert msg.producer is not None and msg.producer.span_id == producer.context.span_id
    span = otel.span("process tokens")
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None
    assert [link.context.span_id for link in span.links] == [producer.context.span_id]
    attrs = span.attributes or {}
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.message.id"] == "m1"
    assert attrs["messaging.consumer.group.name"] == "workers"
    assert attrs["messaging.message.conversation_id"] == headers[CORRELATION_HEADER]
    assert attrs[ATTR_OUTCOME] == "ack"
    labels = {"messaging.destination.name": "tokens", "messaging.consumer.group.name": "workers"}
    assert otel.point(CONSUMED, **labels).value == 1
    assert otel.point(PROCESS_DURATION, **labels).count == 1
    assert otel.point(SETTLED, **labels, **{ATTR_OUTCOME: "ack"}).value == 1
    assert otel.point(E2E, **labels).count == 1
    assert otel.point(IN_QUEUE, **labels).count == 1


def test_parent_producer_and_current(otel: Telemetry) -> None:
    headers = emitted()
    producer = otel.span("send q").context
    with pipeline.receive("q", headers, system="redis", parent="producer"):
        pass
    child = otel.span("process q")
    assert child.parent is not None and child.parent.span_id == producer.span_id
    assert child.context.trace_id == producer.trace_id
    assert [link.context.span_id for link in child.links] == [producer.span_id]
    otel.exporter.clear()
    with trace.get_tracer("t").start_as_current_span("http request") as outer:
        with pipeline.receive("q", headers, system="redis", parent="current"):
            pass
    span = otel.span("process q")
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert [link.context.span_id for link in span.links] == [producer.span_id]


def test_endless_consumer_loop_does_not_grow_one_trace(otel: Telemetry) -> None:
    messages = [emitted("loop") for _ in range(20)]
    tracer = trace.get_tracer("t")
    with tracer.start_as_current_span("consumer loop") as loop:
        for headers in messages:
            with pipeline.receive("loop", headers, system="redis"), tracer.start_as_current_span("work"):
                pass
    loop_trace = loop.get_span_context().trace_id
    processed = otel.spans("process loop")
    assert len(processed) == 20
    assert all(span.parent is None for span in processed)
    assert len({span.context.trace_id for span in processed}) == 20
    assert loop_trace not in {span.context.trace_id for span in processed}
    assert len({span.context.trace_id for span in otel.spans("work")}) == 20


def test_correlation_reaches_children_logs_http_and_further_emits(otel: Telemetry,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    headers = emitted("first")
    cid = headers[CORRELATION_HEADER]
    seen: list[str | None] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(otelkit._correlation.get_correlation_id())  # what the logs engineer's factory reads

    logger = logging.getLogger("test.pipeline.correlation")
    handler = Capture()
    logger.addHandler(handler)
    try:
        with pipeline.receive("first", headers, system="redis") as msg:
            assert msg.correlation_id == cid == otelkit.correlation_id()
            with trace.get_tracer("t").start_as_current_span("db write"):
                logger.warning("writing")
            outgoing: dict[str, str] = {}
            propagate.inject(outgoing)  # what the httpx instrumentation does for an outgoing request
            onward = emitted("second")
    finally:
        logger.removeHandler(handler)
    assert seen == [cid]
    assert f"correlation_id={cid}" in outgoing["baggage"]
    assert onward[CORRELATION_HEADER] == cid
    for name in ("send first", "process first", "db write", "send second"):
        assert otel.span(name).attributes[CORRELATION_ATTRIBUTE] == cid
    assert otel.span("send second").parent.span_id == otel.span("process first").context.span_id


def test_other_baggage_entries_travel_too(otel: Telemetry) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        headers = emitted()
    finally:
        otel_context.detach(token)
    with pipeline.receive("q", headers, system="redis"):
        assert baggage.get_baggage("tenant") == "acme"


BAD_CARRIERS: list[Any] = [
    None,
    {},
    {"traceparent": "garbage"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},  # forbidden version
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # zero trace id
    {"traceparent": b"\xff\xfe\xfd", "baggage": b"\x00\xff binary"},
    {"traceparent": 12345, "baggage": ["not", "a", "string"], CORRELATION_HEADER: 99},
    {"baggage": "correlation_id=" + "x" * 10_000},
    {CORRELATION_HEADER: "y" * 10_000},
    {"baggage": "correlation_id=has%20space"},
    {"baggage": "=;=;,,,;;" * 50},
    {"uber-trace-id": "abc:def:0:1", "X-B3-TraceId": "foreign"},  # another vendor's headers
    [("traceparent", None), (b"baggage", 7)],
    [1, 2, 3],
    12,
    object(),
    b"not an envelope",
    "legacy text",
]


@pytest.mark.parametrize("carrier", BAD_CARRIERS)
def test_malformed_or_foreign_carriers_start_a_fresh_trace(otel: Telemetry, carrier: Any) -> None:
    with pipeline.receive("q", carrier, system="redis") as msg:
        assert msg.producer is None
        assert is_valid_correlation_id(msg.correlation_id)
        assert otelkit.correlation_id() == msg.correlation_id
    span = otel.span("process q")
    assert span.parent is None and not span.links
    assert span.attributes[CORRELATION_ATTRIBUTE] == msg.correlation_id


def test_fresh_correlation_ids_differ_per_message(otel: Telemetry) -> None:
    ids = set()
    for _ in range(5):
        with pipeline.receive("q", {}, system="redis") as msg:
            ids.add(msg.correlation_id)
    assert len(ids) == 5


def test_clear_correlation_header_is_used_without_baggage(otel: Telemetry) -> None:
    with pipeline.receive("q", {CORRELATION_HEADER: "from-a-node-service"}, system="redis") as msg:
        assert msg.correlation_id == "from-a-node-service"


def test_latency_from_header_is_clamped_and_stream_id_is_a_fallback(otel: Telemetry) -> None:
    future = {SENT_AT_HEADER: str((time.time() + 3600) * 1000)}  # a producer whose clock runs ahead
    with pipeline.receive("skew", future, system="redis"):
        pass
    assert otel.point(E2E, **{"messaging.destination.name": "skew"}).min == 0.0
    old_ms = int((time.time() - 5) * 1000)
    with pipeline.receive("stream", {}, system="redis", message_id=f"{old_ms}-0".encode()) as msg:
        assert msg.sent_at == old_ms / 1000
    assert otel.point(E2E, **{"messaging.destination.name": "stream"}).min >= 5.0
    with pipeline.receive("nodate", {SENT_AT_HEADER: "nan"}, system="redis") as msg:
        assert msg.sent_at is None
    assert otel.points(E2E) and not [p for p in otel.points(E2E)
                                     if p.attributes["messaging.destination.name"] == "nodate"]


# --- outcomes, retries, dead letters, error reporting ----------------------------------------------------

def test_permanent_failure_goes_to_dead_letter_and_is_reported_once(otel: Telemetry, reports: list[Any]) -> None:
    headers = emitted()
    with pytest.raises(KeyError), pipeline.receive("q", headers, system="redis", message_id="7", attempt=1) as msg:
        with pipeline.stage("enrich", source="jupiter"):
            raise KeyError("price")
    assert msg.outcome == "dead_letter"
    span = otel.span("process q")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[ATTR_ERROR_CLASS] == "permanent"
    assert span.attributes["error.type"] == "KeyError"
    # Once per scope it passed through, each with its own span (report_exception dedups Sentry events).
    assert [(type(exc), span.name) for exc, span, _ in reports] == [(KeyError, "enrich"), (KeyError, "process q")]
    assert reports[0][0] is reports[1][0]
    context = reports[1][2]
    assert context["destination"] == "q" and context["message_id"] == "7" and context["attempt"] == 1
    assert context["correlation_id"] == headers[CORRELATION_HEADER]
    assert reports[0][2]["message_id"] == "7" and reports[0][2]["stage"] == "enrich"
    assert otel.point(SETTLED, **{ATTR_OUTCOME: "dead_letter"}).value == 1
    assert otel.point(PROCESS_DURATION, **{"error.type": "KeyError", ATTR_ERROR_CLASS: "permanent"}).count == 1
    stage_failures = otel.point("otelkit.pipeline.processed.items", **{ATTR_OUTCOME: "failure"})
    assert stage_failures.attributes["otelkit.pipeline.source"] == "jupiter"


def test_transient_failure_is_retried_until_max_attempts(otel: Telemetry, reports: list[Any]) -> None:
    outcomes = []
    for attempt in (1, 2, 3):
        with pytest.raises(TimeoutError):
            with pipeline.receive("q", {}, system="redis", attempt=attempt, max_attempts=3) as msg:
                raise TimeoutError("api slow")
        outcomes.append(msg.outcome)
    assert outcomes == ["retry", "retry", "dead_letter"]
    assert [s.attributes[ATTR_ATTEMPT] for s in otel.spans("process q")] == [1, 2, 3]
    assert otel.point(SETTLED, **{ATTR_OUTCOME: "retry"}).value == 2
    assert len(reports) == 3 and reports[0][2]["attempt"] == 1


def test_explicit_outcomes_win(otel: Telemetry, reports: list[Any]) -> None:
    with pipeline.receive("q", {}, system="redis") as msg:
        msg.retry("rate limited")
    with pipeline.receive("q", {}, system="redis") as msg:
        msg.dead_letter("schema invalid")
    with pytest.raises(ValueError), pipeline.receive("q", {}, system="redis") as msg:
        msg.retry("try once more anyway")
        raise ValueError("bad")
    with pipeline.receive("q", {}, system="redis") as msg:
        msg.drop("duplicate")
    retry, dead, failed, dropped = otel.spans("process q")
    assert dropped.attributes[ATTR_OUTCOME] == "drop" and dropped.status.status_code is StatusCode.UNSET
    assert otel.point(SETTLED, **{ATTR_OUTCOME: "drop"}).value == 1
    assert retry.attributes[ATTR_OUTCOME] == "retry" and retry.status.status_code is StatusCode.UNSET
    assert retry.attributes["otelkit.outcome.reason"] == "rate limited"
    assert dead.attributes[ATTR_OUTCOME] == "dead_letter" and dead.status.status_code is StatusCode.ERROR
    assert failed.attributes[ATTR_OUTCOME] == "retry"
    assert len(reports) == 1


def test_attempt_travels_in_the_carrier_on_republish(otel: Telemetry) -> None:
    headers = emitted(attempt=3)
    assert headers[ATTEMPT_HEADER] == "3"
    with pipeline.receive("q", headers, system="redis") as msg:
        assert msg.attempt == 3
    with pipeline.receive("q", {ATTEMPT_HEADER: "0"}, system="redis") as msg:
        assert msg.attempt is None


def test_failure_classifier_defaults_and_override() -> None:
    class Status(Exception):
        def __init__(self, code: int) -> None:
            self.response = type("R", (), {"status_code": code})()

    class RedisLike(Exception):
        pass

    ConnError = type("ConnectionError", (RedisLike,), {})  # redis.exceptions.ConnectionError by name
    assert pipeline.classify_failure(TimeoutError()) == "transient"
    assert pipeline.classify_failure(ConnectionResetError()) == "transient"
    assert pipeline.classify_failure(ConnError()) == "transient"
    assert pipeline.classify_failure(Status(503)) == "transient"
    assert pipeline.classify_failure(Status(429)) == "transient"
    assert pipeline.classify_failure(Status(404)) == "permanent"
    assert pipeline.classify_failure(ValueError()) == "permanent"
    assert pipeline.classify_failure(KeyError()) == "permanent"
    assert pipeline.classify_failure(RuntimeError()) == "permanent"
    flagged = RuntimeError()
    flagged.transient = True  # type: ignore[attr-defined]
    assert pipeline.classify_failure(flagged) == "transient"
    try:
        pipeline.set_failure_classifier(lambda exc: "transient" if isinstance(exc, RuntimeError) else None)
        assert pipeline.classify_failure(RuntimeError()) == "transient"
        assert pipeline.classify_failure(ValueError()) == "permanent"  # None falls back to the defaults
        pipeline.set_failure_classifier(lambda exc: 1 / 0)  # type: ignore[arg-type,return-value]
        assert pipeline.classify_failure(TimeoutError()) == "transient"
    finally:
        pipeline.set_failure_classifier(None)


# --- batches ----------------------------------------------------------------------------------------------

def test_batch_links_each_message(otel: Telemetry) -> None:
    with pipeline.correlate("shared"):
        batch = [emitted("b") for _ in range(3)]
    producers = [s.context.span_id for s in otel.spans("send b")]
    with pipeline.receive_batch("b", batch + [{}], system="redis", message_ids=["1", "2", "3", "4"]) as msg:
        assert [m.message_id for m in msg.messages] == ["1", "2", "3", "4"]
        fresh_cid = msg.correlation_id
    span = otel.span("process b")
    assert span.attributes["messaging.batch.message_count"] == 4
    assert [link.context.span_id for link in span.links] == producers
    assert [link.attributes["messaging.message.id"] for link in span.links] == ["1", "2", "3"]
    assert fresh_cid != "shared"  # the fourth message carried no ID: mixed batch, fresh batch ID
    assert otel.point("otelkit.messaging.batch.size").sum == 4
    assert otel.point(CONSUMED).value == 4
    assert otel.point(E2E).count == 3


def test_batch_with_one_correlation_id_runs_under_it(otel: Telemetry) -> None:
    with pipeline.correlate("shared"):
        batch = [emitted("b") for _ in range(2)]
    with pipeline.receive_batch("b", batch, system="redis") as msg:
        assert otelkit.correlation_id() == "shared" == msg.correlation_id


def test_batch_links_are_capped(otel: Telemetry) -> None:
    batch = [emitted("big") for _ in range(10)]
    with pipeline.receive_batch("big", batch, system="redis", max_links=4):
        pass
    span = otel.span("process big")
    assert len(span.links) == 4
    assert span.attributes[ATTR_LINKS_DROPPED] == 6
    assert span.attributes["messaging.batch.message_count"] == 10


def test_batch_of_envelopes_and_failure(otel: Telemetry, reports: list[Any]) -> None:
    raws = []
    for i in range(3):
        with pipeline.emit("env", system="redis") as m:
            raws.append(m.wrap(f"item-{i}").encode())
    with pytest.raises(ConnectionError), pipeline.receive_batch("env", raws, system="redis") as msg:
        assert [m.payload for m in msg.messages] == ["item-0", "item-1", "item-2"]
        raise ConnectionError("db down")
    assert otel.point(SETTLED, **{ATTR_OUTCOME: "retry"}).value == 3
    assert reports[0][2]["batch_size"] == 3


# --- decorators and async ---------------------------------------------------------------------------------

def test_sync_decorators(otel: Telemetry) -> None:
    @pipeline.emit("dec", carrier="fields", system="redis")
    def publish(stream: str, fields: dict[str, str]) -> dict[str, str]:
        return fields

    @pipeline.receive("dec", carrier=lambda entry_id, fields: fields, system="redis",
                      message_id=lambda entry_id, fields: entry_id)
    def handle(entry_id: bytes, fields: dict[bytes, bytes]) -> str | None:
        current = pipeline.current_message()
        assert current is not None and current.message_id == entry_id.decode()
        return otelkit.correlation_id()

    sent = publish("dec", {"k": "v"})
    as_redis = {k.encode(): v.encode() for k, v in sent.items()}
    assert handle(b"5-0", as_redis) == sent[CORRELATION_HEADER]
    assert handle.__name__ == "handle"
    process = otel.span("process dec")
    assert process.links[0].context.span_id == otel.span("send dec").context.span_id


def test_decorator_argument_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="not a parameter of"):
        @pipeline.receive("q", carrier="headers", system="redis")
        def handle(message: object) -> None: ...

    with pytest.raises(TypeError, match="generator"):
        @pipeline.stage("s")
        def gen() -> Iterator[int]:
            yield 1


def test_async_consumers_keep_their_own_correlation(otel: Telemetry) -> None:
    messages = [emitted("aq") for _ in range(10)]

    @pipeline.receive("aq", carrier="headers", system="nats")
    async def handle(headers: dict[str, str]) -> tuple[str | None, str]:
        await asyncio.sleep(0)  # interleave the tasks
        with pipeline.stage("enrich"):
            await asyncio.sleep(0)
        return otelkit.correlation_id(), headers[CORRELATION_HEADER]

    async def main() -> list[tuple[str | None, str]]:
        results = list(await asyncio.gather(*(handle(h) for h in messages)))
        async with pipeline.receive("aq", messages[0], system="nats") as msg:
            await asyncio.sleep(0)
            results.append((otelkit.correlation_id(), msg.correlation_id or ""))
        return results

    results = asyncio.run(main())
    assert all(seen == sent for seen, sent in results)
    assert len({seen for seen, _ in results[:10]}) == 10
    for stage in otel.spans("enrich"):
        parent = [s for s in otel.spans("process aq") if s.context.span_id == stage.parent.span_id][0]
        assert stage.attributes[CORRELATION_ATTRIBUTE] == parent.attributes[CORRELATION_ATTRIBUTE]


def test_async_failure_outcome(otel: Telemetry, reports: list[Any]) -> None:
    @pipeline.receive("aq", carrier="headers", system="nats")
    async def handle(headers: dict[str, str]) -> None:
        raise ValueError("bad payload")

    with pytest.raises(ValueError):
        asyncio.run(handle({}))
    assert otel.span("process aq").attributes[ATTR_OUTCOME] == "dead_letter"
    assert len(reports) == 1


# --- stages -------------------------------------------------------------------------------------------------

def test_stage_span_and_metrics_with_variant(otel: Telemetry) -> None:
    with pipeline.stage("discover", source="helius", variant="B") as st:
        st.count(48)
        st.count(2, outcome="failure")

    @pipeline.stage("persist", source="postgres")
    def persist() -> None:
        pass

    persist()
    pipeline.discovered(48, source="helius", variant="B")
    span = otel.span("discover")
    assert span.attributes["otelkit.pipeline.variant"] == "B"
    items = "otelkit.pipeline.processed.items"
    assert otel.point(items, **{"otelkit.pipeline.stage": "discover", ATTR_OUTCOME: "success"}).value == 48
    assert otel.point(items, **{"otelkit.pipeline.stage": "discover", ATTR_OUTCOME: "failure"}).value == 2
    assert otel.point(items, **{"otelkit.pipeline.stage": "persist"}).value == 1
    duration = otel.point("otelkit.pipeline.stage.duration", **{"otelkit.pipeline.stage": "discover"})
    assert duration.attributes["otelkit.pipeline.variant"] == "B"
    assert otel.point("otelkit.pipeline.discovered.items").value == 48


def test_stage_outside_a_message_reports_with_its_own_context(otel: Telemetry, reports: list[Any]) -> None:
    with pytest.raises(ConnectionError), pipeline.correlate("c-1"), pipeline.stage("enrich", source="dex"):
        raise ConnectionError("down")
    assert reports[0][2] == {"stage": "enrich", "source": "dex", "variant": None, "correlation_id": "c-1"}
    assert otel.span("enrich").attributes[ATTR_ERROR_CLASS] == "transient"


def test_real_report_exception_records_one_event_across_scopes(otel: Telemetry) -> None:
    with pytest.raises(ValueError), pipeline.receive("q", {}, system="redis"), pipeline.stage("enrich"):
        raise ValueError("bad")
    spans = [otel.span("enrich"), otel.span("process q")]
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    events = [e for s in spans for e in s.events if e.name == "exception"]
    assert len(events) == 1 and events[0].attributes["exception.type"] == "ValueError"


def test_a_broken_propagator_never_reaches_the_application(otel: Telemetry) -> None:
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Broken(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            raise RuntimeError("third-party propagator bug")

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            raise RuntimeError("third-party propagator bug")

        @property
        def fields(self) -> set[str]:
            return set()

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(Broken())
    try:
        with pipeline.emit("q", {}, system="redis") as sent:
            ran = True
        with pipeline.receive("q", sent.headers, system="redis") as msg:
            assert msg.producer is None
            # The clear correlation header still carries the ID when the propagator cannot.
            assert msg.correlation_id == sent.correlation_id
    finally:
        propagate.set_global_textmap(previous)
    assert ran and len(otel.spans()) == 2


def test_latency_histograms_carry_exemplars_of_the_message_trace(otel: Telemetry) -> None:
    headers = emitted("ex")
    with pipeline.receive("ex", headers, system="redis"):
        pass
    process = otel.span("process ex").context
    send = otel.span("send ex").context
    data = otel.reader.get_metrics_data()  # exemplars are reset at each collection: collect once
    assert data is not None
    points = {m.name: m.data.data_points[0] for rm in data.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}
    for metric, span in ((E2E, process), (PROCESS_DURATION, process), (IN_QUEUE, process), (OP_DURATION, send)):
        exemplars = points[metric].exemplars
        assert [(e.trace_id, e.span_id) for e in exemplars] == [(span.trace_id, span.span_id)], metric


def test_a_message_without_headers_gets_a_fresh_correlation_id_and_no_producer(otel: Telemetry) -> None:
    with pipeline.receive("q-bare", {}, system="rabbitmq", attempt=1) as msg:
        cid = otelkit.correlation_id()
    assert msg.producer is None and msg.sent_at is None and msg.message_id is None
    assert cid is not None and is_valid_correlation_id(cid) and msg.correlation_id == cid
    (span,) = [s for s in otel.spans() if s.name == "process q-bare"]
    assert span.parent is None and not span.links
    assert span.attributes["messaging.message.conversation_id"] == cid
    assert span.attributes[ATTR_ATTEMPT] == 1
    assert otelkit.correlation_id() is None


def test_no_points_without_a_meter_provider_and_a_provider_set_mid_message_gets_that_message(otel: Telemetry) -> None:
    """With the no-op meter provider the scopes skip their metric calls; a provider set while a message is handled
    (or before the next emit) records it: no point is lost to the skip."""
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.metrics import _internal as metrics_internal

    from otelkit._pipeline.instruments import instruments

    provider = metrics_internal._METER_PROVIDER
    # Assigned and restored here, not with monkeypatch: an autouse fixture may have set monkeypatch up before
    # `otel`, and its undo would then run after `otel` restored the process's provider.
    metrics_internal._METER_PROVIDER = NoOpMeterProvider()
    try:
        headers: dict[str, str] = {}
        with pipeline.emit("q-live", headers, system="redis"):
            pass
        with pipeline.receive("q-live", dict(headers), system="redis"):
            pass
        assert instruments().live is False
        assert otel.points(SENT) == [] and otel.points(CONSUMED) == []
        with pipeline.receive("q-live", dict(headers), system="redis"):
            metrics_internal._METER_PROVIDER = provider  # set while this message is being handled
        with pipeline.emit("q-live", {}, system="redis"):
            pass
        assert instruments().live is True
    finally:
        metrics_internal._METER_PROVIDER = provider
    assert otel.point(CONSUMED, **{"messaging.destination.name": "q-live"}).value == 1
    assert otel.point(SETTLED, **{"messaging.destination.name": "q-live"}).value == 1
    assert otel.point(E2E, **{"messaging.destination.name": "q-live"}).count == 1
    assert otel.point(SENT, **{"messaging.destination.name": "q-live"}).value == 1
    assert [s.name for s in otel.spans()].count("process q-live") == 2


def _slots(scope: object) -> dict[str, Any]:
    names = [name for klass in type(scope).__mro__ for name in getattr(klass, "__slots__", ())]
    return {name: getattr(scope, name) for name in names}  # an unset slot raises AttributeError here


@pytest.mark.parametrize("carrier", [None, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}])
def test_the_delivery_constructor_makes_what_the_constructor_makes(carrier: Any) -> None:
    """The AMQP integrations' per-message ``Reception._of_delivery`` sets every slot as ``Reception(...)`` does."""
    from otelkit._pipeline.scopes import Reception

    attributes = {"messaging.rabbitmq.message.delivery_tag": 7}
    made = Reception("q1", carrier, system="rabbitmq", message_id="m-1", attempt=2, attributes=attributes)
    fast = Reception._of_delivery("q1", carrier, "rabbitmq", "m-1", 2, attributes)
    assert type(fast) is Reception
    assert _slots(fast) == _slots(made)


def test_a_delivery_scope_records_the_same_span(otel: Telemetry) -> None:
    from otelkit._pipeline.scopes import Reception

    attributes = {"messaging.rabbitmq.message.delivery_tag": 7}
    with Reception("q1", None, system="rabbitmq", message_id="m-1", attempt=2, attributes=attributes):
        pass
    with Reception._of_delivery("q1", None, "rabbitmq", "m-1", 2, attributes):
        pass
    made, fast = otel.spans()
    ignored = {"messaging.message.conversation_id", "otelkit.correlation_id"}  # a fresh ID per message
    assert (made.name, made.kind) == (fast.name, fast.kind) == ("process q1", SpanKind.CONSUMER)
    assert ({k: v for k, v in made.attributes.items() if k not in ignored}
            == {k: v for k, v in fast.attributes.items() if k not in ignored})
