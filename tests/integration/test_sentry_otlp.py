"""Sentry over OTLP (``OTELKIT_SENTRY_OTLP``): one more destination next to the user's collector.

A real rotel collector (``otelkit_collector``) stands for the user's own stack, and :class:`SentrySink`
for Sentry: it records what arrives on ``/api/<project>/integration/otlp/v1/{traces,logs}`` (path,
headers, protobuf body) and on the envelope endpoint (error events). A local HTTP server records the
headers of an instrumented httpx call. Nothing is mocked: otelkit's own export pipeline sends both ways.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sentry_sink import HeaderRecorder, SentrySink, header_recorder

import otelkit
from otelkit._export import stats
from otelkit.testing._receiver import RotelCollector

pytestmark = pytest.mark.usefixtures("fresh_otelkit")

SECRET = "sk_live_" + "9f8e7d6c5b4a3210"


@pytest.fixture
def recorder() -> Iterator[HeaderRecorder]:
    with header_recorder() as r:
        yield r


@pytest.fixture
def sink() -> Iterator[SentrySink]:
    with SentrySink(project_id=4242) as s:
        yield s


def _init_both(collector: RotelCollector, sink: SentrySink, **kwargs: Any) -> None:
    options: dict[str, Any] = {
        "service_name": "checkout", "endpoint": collector.grpc_endpoint, "protocol": "grpc",
        "traces_exporter": "otlp", "logs_exporter": "otlp", "metrics_exporter": "none",
        "system_metrics": False, "instrument": ["httpx"], "sentry_dsn": sink.dsn, "sentry_otlp": "traces,logs"}
    options.update(kwargs)
    otelkit.init(**options)


def test_spans_and_logs_reach_sentry_once_and_the_collector_too(
        otelkit_collector: RotelCollector, sink: SentrySink, recorder: HeaderRecorder) -> None:
    _init_both(otelkit_collector, sink)
    status = {s.name: s for s in otelkit.integration_status()}["sentry"]
    assert status.state == "enabled" and "traces and logs also to Sentry over OTLP" in status.reason, status
    marker = uuid.uuid4().hex
    log = logging.getLogger("checkout.orders")
    with pytest.raises(ValueError), otelkit.span("checkout.order", attributes={"order": marker}) as order:
        response = httpx.get(f"{recorder.url}?api_key={SECRET}", timeout=30)
        log.warning("payment declined for order %s", marker)
        raise ValueError(f"declined {marker}")
    trace_id = format(order.get_span_context().trace_id, "032x")
    report = otelkit.shutdown()
    assert response.status_code == 204
    assert report.dropped == 0, report

    # Sentry's OTLP endpoint: the path from the DSN, the key in X-Sentry-Auth only, each span exactly once.
    posts = sink.posts()
    assert {p.path for p in posts} <= {"/api/4242/integration/otlp/v1/traces", "/api/4242/integration/otlp/v1/logs"}
    for post in posts:
        assert post.headers["x-sentry-auth"].startswith("Sentry sentry_key=publickey, sentry_version=7"), post.headers
        assert "publickey" not in post.path
    sentry_spans = [s for s in sink.otlp_spans() if s.trace_id.hex() == trace_id]
    span_ids = [s.span_id.hex() for s in sentry_spans]
    assert len(span_ids) == len(set(span_ids)) == 2, [s.name for s in sentry_spans]  # the order and its GET
    assert SECRET.encode() not in b"".join(p.body for p in posts)  # scrubbed like every other destination
    assert sink.transactions() == []  # sentry-sdk's own tracing stays off: no second copy of the spans

    # The user's collector got the same spans.
    receiver = otelkit_collector.receiver
    collected = receiver.wait_for(
        lambda: (lambda found: found if len(found) >= 2 else None)(
            [s for s in receiver.spans() if s.trace_id == trace_id]),
        timeout=60, message="the two spans of the order at the collector")
    assert sorted(s.span_id for s in collected) == sorted(span_ids)

    # The error event is in the same trace, on the span that raised; that span names the event.
    (event,) = sink.events()
    assert event["contexts"]["trace"]["trace_id"] == trace_id
    assert event["contexts"]["trace"]["span_id"] == format(order.get_span_context().span_id, "016x")
    (raised,) = [s for s in sentry_spans if s.name == "checkout.order"]
    event_ids = [kv.value.string_value for kv in raised.attributes if kv.key == "sentry.event_id"]
    assert event_ids == [event["event_id"]]

    # W3C propagation untouched: traceparent of this trace, no sentry-trace.
    (headers,) = recorder.requests
    assert headers["traceparent"].split("-")[1] == trace_id
    assert "sentry-trace" not in headers

    # The warning went to Sentry's logs endpoint, in the same trace.
    records = [r for p in sink.posts("logs") for r in p.log_records() if marker in r.body.string_value]
    assert len(records) == 1 and records[0].trace_id.hex() == trace_id, records


def test_traces_only_sends_no_logs_to_sentry_and_reinit_sends_no_copy(otelkit_collector: RotelCollector,
                                                                       sink: SentrySink) -> None:
    # As under `otelkit run` with a program calling init() itself: same settings (no-op), then other settings
    # (a new pipeline replaces the old one): still one copy of each span at Sentry.
    _init_both(otelkit_collector, sink, sentry_otlp="traces", instrument=[])
    _init_both(otelkit_collector, sink, sentry_otlp="traces", instrument=[])
    _init_both(otelkit_collector, sink, sentry_otlp="traces", instrument=[], service_version="2.0")
    logging.getLogger("checkout").warning("not for sentry")
    with otelkit.span("only-traces"):
        pass
    otelkit.shutdown()
    assert [s.name for s in sink.otlp_spans()] == ["only-traces"]
    assert sink.posts("logs") == []


def test_sentry_refusing_counts_drops_and_the_collector_still_gets_everything(
        otelkit_collector: RotelCollector) -> None:
    with SentrySink(otlp_status=401) as sink:
        _init_both(otelkit_collector, sink, sentry_otlp="traces", instrument=[])
        with otelkit.span("refused-by-sentry") as span:
            pass
        trace_id = format(span.get_span_context().trace_id, "032x")
        report = otelkit.shutdown()
    assert sink.posts("traces"), "Sentry's endpoint was never called"
    assert report["traces"].dropped.get(stats.EXPORT_FAILED) == 1, report
    causes = stats.STATS.causes_for("traces")
    assert "/api/1/integration/otlp/v1/traces" in causes[stats.EXPORT_FAILED], causes
    assert "publickey" not in str(report) and "publickey" not in causes[stats.EXPORT_FAILED]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: [s for s in receiver.spans() if s.trace_id == trace_id], timeout=60,
                      message="the span at the collector")


def test_without_a_dsn_sentry_otlp_is_a_no_op_with_a_reason() -> None:
    otelkit.init(service_name="nodsn", traces_exporter="none", logs_exporter="none", metrics_exporter="none",
                 system_metrics=False, instrument=[], sentry_otlp="traces")
    status = {s.name: s for s in otelkit.integration_status()}["sentry"]
    assert status.state == "disabled"
    assert "OTELKIT_SENTRY_OTLP=traces does nothing without a DSN" in status.reason
    otelkit.shutdown()
