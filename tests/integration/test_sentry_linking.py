"""Sentry events through the real sentry-sdk HTTP transport, received by a local envelope server.

Each test initialises otelkit (in-memory span capture) with ``sentry_dsn``
pointing at :class:`SentrySink`; leaving ``capture_telemetry`` shuts otelkit
down, which flushes Sentry's queue, so what the sink holds afterwards is
everything that was sent.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import format_span_id, format_trace_id
from sentry_sink import SentrySink, iter_strings

import otelkit
from otelkit import pipeline
from otelkit._errors import SENTRY_EVENT_ID_ATTRIBUTE
from otelkit._sentry import DEFAULT_TRACE_URL_TEMPLATE
from otelkit.testing import CapturedTelemetry, capture_telemetry


@pytest.fixture
def sink() -> Iterator[SentrySink]:
    with SentrySink() as s:
        yield s


def _capture(sink: SentrySink, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"service_name": "checkout", "service_version": "1.4.2", "environment": "staging",
                               "sentry_dsn": sink.dsn}
    options.update(kwargs)
    return capture_telemetry(**options)


def _span(captured: CapturedTelemetry, name: str) -> Any:
    matches = [s for s in captured.spans if s.name == name]
    assert len(matches) == 1, [s.name for s in captured.spans]
    return matches[0]


def test_event_carries_otel_ids_tags_release_and_trace_link(sink: SentrySink) -> None:
    with _capture(sink) as captured:
        with pytest.raises(KeyError):
            with otelkit.span("checkout.charge"):
                raise KeyError("card-declined")

    (event,) = sink.events()
    span = _span(captured, "checkout.charge")
    trace_id, span_id = format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)
    assert event["contexts"]["trace"]["trace_id"] == trace_id
    assert event["contexts"]["trace"]["span_id"] == span_id
    assert event["environment"] == "staging"
    assert event["release"] == "1.4.2"
    assert event["tags"]["service.name"] == "checkout"
    assert event["tags"]["trace_id"] == trace_id
    assert event["contexts"]["otel"]["trace_url"] == DEFAULT_TRACE_URL_TEMPLATE.replace("{trace_id}", trace_id)
    assert trace_id in event["contexts"]["otel"]["trace_url"]
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    # ...and the trace leads back to the event.
    assert span.attributes[SENTRY_EVENT_ID_ATTRIBUTE] == event["event_id"]


def test_configured_trace_url_template_and_sentry_environment(sink: SentrySink,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_ENVIRONMENT", "prod-eu")
    monkeypatch.setenv("SENTRY_RELEASE", "checkout@9.9.9")
    monkeypatch.setenv("OTELKIT_TRACE_URL_TEMPLATE", "https://grafana.example/trace/{trace_id}?span={span_id}")
    with _capture(sink, environment=None, service_version=None) as captured:
        with pytest.raises(RuntimeError):
            with otelkit.span("work"):
                raise RuntimeError("x")
    (event,) = sink.events()
    span = _span(captured, "work")
    trace_id, span_id = format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)
    assert event["environment"] == "prod-eu"
    assert event["release"] == "checkout@9.9.9"
    assert event["contexts"]["otel"]["trace_url"] == f"https://grafana.example/trace/{trace_id}?span={span_id}"


def test_correlation_id_is_tagged(sink: SentrySink) -> None:
    with _capture(sink):
        carrier: dict[str, str] = {}
        with pipeline.emit("orders", carrier, system="redis", correlation_id="corr-7f3a"):
            pass
        with pytest.raises(ValueError):
            with pipeline.receive("orders", carrier, system="redis"):
                with otelkit.span("validate"):
                    raise ValueError("bad order")
    (event,) = sink.events()
    assert event["tags"]["correlation_id"] == "corr-7f3a"


def test_one_event_for_one_exception_through_every_path(sink: SentrySink) -> None:
    """Nested otelkit spans, a logger.exception and Sentry's excepthook all see one exception: one event.

    Another exception is reported in between, so Sentry's own DedupeIntegration (which only
    remembers the last exception) cannot be what removes the duplicates.
    """
    app_log = logging.getLogger("app.sentry-test")
    with _capture(sink) as captured:
        try:
            with otelkit.span("request"):
                with otelkit.span("handler"):
                    with otelkit.span("db.save"):
                        raise ConnectionError("db unreachable")
        except ConnectionError as exc:
            first_failure = exc
        # A different exception is a different event.
        with pytest.raises(ValueError):
            with otelkit.span("other"):
                raise ValueError("second failure")
        try:
            raise first_failure
        except ConnectionError:
            app_log.exception("request failed")  # Sentry's logging integration captures this too
        sys.excepthook(type(first_failure), first_failure, first_failure.__traceback__)  # Sentry wraps this

    events = sink.events()
    assert sorted(e["exception"]["values"][-1]["type"] for e in events) == ["ConnectionError", "ValueError"]
    first = next(e for e in events if e["exception"]["values"][-1]["type"] == "ConnectionError")
    innermost = _span(captured, "db.save")
    assert first["contexts"]["trace"]["span_id"] == format_span_id(innermost.context.span_id)
    assert innermost.attributes[SENTRY_EVENT_ID_ATTRIBUTE] == first["event_id"]
    assert [e.name for e in innermost.events] == ["exception"]


def test_failed_job_event_carries_job_context(sink: SentrySink, redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    queue = f"otelkit-sentry-test-{uuid.uuid4().hex}"
    try:
        with _capture(sink):
            with pipeline.emit(queue, system="redis", correlation_id="corr-job-42", message_id="msg-1") as msg:
                client.rpush(queue, msg.wrap(json.dumps({"order": 42})))
            raw = client.blpop([queue], timeout=5)
            assert raw is not None
            with pytest.raises(TimeoutError):
                with pipeline.receive(queue, raw[1], system="redis", message_id="msg-1", attempt=3) as received:
                    with otelkit.span("charge-card"):
                        raise TimeoutError(f"payment provider timed out for order {received.payload}")
    finally:
        client.delete(queue)
        client.close()

    (event,) = sink.events()
    job = event["contexts"]["job"]
    assert job["destination"] == queue
    assert job["message_id"] == "msg-1"
    assert job["attempt"] == 3
    assert job["correlation_id"] == "corr-job-42"
    assert event["tags"]["correlation_id"] == "corr-job-42"


# Built at run time, kept out of the frames Sentry sends: only the planted copies can leak.
_CANARIES = tuple(f"OTK{n}{uuid.uuid4().hex[:12]}" for n in range(4))


def test_no_secrets_leave_in_messages_locals_or_breadcrumbs(sink: SentrySink) -> None:
    app_log = logging.getLogger("app.sentry-test")

    def connect() -> None:
        target = f"postgresql://app:{_CANARIES[0]}@db.internal:5432/app"  # innocently named local
        header = "Bearer " + _CANARIES[1]
        endpoint = f"https://svc:{_CANARIES[2]}@api.internal/v1/orders?token={_CANARIES[3]}"
        app_log.warning("retrying %s with %s at %s", target, header, endpoint)  # becomes a breadcrumb
        raise ConnectionError(f"cannot reach {target} using {header} via {endpoint}")

    with _capture(sink):
        with pytest.raises(ConnectionError):
            with otelkit.span("connect"):
                connect()

    (event,) = sink.events()
    raw = sink.raw()
    for canary in _CANARIES:
        assert canary.encode() not in raw, f"{canary} leaked to Sentry"
    # The event is still useful: the message keeps its shape and the locals are there.
    message = event["exception"]["values"][-1]["value"]
    assert "postgresql://REDACTED:REDACTED@db.internal:5432/app" in message
    assert "Bearer [REDACTED]" in message
    frame_vars = [f.get("vars", {}) for f in event["exception"]["values"][-1]["stacktrace"]["frames"]]
    assert any("target" in v for v in frame_vars)
    crumbs = [c.get("message") or "" for c in event["breadcrumbs"]["values"]]
    assert any(c.startswith("retrying postgresql://REDACTED:REDACTED@") for c in crumbs)
    assert not any(canary in s for s in iter_strings(event) for canary in _CANARIES)


def test_send_default_pii_is_off(sink: SentrySink) -> None:
    import sentry_sdk

    with _capture(sink):
        options = sentry_sdk.get_client().options
        assert not options["send_default_pii"]
        assert options["data_collection"]["user_info"] is False
        assert options["event_scrubber"] is not None  # Sentry's key-name scrubber stays, ours adds values
        assert options["auto_enabling_integrations"] is False
        assert options["before_send"] is not None and options["before_breadcrumb"] is not None


def test_exception_from_instrumented_library_is_reported_once(sink: SentrySink) -> None:
    import socket

    import httpx

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with _capture(sink, instrument=["httpx"]) as captured:
        with pytest.raises(httpx.ConnectError):
            with otelkit.span("sync-prices"):
                httpx.get(f"http://127.0.0.1:{closed_port}/prices", timeout=2)

    (event,) = sink.events()
    http_spans = [s for s in captured.spans if s.instrumentation_scope.name.startswith("opentelemetry.instrumentation")]
    assert len(http_spans) == 1
    outer = _span(captured, "sync-prices")
    # The library span recorded it; the Sentry event links the otelkit span that reported it.
    assert [e.name for e in http_spans[0].events] == ["exception"]
    assert event["contexts"]["trace"]["span_id"] == format_span_id(outer.context.span_id)
    assert outer.attributes[SENTRY_EVENT_ID_ATTRIBUTE] == event["event_id"]


def test_reinit_moves_sentry_to_the_new_dsn_and_off() -> None:
    from otelkit._init import reset

    base = {"service_name": "reinit", "traces_exporter": "none", "metrics_exporter": "none",
            "logs_exporter": "none", "instrument": [], "system_metrics": False}
    with SentrySink() as first, SentrySink() as second:
        try:
            otelkit.init(sentry_dsn=first.dsn, **base)
            otelkit.init(sentry_dsn=second.dsn, **base)
            with pytest.raises(ValueError), otelkit.span("a"):
                raise ValueError("to the second DSN")
            otelkit.init(**base)  # no DSN: Sentry off
            with pytest.raises(ValueError), otelkit.span("b"):
                raise ValueError("to nobody")
        finally:
            reset()
        assert first.events() == []
        assert [e["exception"]["values"][-1]["value"] for e in second.events()] == ["to the second DSN"]


def test_application_own_sentry_client_is_linked_not_replaced(sink: SentrySink) -> None:
    """The app called sentry_sdk.init itself and gave otelkit no DSN: its events still link to the trace."""
    import sentry_sdk

    sentry_sdk.init(dsn=sink.dsn, release="app-own@1", default_integrations=False)
    try:
        with capture_telemetry(service_name="own-client") as captured:
            assert sentry_sdk.get_client().options["release"] == "app-own@1"  # not replaced
            with pytest.raises(LookupError), otelkit.span("lookup"):
                raise LookupError("missing")
            sentry_sdk.flush(timeout=5)
        (event,) = sink.events()
        span = _span(captured, "lookup")
        assert event["release"] == "app-own@1"
        assert event["contexts"]["trace"]["trace_id"] == format_trace_id(span.context.trace_id)
        assert event["contexts"]["trace"]["span_id"] == format_span_id(span.context.span_id)
        assert span.attributes[SENTRY_EVENT_ID_ATTRIBUTE] == event["event_id"]
    finally:
        sentry_sdk.get_client().close(timeout=2)


def test_traces_sample_rate_defaults_to_tracing_off_and_honours_the_variable(
        sink: SentrySink, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentry_sdk

    with _capture(sink):
        assert sentry_sdk.get_client().options["traces_sample_rate"] is None  # tracing stays in OTel
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "0.25")
    with _capture(sink):
        assert sentry_sdk.get_client().options["traces_sample_rate"] == 0.25
