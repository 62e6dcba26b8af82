"""The shutdown report says why telemetry was lost: a refused collector is not a shutdown timeout."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider

import otelkit
from otelkit._export import HttpSender, make_span_processor
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS
from otelkit.testing._receiver import refused_endpoint

pytestmark = pytest.mark.usefixtures("fresh_otelkit_and_stats")


def test_refused_collector_metrics_are_export_failed_not_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "report-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{refused_endpoint()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTELKIT_SYSTEM_METRICS", "false")
    # Any wait on a refused collector (retries, backoff) would last until a 30 s timeout: giving up at once is
    # then told apart from waiting by half of that, a margin no load on this machine comes near.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
    otelkit.init()
    metrics.get_meter("report-test").create_counter("report_test.items").add(3)
    report = otelkit.shutdown(timeout=30.0)
    signal = report["metrics"]
    assert signal.dropped.get(_stats.EXPORT_FAILED, 0) >= 1, str(report)
    assert _stats.SHUTDOWN_TIMEOUT not in signal.dropped and not signal.timed_out, str(report)
    assert "collector unreachable" in str(report), str(report)
    # The deadline was not what stopped it: it gave up at once.
    assert report.duration < report.deadline / 2, str(report)


def test_spans_for_a_collector_known_down_are_export_failed_not_timed_out() -> None:
    sender = HttpSender("traces", f"http://{refused_endpoint()}/v1/traces")
    processor = make_span_processor(sender, schedule_delay=60.0, export_timeout=1.0)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    tracer = tp.get_tracer("report-test")
    for i in range(10):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    # Each flush makes one attempt even during backoff: three refused attempts open the circuit.
    for _ in range(3):
        assert processor.force_flush(1000) is False
    assert processor.pipeline._circuit_open
    assert processor.pipeline.shutdown(timeout_millis=2000) is True
    dropped = STATS.dropped_for("traces")
    assert dropped == {_stats.EXPORT_FAILED: 10}, dropped
    assert "unreachable" in STATS.causes_for("traces")[_stats.EXPORT_FAILED]


def test_console_exports_are_counted_in_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    otelkit.init(service_name="console-report", traces_exporter="console", metrics_exporter="console",
                 logs_exporter="console", instrument=(), system_metrics=False)
    log = logging.getLogger("console_report_app")
    log.setLevel(logging.INFO)
    with trace.get_tracer("console-report").start_as_current_span("work"):
        log.info("printed line")
    metrics.get_meter("console-report").create_counter("console_report.items").add(1)
    report = otelkit.shutdown(timeout=2.0)
    printed = capsys.readouterr()
    assert "printed line" in printed.out + printed.err
    assert report["logs"].exported == 1, str(report)
    assert report["traces"].exported == 1, str(report)
    assert report["metrics"].exported >= 1, str(report)
    assert report.dropped == 0 and not report.timed_out, str(report)
