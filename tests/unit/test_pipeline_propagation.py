"""The message path's propagation fast path (``otelkit._pipeline.propagation``) writes and reads exactly what the
configured W3C propagators would: same headers on inject, same context on extract, for every baggage shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from otelkit._pipeline import carriers, propagation

SPAN = NonRecordingSpan(SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=False,
                                    trace_flags=TraceFlags(1), trace_state=TraceState([("lb", "az1")])))

BAGGAGES: list[dict[str, str]] = [
    {},
    {"correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    {"correlation_id": "order-42_v1.~x"},
    {"correlation_id": "tenant:7/order@x+y=z"},  # characters the propagator percent-encodes: the slow path
    {"correlation_id": "abc", "tenant": "acme"},
    {"tenant": "acme"},
]


@pytest.fixture(params=["default", "tracecontext-only"])
def textmap(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = propagate.get_global_textmap()
    members: list[Any] = [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    if request.param != "default":
        members = members[:1]
    propagate.set_global_textmap(CompositePropagator(members))
    try:
        yield request.param
    finally:
        propagate.set_global_textmap(saved)


def _context(entries: dict[str, str]) -> Context:
    ctx = trace.set_span_in_context(SPAN, Context())
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


@pytest.mark.parametrize("entries", BAGGAGES, ids=lambda e: ",".join(e) or "none")
def test_inject_writes_what_the_propagators_write(textmap: str, entries: dict[str, str]) -> None:
    ctx = _context(entries)
    ours: dict[str, Any] = {}
    propagation.inject(ours, ctx)
    theirs: dict[str, Any] = {}
    propagate.inject(theirs, context=ctx, setter=carriers.SETTER)
    assert ours == theirs
    assert ours["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


SPANS: list[Any] = [
    SPAN,
    NonRecordingSpan(SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(0))),  # unsampled, no tracestate
    NonRecordingSpan(SpanContext(0x1, 0x2, is_remote=True, trace_flags=TraceFlags(0x03))),  # flags with the random bit
    trace.INVALID_SPAN,
    None,  # no span in the context
    "not a span",  # something else under the span key: get_current_span's INVALID_SPAN
]


@pytest.mark.parametrize("span", SPANS, ids=["sampled+tracestate", "unsampled", "random-flag", "invalid", "none",
                                             "not-a-span"])
@pytest.mark.parametrize("entries", BAGGAGES, ids=lambda e: ",".join(e) or "none")
def test_inject_into_a_fresh_dict_writes_what_the_propagators_write(textmap: str, entries: dict[str, str],
                                                                    span: Any) -> None:
    """An emission's new header dict (``fresh=True``): the same headers as the configured propagators write."""
    from otelkit._compat import SPAN_KEY

    ctx = Context() if span is None else Context({SPAN_KEY: span})  # type: ignore[dict-item]
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    ours: dict[str, Any] = {}
    propagation.inject(ours, ctx, fresh=True)
    theirs: dict[str, Any] = {}
    propagate.inject(theirs, context=ctx)
    assert ours == theirs
    assert ("traceparent" in ours) == (span in SPANS[:3])


@pytest.mark.parametrize("entries", BAGGAGES, ids=lambda e: ",".join(e) or "none")
@pytest.mark.parametrize("as_bytes", [False, True])
def test_extract_reads_what_the_propagators_read(textmap: str, entries: dict[str, str], as_bytes: bool) -> None:
    headers: dict[Any, Any] = {}
    propagate.inject(headers, context=_context(entries), setter=carriers.SETTER)
    if as_bytes:
        headers = {key.encode(): value.encode() for key, value in headers.items()}
    ours = propagation.extract(headers)
    theirs = propagate.extract(headers, context=Context(), getter=carriers.GETTER)
    assert dict(baggage.get_all(ours)) == dict(baggage.get_all(theirs))
    assert trace.get_current_span(ours).get_span_context() == trace.get_current_span(theirs).get_span_context()
    if textmap == "default":
        assert dict(baggage.get_all(ours)) == entries


@pytest.mark.parametrize("header", ["correlation_id=", "correlation_id=a b", "correlation_id=x,tenant=y",
                                    "correlation_id = abc", "correlation_id=" + "a" * 300, "tenant=acme"])
def test_extract_of_unusual_baggage_matches_the_propagator(textmap: str, header: str) -> None:
    headers = {"baggage": header}
    ours = propagation.extract(headers)
    theirs = propagate.extract(headers, context=Context(), getter=carriers.GETTER)
    assert dict(baggage.get_all(ours)) == dict(baggage.get_all(theirs))
