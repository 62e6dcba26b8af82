"""otelkit's own drop metric reaches a real collector (rotel) through otelkit.init().

Spans go to a refused endpoint with a queue of 100, so 1000 spans overflow it; metrics go through
rotel to the receiver, where otelkit.telemetry.dropped{otelkit.signal=traces, otelkit.reason=queue_full}
must show the drops.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace

import otelkit
from otelkit import _names
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS
from otelkit.testing._receiver import RotelCollector, refused_endpoint

pytestmark = pytest.mark.usefixtures("fresh_otelkit_and_stats")


def test_drop_metric_reaches_the_collector(otelkit_collector: RotelCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "self-metrics-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://{refused_endpoint()}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{otelkit_collector.http_endpoint}/v1/metrics")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
    monkeypatch.setenv("OTELKIT_SYSTEM_METRICS", "false")
    otelkit.init()
    tracer = trace.get_tracer("self-metrics")
    for i in range(1000):
        with tracer.start_as_current_span("burst", attributes={"seq": i}):
            pass
    receiver = otelkit_collector.receiver

    def queue_full_points() -> list[object]:
        return [p for p in receiver.metrics(_names.TELEMETRY_DROPPED.name)
                if p.attributes.get(_names.ATTR_SIGNAL) == "traces"
                and p.attributes.get(_names.ATTR_REASON) == _stats.QUEUE_FULL and p.value >= 900]

    (point, *_) = receiver.wait_for(queue_full_points, timeout=30)
    assert point.is_monotonic and point.resource["service.name"] == "self-metrics-test"  # type: ignore[attr-defined]
    assert STATS.dropped_for("traces")[_stats.QUEUE_FULL] >= 900
