"""``OTEL_METRICS_EXEMPLAR_FILTER`` reaches the SDK MeterProvider that ``otelkit.init()`` builds.

Histogram points are read from a real ``InMemoryMetricReader`` passed to ``init(metric_readers=...)``:
``always_off`` -> no exemplar even inside a sampled span; ``always_on`` -> exemplars even outside any span;
``trace_based`` (the default) -> an exemplar only for the measurement made inside a sampled span.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

import otelkit
from otelkit import _init

HISTOGRAM = "test.exemplar.duration"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    yield InMemoryMetricReader()
    _init.reset()


def _init_with(reader: InMemoryMetricReader) -> None:
    otelkit.init(service_name="exemplar-test", traces_exporter="none", metrics_exporter="none",
                 logs_exporter="none", instrument=(), system_metrics=False, metric_readers=[reader])


def _record(*, in_span: bool, value: float, attrs: dict[str, str]) -> int | None:
    """Record one histogram value; return the trace id of the span it was recorded in, if any."""
    histogram = metrics.get_meter("exemplar-test").create_histogram(HISTOGRAM, unit="s")
    if not in_span:
        histogram.record(value, attrs)
        return None
    with trace.get_tracer("exemplar-test").start_as_current_span("work") as span:
        assert span.get_span_context().trace_flags.sampled
        histogram.record(value, attrs)
        return span.get_span_context().trace_id


def _points(reader: InMemoryMetricReader) -> dict[str, HistogramDataPoint]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, HistogramDataPoint] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == HISTOGRAM:
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        out[str(dict(point.attributes or {})["where"])] = point
    assert out, f"{HISTOGRAM} was not collected"
    return out


def test_always_off_records_no_exemplar_even_in_a_sampled_span(reader: InMemoryMetricReader,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    _init_with(reader)
    settings = otelkit.get_settings()
    assert settings is not None and settings.exemplar_filter == "always_off"
    _record(in_span=True, value=0.25, attrs={"where": "span"})
    points = _points(reader)
    assert points["span"].count == 1
    assert list(points["span"].exemplars) == []


def test_always_on_records_exemplars_with_and_without_a_span(reader: InMemoryMetricReader,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
    _init_with(reader)
    trace_id = _record(in_span=True, value=0.25, attrs={"where": "span"})
    _record(in_span=False, value=0.5, attrs={"where": "nospan"})
    points = _points(reader)
    (in_span,) = points["span"].exemplars
    assert in_span.value == 0.25 and in_span.trace_id == trace_id
    (outside,) = points["nospan"].exemplars  # trace_based would have dropped this one
    assert outside.value == 0.5 and not outside.trace_id


def test_trace_based_default_records_an_exemplar_only_inside_a_sampled_span(reader: InMemoryMetricReader) -> None:
    _init_with(reader)
    settings = otelkit.get_settings()
    assert settings is not None and settings.exemplar_filter == "trace_based"
    trace_id = _record(in_span=True, value=0.25, attrs={"where": "span"})
    _record(in_span=False, value=0.5, attrs={"where": "nospan"})
    points = _points(reader)
    (exemplar,) = points["span"].exemplars
    assert exemplar.value == 0.25
    assert exemplar.trace_id == trace_id and exemplar.span_id
    assert points["nospan"].count == 1
    assert list(points["nospan"].exemplars) == []


def test_trace_based_skips_measurements_in_an_unsampled_span(reader: InMemoryMetricReader,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    _init_with(reader)
    histogram = metrics.get_meter("exemplar-test").create_histogram(HISTOGRAM, unit="s")
    with trace.get_tracer("exemplar-test").start_as_current_span("unsampled") as span:
        assert not span.get_span_context().trace_flags.sampled
        histogram.record(1.0, {"where": "unsampled"})
    point = _points(reader)["unsampled"]
    assert point.count == 1
    assert list(point.exemplars) == []
