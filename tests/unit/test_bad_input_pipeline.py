"""Bad input at ``otelkit.pipeline``: malformed, foreign, binary and oversized message context.

Issue 4 item 4 and issue 7 item 8: a message whose ``traceparent``/``baggage``/correlation ID cannot be
used starts a **fresh trace** (new trace ID, no parent, no link) with a **fresh correlation ID**, and
the consumer's code runs normally -- never an exception, never a context left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry import context as otel_context

import otelkit
from otelkit import _init, pipeline
from otelkit._correlation import is_valid_correlation_id
from otelkit._names import ATTEMPT_HEADER, CORRELATION_ATTRIBUTE, CORRELATION_HEADER, ENVELOPE_MARKER, SENT_AT_HEADER
from otelkit.testing import CapturedTelemetry

# Deterministic by default so CI stays reproducible; OTELKIT_FUZZ=N explores N times more random examples.
_FUZZ = int(os.environ.get("OTELKIT_FUZZ", "0") or 0)
FAST = settings(max_examples=40 * max(1, _FUZZ), derandomize=not _FUZZ, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
GOOD = f"00-{TRACE_ID}-{SPAN_ID}-01"
FOREIGN_CID = "order-42"

MALFORMED_TRACEPARENTS = {
    "version ff (forbidden)": f"ff-{TRACE_ID}-{SPAN_ID}-01",
    "version 00 with extra field": f"{GOOD}-extra",
    "all-zero trace id": f"00-{'0' * 32}-{SPAN_ID}-01",
    "all-zero span id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "trace id too short": f"00-{TRACE_ID[:16]}-{SPAN_ID}-01",
    "span id too long": f"00-{TRACE_ID}-{SPAN_ID}00-01",
    "non-hex": f"00-{TRACE_ID[:-1]}z-{SPAN_ID}-01",
    "upper-case hex": f"00-{TRACE_ID.upper()}-{SPAN_ID.upper()}-01",
    "missing flags": f"00-{TRACE_ID}-{SPAN_ID}",
    "bad flags": f"00-{TRACE_ID}-{SPAN_ID}-zz",
    "empty": "",
    "spaces": "   ",
    "separators only": "---",
    "10 KB": "00-" + "a" * 10_240,
    "unicode": f"00-{TRACE_ID[:-1]}é-{SPAN_ID}-01",
    "NUL": f"00-{TRACE_ID}\x00-{SPAN_ID}-01",
}

NON_STRING_VALUES = {
    "int": 12345,
    "float": 1.5,
    "None": None,
    "bytes not UTF-8": b"\xff\xfe\x00",
    "list of str": [GOOD],
    "list of junk": [1, None, b"\xff"],
    "dict": {"traceparent": GOOD},
    "object": object(),
}


def _fresh(captured: CapturedTelemetry, msg: Any, *, foreign_cids: tuple[str, ...] = ()) -> None:
    """The reception started a fresh trace with a fresh, valid correlation ID."""
    span = captured.spans.span("process q")
    assert span.context is not None
    assert span.context.trace_id != int(TRACE_ID, 16)
    assert span.parent is None, span.parent
    assert not span.links
    assert msg.producer is None
    assert is_valid_correlation_id(msg.correlation_id), msg.correlation_id
    assert msg.correlation_id not in foreign_cids
    assert span.attributes is not None and span.attributes[CORRELATION_ATTRIBUTE] == msg.correlation_id


@pytest.fixture
def no_context_left() -> Iterator[None]:
    """Each test must leave the thread's context exactly as it found it."""
    before = otel_context.get_current()
    yield
    assert otel_context.get_current() == before, "a pipeline scope left its context attached"


# --- the control: a good message is linked (so the tests below can fail) -----------------------------

def test_control_a_valid_traceparent_is_linked(otelkit_capture: CapturedTelemetry, no_context_left: None) -> None:
    with pipeline.receive("q", {"traceparent": GOOD}, system="redis") as msg:
        pass
    span = otelkit_capture.spans.span("process q")
    assert msg.producer is not None and span.links[0].context.trace_id == int(TRACE_ID, 16)


# --- malformed traceparent ---------------------------------------------------------------------------

@pytest.mark.parametrize("parent", ["none", "producer"])
@pytest.mark.parametrize("value", list(MALFORMED_TRACEPARENTS.values()), ids=list(MALFORMED_TRACEPARENTS))
def test_malformed_traceparent_starts_a_fresh_trace(otelkit_capture: CapturedTelemetry, no_context_left: None,
                                                    value: str, parent: Any) -> None:
    ran = False
    with pipeline.receive("q", {"traceparent": value, "tracestate": "k=v"}, system="redis", parent=parent) as msg:
        ran = True
    assert ran
    _fresh(otelkit_capture, msg)


@pytest.mark.parametrize("value", list(NON_STRING_VALUES.values()), ids=list(NON_STRING_VALUES))
@pytest.mark.parametrize("key", ["traceparent", b"traceparent"], ids=["str-key", "bytes-key"])
def test_non_string_carrier_values_read_as_absent(otelkit_capture: CapturedTelemetry, no_context_left: None,
                                                  key: Any, value: Any) -> None:
    carrier = {key: value, CORRELATION_HEADER: value, "baggage": value, SENT_AT_HEADER: value, ATTEMPT_HEADER: value}
    with pipeline.receive("q", carrier, system="redis") as msg:
        pass
    _fresh(otelkit_capture, msg)


def test_header_list_with_malformed_items(otelkit_capture: CapturedTelemetry, no_context_left: None) -> None:
    carrier = [("traceparent",), ("traceparent", 5), (b"traceparent", b"\xff"), None, 7, ("a", "b", "c"),
               (CORRELATION_HEADER, b"x" * 10_240)]
    with pipeline.receive("q", carrier, system="kafka") as msg:
        pass
    _fresh(otelkit_capture, msg)


# --- baggage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "k=" + "v" * 10_000,                                  # beyond the W3C 8192-byte limit
    ",".join(f"k{i}=v" for i in range(500)),             # too many members
    ";;;,,,==%%%",                                        # malformed
    b"\x00\xff\xfe",                                      # binary
    "correlation_id=" + "a" * 10_240,                     # a 10 KB correlation ID in baggage
    "correlation_id=has%20spaces%2Cand%3Bsemicolons",     # an invalid correlation ID in baggage
    "correlation_id=",                                    # empty
])
def test_bad_baggage_keeps_the_trace_and_gives_a_fresh_correlation_id(
        otelkit_capture: CapturedTelemetry, no_context_left: None, value: Any) -> None:
    with pipeline.receive("q", {"traceparent": GOOD, "baggage": value}, system="redis") as msg:
        inner = otelkit.correlation_id()
        entries = baggage.get_all()
    assert msg.producer is not None  # the traceparent itself was fine
    assert is_valid_correlation_id(msg.correlation_id) and inner == msg.correlation_id
    assert len(msg.correlation_id) <= 128
    # Nothing oversized made it into the context that outgoing calls would propagate.
    assert sum(len(str(k)) + len(str(v)) for k, v in entries.items()) <= 8192


def test_a_10kb_correlation_header_is_replaced(otelkit_capture: CapturedTelemetry, no_context_left: None) -> None:
    huge = "c" * 10_240
    with pipeline.receive("q", {"traceparent": GOOD, CORRELATION_HEADER: huge}, system="redis") as msg:
        logged = otelkit.correlation_id()
    assert msg.correlation_id != huge and is_valid_correlation_id(msg.correlation_id) and logged == msg.correlation_id


def test_a_valid_foreign_correlation_id_is_kept(otelkit_capture: CapturedTelemetry, no_context_left: None) -> None:
    with pipeline.receive("q", {CORRELATION_HEADER: FOREIGN_CID}, system="redis") as msg:
        pass
    assert msg.correlation_id == FOREIGN_CID  # control for the replacement tests above


@pytest.mark.parametrize("value", ["c" * 10_240, "", "has space", "a,b", 12345, b"bytes", None])
def test_emit_and_correlate_with_bad_correlation_ids_use_a_fresh_one(
        otelkit_capture: CapturedTelemetry, no_context_left: None, value: Any) -> None:
    with pipeline.emit("q", system="redis", correlation_id=value) as out:
        pass
    assert is_valid_correlation_id(out.correlation_id) and out.correlation_id != value
    assert out.headers[CORRELATION_HEADER] == out.correlation_id
    if value is not None:
        with pipeline.correlate(value) as cid:
            assert is_valid_correlation_id(cid) and cid != value and otelkit.correlation_id() == cid


# --- carriers that are not carriers, and envelopes that are not envelopes -----------------------------

class _RaisingMapping(dict):  # type: ignore[type-arg]
    def get(self, *args: Any) -> Any:
        raise RuntimeError("broken carrier")

    def keys(self) -> Any:
        raise RuntimeError("broken carrier")

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("broken carrier")


NOT_CARRIERS = {
    "int": 42,
    "object": object(),
    "set": {"traceparent"},
    "tuple of junk": (1, None, "x"),
    "raising mapping": _RaisingMapping(traceparent=GOOD),
    "not JSON": "{not json",
    "JSON list": "[1, 2, 3]",
    "JSON string": '"just a string"',
    "JSON null": "null",
    "truncated envelope": '{"' + ENVELOPE_MARKER + '":1,"headers":',
    "envelope headers a list": json.dumps({ENVELOPE_MARKER: 1, "headers": [1, 2], "payload": "p"}),
    "envelope without payload": json.dumps({ENVELOPE_MARKER: 1, "headers": {"traceparent": GOOD[:-1]}}),
    "envelope header values not str": json.dumps({ENVELOPE_MARKER: 1, "headers": {"traceparent": 5,
                                                                                   CORRELATION_HEADER: [1]},
                                                   "payload": "p"}),
    "envelope bad base64": json.dumps({ENVELOPE_MARKER: 1, "headers": {}, "payload": "!!!", "encoding": "base64"}),
    "envelope non-UTF-8 bytes": b'{"' + ENVELOPE_MARKER.encode() + b'":1,"headers":{"traceparent":"\xff"}}',
    "binary payload": b"\x00\xff" * 100,
    "empty bytes": b"",
    "memoryview": memoryview(b"{}"),
}


@pytest.mark.parametrize("carrier", list(NOT_CARRIERS.values()), ids=list(NOT_CARRIERS))
def test_receive_with_anything_as_carrier_runs_the_handler_in_a_fresh_trace(
        otelkit_capture: CapturedTelemetry, no_context_left: None, carrier: Any) -> None:
    with pipeline.receive("q", carrier, system="redis") as msg:
        inside = otelkit.correlation_id()
    _fresh(otelkit_capture, msg)
    assert inside == msg.correlation_id
    if isinstance(carrier, str) and '"payload"' not in carrier:
        assert msg.payload == carrier  # a legacy (or truncated) payload comes back unchanged


def test_receive_batch_with_junk_messages(otelkit_capture: CapturedTelemetry, no_context_left: None) -> None:
    junk = [None, 5, "x", b"\xff", {"traceparent": 1}, [("a",)], {"traceparent": GOOD}, _RaisingMapping()]
    with pipeline.receive_batch("q", junk, system="redis") as batch:
        pass
    span = otelkit_capture.spans.span("process q")
    assert len(batch.messages) == len(junk)
    assert [link.context.trace_id for link in span.links] == [int(TRACE_ID, 16)]  # only the good one is linked
    assert is_valid_correlation_id(batch.correlation_id)


@pytest.mark.parametrize("carrier", ["not a dict", b"bytes", 7, {"a", "set"}, ("a", "tuple"), object()],
                         ids=["str", "bytes", "int", "set", "tuple", "object"])
def test_emit_into_something_that_is_not_a_carrier_warns_once_and_carries_on(
        otelkit_capture: CapturedTelemetry, carrier: Any, caplog: pytest.LogCaptureFixture) -> None:
    # A telemetry call on the hot path never raises: the span is recorded, the context goes into msg.headers
    # (so msg.wrap(payload) still carries it), and one warning says what to pass.
    from otelkit import _internal_log

    _internal_log._warned.discard(f"emit-carrier-{type(carrier).__name__}")
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        for _ in range(3):
            with pipeline.emit("q", carrier, system="redis") as out:
                envelope = out.wrap({"n": 1})
    warnings = [r for r in caplog.records if "carrier must be a dict" in r.getMessage()]
    assert len(warnings) == 1 and type(carrier).__name__ in warnings[0].getMessage()
    assert len(otelkit_capture.spans.named("send q")) == 3
    with pipeline.receive("q", envelope, system="redis") as msg:
        assert msg.payload == {"n": 1}
    assert otelkit_capture.spans.span("process q").links  # linked to its producer: the context went through


# --- property: arbitrary header dicts never raise, and yield a valid correlation ID -------------------

_KEYS = st.sampled_from(["traceparent", "tracestate", "baggage", CORRELATION_HEADER, SENT_AT_HEADER, ATTEMPT_HEADER,
                         b"traceparent", b"baggage", b"otelkit-correlation-id", "other", 5, None])
_VALUES = st.one_of(
    st.text(max_size=60), st.binary(max_size=60), st.integers(), st.floats(), st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from([GOOD, GOOD.upper(), f"{GOOD}-x", "k=v", "a" * 9000, "1e309", "nan", "-1", "\udcff"]),
)


@FAST
@given(carrier=st.dictionaries(_KEYS, _VALUES, max_size=6), parent=st.sampled_from(["none", "producer", "current"]),
       attempt=st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
def test_property_any_header_dict(otelkit_capture: CapturedTelemetry, carrier: Mapping[Any, Any], parent: Any,
                                  attempt: int | None) -> None:
    otelkit_capture.clear()
    before = otel_context.get_current()
    with pipeline.receive("q", dict(carrier), system="redis", parent=parent, attempt=attempt) as msg:
        inside = otelkit.correlation_id()
    assert otel_context.get_current() == before
    assert is_valid_correlation_id(msg.correlation_id) and inside == msg.correlation_id
    span = otelkit_capture.spans.span("process q")
    if msg.producer is None:
        assert not span.links and span.parent is None


@FAST
@given(raw=st.one_of(st.text(max_size=80), st.binary(max_size=80),
                     st.builds(lambda h, p: json.dumps({ENVELOPE_MARKER: 1, "headers": h, "payload": p}),
                               st.one_of(st.dictionaries(st.text(max_size=12), st.text(max_size=60), max_size=3),
                                         st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none()),
                               st.one_of(st.text(max_size=10), st.integers(), st.none()))))
def test_property_any_payload(otelkit_capture: CapturedTelemetry, raw: Any) -> None:
    otelkit_capture.clear()
    with pipeline.receive("q", raw, system="redis") as msg:
        pass
    assert is_valid_correlation_id(msg.correlation_id)
    assert len(otelkit_capture.spans.named("process q")) == 1


# --- telemetry off, and bugs found by these tests (fixed; each test says what used to go wrong) -----------

@pytest.fixture
def fresh_context() -> Iterator[None]:
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("when", ["before init", "disabled", "after shutdown"])
@pytest.mark.parametrize("scope", ["emit", "receive", "stage"])
def test_scopes_restore_the_context_when_telemetry_is_off(fresh_context: None, when: str, scope: str) -> None:
    try:
        if when == "disabled":
            otelkit.init(service_name="x", disabled=True)
        elif when == "after shutdown":
            otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                         instrument=(), system_metrics=False)
            otelkit.shutdown(timeout=1)
        before = otel_context.get_current()
        make = {"emit": lambda: pipeline.emit("q", system="redis"),
                "receive": lambda: pipeline.receive("q", {}, system="redis"),
                "stage": lambda: pipeline.stage("enrich")}[scope]
        with make():
            pass
        assert otel_context.get_current() == before, f"{scope} left its context attached"
        assert otelkit.correlation_id() is None
    finally:
        _init.reset()


@pytest.mark.parametrize("attempt_kwargs", [{"attempt": "abc", "max_attempts": 3}, {"max_attempts": "3"},
                                            {"attempt": 2.5, "max_attempts": object()}])
def test_non_integer_attempts_do_not_lose_the_span(otelkit_capture: CapturedTelemetry,
                                                    attempt_kwargs: dict[str, Any]) -> None:
    with pytest.raises(TimeoutError):
        with pipeline.receive("q", {}, system="redis", **attempt_kwargs):
            raise TimeoutError("transient")
    assert len(otelkit_capture.spans.named("process q")) == 1


def test_non_string_outcome_reason_does_not_lose_the_span(otelkit_capture: CapturedTelemetry) -> None:
    with pipeline.receive("q", {}, system="redis") as msg:
        msg.retry(reason=12345)  # type: ignore[arg-type]
    assert len(otelkit_capture.spans.named("process q")) == 1


@pytest.mark.parametrize("max_links", ["x", None])
def test_bad_max_links_still_gives_a_batch_span(otelkit_capture: CapturedTelemetry, max_links: Any) -> None:
    with pipeline.receive_batch("q", [{"traceparent": GOOD}], system="redis", max_links=max_links) as batch:
        assert otelkit.correlation_id() == batch.correlation_id
    assert len(otelkit_capture.spans.named("process q")) == 1


@pytest.mark.parametrize("helper", ["emit", "receive"])
def test_non_string_destination_still_gives_a_span(otelkit_capture: CapturedTelemetry, helper: str) -> None:
    make = pipeline.emit if helper == "emit" else pipeline.receive
    with make(7, {}, system="redis"):  # type: ignore[arg-type]
        pass
    assert len(otelkit_capture.spans) == 1


def test_each_emit_gets_its_own_correlation_id_when_telemetry_is_disabled(fresh_context: None) -> None:
    try:
        otelkit.init(service_name="x", disabled=True)
        ids = []
        for _ in range(3):
            with pipeline.emit("q", system="redis") as out:
                pass
            ids.append(out.correlation_id)
        assert len(set(ids)) == 3, ids
    finally:
        _init.reset()


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


@pytest.mark.parametrize("scope", ["emit", "receive", "stage"])
def test_exception_whose_str_raises_keeps_the_span(otelkit_capture: CapturedTelemetry, scope: str) -> None:
    make = {"emit": lambda: pipeline.emit("q", system="redis"),
            "receive": lambda: pipeline.receive("q", {}, system="redis"),
            "stage": lambda: pipeline.stage("enrich")}[scope]
    error = _UnprintableError()
    with pytest.raises(_UnprintableError):
        with make():
            raise error
    (span,) = otelkit_capture.spans
    assert span.status.status_code.name == "ERROR"


def test_stage_count_with_a_non_number_never_raises(otelkit_capture: CapturedTelemetry) -> None:
    with pipeline.stage("enrich") as st:
        st.count("3")  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["correlation_id=evil%0AINJECTED%20line", "correlation_id=" + "x" * 4000,
                                    "correlation_id=a%20b%22c%3B"], ids=["newline", "4KB", "quotes"])
def test_an_invalid_ambient_correlation_id_is_never_used(otelkit_capture: CapturedTelemetry, header: str,
                                                         fresh_context: None) -> None:
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    token = otel_context.attach(W3CBaggagePropagator().extract({"baggage": header}))
    try:
        assert baggage.get_baggage("correlation_id")  # the hostile value really is in the context
        ambient = otelkit.correlation_id()
        record = logging.getLogRecordFactory()("app", logging.INFO, __file__, 1, "m", (), None)
        with otelkit.span("work"):
            pass
        with pipeline.emit("q", system="nats") as out:
            pass
    finally:
        otel_context.detach(token)
    assert ambient is None or is_valid_correlation_id(ambient)
    assert record.correlation_id == "" or is_valid_correlation_id(record.correlation_id)  # no log injection
    assert is_valid_correlation_id(out.correlation_id) and out.headers[CORRELATION_HEADER] == out.correlation_id
    for span in otelkit_capture.spans:
        value = (span.attributes or {}).get(CORRELATION_ATTRIBUTE)
        assert value is None or is_valid_correlation_id(value), (span.name, value[:40])


@pytest.mark.parametrize("carrier", [{b"old-field": b"\xff", "count": 5}, [("k", b"\xff")]], ids=["bytes-dict", "list"])
def test_wrap_with_an_odd_carrier_still_carries_the_context(otelkit_capture: CapturedTelemetry, carrier: Any) -> None:
    with pipeline.emit("q", carrier, system="redis") as out:
        raw = out.wrap("payload")
    with pipeline.receive("q", raw, system="redis") as msg:
        pass
    assert msg.payload == "payload" and msg.correlation_id == out.correlation_id and msg.producer is not None


@pytest.mark.parametrize("message_id", ["²-0", "1-²", b"\xd9\xa3-1", b"\xff-1", "9" * 400 + "-1"],
                         ids=["superscript", "superscript-seq", "arabic", "binary", "huge"])
def test_unicode_digits_in_a_redis_message_id(otelkit_capture: CapturedTelemetry, message_id: Any) -> None:
    with pipeline.receive("q", {}, system="redis", message_id=message_id) as msg:
        assert otelkit.correlation_id() == msg.correlation_id
    assert len(otelkit_capture.spans.named("process q")) == 1


def test_concurrent_async_consumers_with_bad_messages_never_mix_ids(otelkit_capture: CapturedTelemetry) -> None:
    carriers: list[Any] = []
    for i in range(40):
        if i % 4 == 0:
            carriers.append({"traceparent": GOOD, CORRELATION_HEADER: f"order-{i}"})
        elif i % 4 == 1:
            carriers.append({"traceparent": MALFORMED_TRACEPARENTS["non-hex"], CORRELATION_HEADER: "bad id " * 5})
        elif i % 4 == 2:
            carriers.append(b"\xff not an envelope")
        else:
            carriers.append(None)

    async def consume(carrier: Any) -> tuple[str | None, str | None, str | None]:
        async with pipeline.receive("q", carrier, system="nats") as msg:
            await asyncio.sleep(0)  # interleave with the other consumers
            seen = otelkit.correlation_id()
            await asyncio.sleep(0)
            return msg.correlation_id, seen, otelkit.correlation_id()

    async def main() -> list[tuple[str | None, str | None, str | None]]:
        return await asyncio.gather(*(consume(c) for c in carriers))

    results = asyncio.run(main())
    assert all(cid == seen == again and is_valid_correlation_id(cid) for cid, seen, again in results)
    assert [r[0] for r in results[::4]] == [f"order-{i}" for i in range(0, 40, 4)]
    fresh = [r[0] for i, r in enumerate(results) if i % 4]
    assert len(set(fresh)) == len(fresh)  # every bad message got its own fresh ID
    assert len(otelkit_capture.spans.named("process q")) == 40


@pytest.mark.parametrize(("carrier", "message_id"), [
    ({SENT_AT_HEADER: "1"}, None),                       # 1 ms after the epoch: "56 years in the queue"
    ({SENT_AT_HEADER: "1e15"}, None),                    # the year 33658
    ({SENT_AT_HEADER: "99999999999999"}, None),         # the year 5138
    ({}, "1-0"),                                         # an explicit Redis stream ID, not a time
])
def test_implausible_emission_times_are_dropped(otelkit_capture: CapturedTelemetry, carrier: dict[str, str],
                                                message_id: str | None) -> None:
    system = "redis" if message_id else "nats"
    with pipeline.receive("q", dict(carrier), system=system, message_id=message_id) as msg:
        pass
    assert msg.sent_at is None
    for name in ("otelkit.messaging.message.end_to_end.duration", "otelkit.messaging.message.time_in_queue"):
        assert not otelkit_capture.metric_points(name), name


def test_control_a_plausible_emission_time_is_recorded(otelkit_capture: CapturedTelemetry) -> None:
    with pipeline.receive("q", {SENT_AT_HEADER: f"{(time.time() - 2.0) * 1000:.3f}"}, system="nats") as msg:
        pass
    assert msg.sent_at is not None
    (point,) = otelkit_capture.metric_points("otelkit.messaging.message.end_to_end.duration")
    assert point.count == 1 and point.sum is not None and 1.0 < point.sum < 60.0
