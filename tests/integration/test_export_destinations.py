"""Non-OTLP destinations built by _export: Prometheus scrape endpoint, console, the embedded default."""

from __future__ import annotations

import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otelkit import _export
from otelkit._config import resolve
from otelkit._export import factory
from otelkit.testing._receiver import free_port


def test_prometheus_exporter_serves_metrics() -> None:
    port = free_port()
    settings = resolve(environ={"OTEL_SERVICE_NAME": "prom", "OTEL_METRICS_EXPORTER": "prometheus",
                                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                                "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    readers = _export.build_metric_readers(settings)
    mp = MeterProvider(metric_readers=readers, shutdown_on_exit=False)
    mp.get_meter("prom").create_counter("prom_test.requests", unit="1").add(7, {"route": "/x"})
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        mp.shutdown()
    assert 'prom_test_requests_ratio_total{route="/x"} 7.0' in body or 'route="/x"} 7.0' in body, body[:2000]
    # A second build in the same process reuses the running server instead of failing on the port.
    again = _export.build_metric_readers(settings)
    assert len(again) == 1
    MeterProvider(metric_readers=again, shutdown_on_exit=False).shutdown()


def test_console_traces_print_a_tree(capsys: pytest.CaptureFixture[str]) -> None:
    settings = resolve(environ={"OTEL_SERVICE_NAME": "console", "OTEL_TRACES_EXPORTER": "console"})
    tp = TracerProvider(shutdown_on_exit=False)
    for processor in _export.build_span_processors(settings):
        tp.add_span_processor(processor)
    with tp.get_tracer("c").start_as_current_span("outer-console"):
        with tp.get_tracer("c").start_as_current_span("inner-console"):
            pass
    tp.shutdown()
    err = capsys.readouterr().err
    assert "outer-console" in err and "inner-console" in err


def test_embedded_default_without_collector_summarises_metrics_at_exit(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(factory, "probe_local_collector", lambda timeout=0.05: None)
    settings = resolve(environ={"OTEL_SERVICE_NAME": "embedded"})
    readers = _export.build_metric_readers(settings)
    mp = MeterProvider(metric_readers=readers, shutdown_on_exit=False)
    mp.get_meter("e").create_counter("embedded.count").add(3)
    assert "embedded.count" not in capsys.readouterr().err  # nothing printed while running
    mp.shutdown()
    assert "embedded.count" in capsys.readouterr().err
