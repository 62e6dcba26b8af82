"""Test support for the pipeline tests: in-memory SDK providers installed as the OTel globals.

The previous globals are restored afterwards, so otelkit's proxy providers (set
once per process by ``otelkit.init()`` in other tests) are left as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import opentelemetry.metrics._internal as metrics_internal
import opentelemetry.trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit._correlation import CorrelationSpanProcessor


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        points.extend(m.data.data_points)
        return points

    def point(self, metric: str, **attrs: Any) -> Any:
        found = [p for p in self.points(metric) if all(p.attributes.get(k) == v for k, v in attrs.items())]
        assert len(found) == 1, f"{metric} {attrs}: {[dict(p.attributes) for p in self.points(metric)]}"
        return found[0]


@contextmanager
def in_memory_providers() -> Iterator[Telemetry]:
    """Install in-memory SDK providers as the OTel globals for the block (use through an ``otel`` fixture)."""
    saved = (trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE._done,
             metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE._done)
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(CorrelationSpanProcessor())
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    trace_api._TRACER_PROVIDER = tp
    trace_api._TRACER_PROVIDER_SET_ONCE._done = True
    metrics_internal._METER_PROVIDER = mp
    metrics_internal._METER_PROVIDER_SET_ONCE._done = True
    try:
        yield Telemetry(exporter, reader, tp)
    finally:
        (trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE._done,
         metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE._done) = saved
        tp.shutdown()
        mp.shutdown()
