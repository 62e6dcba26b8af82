"""With Sentry on, outgoing calls still carry W3C ``traceparent`` and ``baggage``.

Sentry's own OTLP integration replaces the global propagator so that only
``sentry-trace`` goes out (measured in shared/reference/distros.md). otelkit
must leave OpenTelemetry's propagation alone: a real httpx call to a local
HTTP server that records request headers shows what went on the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.trace import format_span_id, format_trace_id
from sentry_sink import SentrySink

import otelkit
from otelkit import pipeline
from otelkit.testing import capture_telemetry


class _HeaderRecorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def recorder() -> Iterator[_HeaderRecorder]:
    r = _HeaderRecorder()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(timeout=5)


def test_httpx_calls_carry_traceparent_and_baggage_with_sentry_on(recorder: _HeaderRecorder) -> None:
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


def test_sentry_event_inside_the_call_links_the_same_trace(recorder: _HeaderRecorder) -> None:
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
