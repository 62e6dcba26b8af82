"""otelkit.init() -> otelkit's exporters -> the real rotel collector -> receiver, and no feedback loops."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics, trace

import otelkit
from otelkit import _names
from otelkit.testing._receiver import OtlpReceiver, RotelCollector

pytestmark = pytest.mark.usefixtures("fresh_otelkit_and_stats")


def _configure(monkeypatch: pytest.MonkeyPatch, endpoint: str, protocol: str) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "export-init-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTELKIT_SYSTEM_METRICS", "false")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_init_exports_all_signals_through_rotel(otelkit_collector: RotelCollector, monkeypatch: pytest.MonkeyPatch,
                                                 protocol: str) -> None:
    _configure(monkeypatch,
               otelkit_collector.grpc_endpoint if protocol == "grpc" else otelkit_collector.http_endpoint, protocol)
    otelkit.init()
    tracer = trace.get_tracer("export-init")
    log = logging.getLogger("export_init_app")
    log.setLevel(logging.INFO)
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner"):
            log.info("inside")
    metrics.get_meter("export-init").create_counter("export_init.items").add(5)
    report = otelkit.shutdown()

    receiver = otelkit_collector.receiver
    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["outer"].resource["service.name"] == "export-init-test"
    (record,) = receiver.wait_for(lambda: receiver.logs("inside"))
    assert record.trace_id == format(outer.get_span_context().trace_id, "032x")
    assert receiver.wait_for_metric("export_init.items")[-1].value == 5
    # otelkit's own health metrics travel with the application's.
    exported = receiver.wait_for_metric(_names.TELEMETRY_EXPORTED.name)
    assert {p.attributes[_names.ATTR_SIGNAL] for p in exported} >= {"traces", "logs"}
    assert report["traces"].exported == 2 and report["logs"].exported == 1
    assert report.dropped == 0 and not report.timed_out
    assert str(report).startswith("otelkit shutdown in")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exporter_failures_never_become_exported_logs(otelkit_otlp_receiver: OtlpReceiver,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                       protocol: str) -> None:
    # The collector fails the first requests: otelkit, the SDK, grpc/urllib3 all log about it. None of
    # those records may reach the log pipeline (reliability.md B12: upstream re-exports 5 of 6).
    _configure(monkeypatch,
               otelkit_otlp_receiver.grpc_endpoint if protocol == "grpc" else otelkit_otlp_receiver.http_endpoint,
               protocol)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE", times=3)
    otelkit.init()
    logging.getLogger("otelkit").setLevel(logging.DEBUG)  # as chatty as it gets
    for name in ("opentelemetry", "grpc", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    app = logging.getLogger("feedback_app")
    app.setLevel(logging.INFO)
    try:
        app.warning("the only application line")
        otelkit_otlp_receiver.wait_for(lambda: otelkit_otlp_receiver.logs(), timeout=30)
        otelkit.shutdown()
    finally:
        for name in ("otelkit", "opentelemetry", "grpc", "urllib3"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert [r.body for r in otelkit_otlp_receiver.logs()] == ["the only application line"]
    assert len([a for a in otelkit_otlp_receiver.attempts if a.outcome != "ok"]) == 3
