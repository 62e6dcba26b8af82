"""``tracestate`` travels with a message: ``pipeline.emit`` writes it, ``pipeline.receive`` restores it.

A vendor entry in the incoming request's ``tracestate`` (load balancer, sampler, APM vendor) must not be lost
at a queue hop: the producer span inherits it, ``emit`` injects it into the carrier next to ``traceparent``,
and the consumer sees it on the link to the producer (``parent="none"``) or on its parent
(``parent="producer"``). Captured with ``otelkit.testing.capture_telemetry`` (in-memory exporters).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otelkit import pipeline
from otelkit.testing import CapturedTelemetry, capture_telemetry

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING = {
    "traceparent": f"00-{INCOMING_TRACE}-b7ad6b7169203331-01",
    "tracestate": "lb=az1,vendor=t61rcWkgMzE",
}


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    with capture_telemetry() as cap:
        yield cap


def _emit_under_incoming_request(carrier: Any = None) -> tuple[dict[str, Any], str]:
    """Emit inside a span that continues an incoming request carrying ``tracestate``; return headers + envelope."""
    token = otel_context.attach(TraceContextTextMapPropagator().extract(INCOMING))
    try:
        with trace.get_tracer("test").start_as_current_span("handle request"):
            with pipeline.emit("orders", carrier, system="redis") as msg:
                envelope = msg.wrap({"order": 1})
                headers = dict(msg.headers)
    finally:
        otel_context.detach(token)
    return headers, envelope


def _trace_state_entries(state: Any) -> dict[str, str]:
    return dict(state.items())


def test_emit_writes_the_incoming_tracestate_into_the_carrier(captured: CapturedTelemetry) -> None:
    headers, envelope = _emit_under_incoming_request({})
    assert headers["tracestate"] == INCOMING["tracestate"]
    assert headers["traceparent"].split("-")[1] == INCOMING_TRACE
    # Payload-only transports carry it in the JSON envelope too.
    assert INCOMING["tracestate"] in json.dumps(json.loads(envelope))
    producer = captured.spans.span("send orders")
    assert _trace_state_entries(producer.context.trace_state) == {"lb": "az1", "vendor": "t61rcWkgMzE"}


def test_receive_links_to_the_producer_with_its_tracestate(captured: CapturedTelemetry) -> None:
    headers, _ = _emit_under_incoming_request({})
    with pipeline.receive("orders", headers, system="redis") as msg:
        assert msg is not None
    consumer = captured.spans.span("process orders")
    producer = captured.spans.span("send orders")
    assert consumer.parent is None  # parent="none": a new trace, linked
    (link,) = consumer.links
    assert link.context.span_id == producer.context.span_id
    assert _trace_state_entries(link.context.trace_state) == {"lb": "az1", "vendor": "t61rcWkgMzE"}


def test_receive_as_child_keeps_the_tracestate_in_the_parent_context(captured: CapturedTelemetry) -> None:
    _, envelope = _emit_under_incoming_request()
    with pipeline.receive("orders", envelope, system="redis", parent="producer") as msg:
        assert msg.payload == {"order": 1}
        current = trace.get_current_span().get_span_context()
        # The consumer's own context (and so every child span and outgoing call) carries it on.
        assert _trace_state_entries(current.trace_state) == {"lb": "az1", "vendor": "t61rcWkgMzE"}
        forwarded: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(forwarded)
    consumer = captured.spans.span("process orders")
    assert consumer.parent is not None
    assert consumer.parent.span_id == captured.spans.span("send orders").context.span_id
    assert _trace_state_entries(consumer.parent.trace_state) == {"lb": "az1", "vendor": "t61rcWkgMzE"}
    assert forwarded["tracestate"] == INCOMING["tracestate"]
