"""With Sentry on, outgoing calls still carry W3C ``traceparent`` and ``baggage``.

Sentry's own OTLP integration replaces the global propagator so that only
``sentry-trace`` goes out (measured in shared/reference/distros.md). otelkit
must leave OpenTelemetry's propagation alone: a real httpx call to a local
HTTP server that records request headers shows what went on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.trace import format_span_id, format_trace_id
from sentry_sink import HeaderRecorder, SentrySink, header_recorder

import otelkit
from otelkit import pipeline
from otelkit.testing import capture_telemetry


@pytest.fixture
def recorder() -> Iterator[HeaderRecorder]:
    with header_recorder() as r:
        yield r


def test_httpx_calls_carry_traceparent_and_baggage_with_sentry_on(recorder: HeaderRecorder) -> None:
    with SentrySink() as sink, capture_telemetry(service_name="api", sentry_dsn=sink.dsn, instrument=["httpx"]):
        import sentry_sdk

        assert sentry_sdk.get_client().is_active()
        with pipeline.correlate("corr-prop-1"), otelkit.span("call-upstream") as span:
            response = httpx.get(recorder.url, timeout=5)
            parent = span.get_span_context()
        # Sentry stays linked while OTel owns propagation: an event sent here still gets the IDs.
        assert type(propagate.get_global_textmap()).__module__.startswith("opentelemetry")
    assert response.status_code == 204

    (headers,) = recorder.requests
    assert "traceparent" in headers, headers
    version, trace_id, _span_id, _flags = headers["traceparent"].split("-")
    assert version == "00"
    assert trace_id == format_trace_id(parent.trace_id)
    assert "correlation_id=corr-prop-1" in headers.get("baggage", "")
    assert "sentry-trace" not in headers


def test_sentry_event_inside_the_call_links_the_same_trace(recorder: HeaderRecorder) -> None:
    with SentrySink() as sink:
        with capture_telemetry(service_name="api", sentry_dsn=sink.dsn, instrument=["httpx"]):
            with pytest.raises(RuntimeError), otelkit.span("call-upstream") as span:
                httpx.get(recorder.url, timeout=5)
                raise RuntimeError("upstream answered 204, expected 200")
            parent = span.get_span_context()
        (event,) = sink.events()
    (headers,) = recorder.requests
    assert headers["traceparent"].split("-")[1] == event["contexts"]["trace"]["trace_id"]
    assert event["contexts"]["trace"]["span_id"] == format_span_id(parent.span_id)
