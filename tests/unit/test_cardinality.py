"""Bounded metric cardinality: the spec's overflow series, counted, on every SDK MeterProvider once applied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View

from otelkit import _cardinality
from otelkit._config import ConfigError, resolve
from otelkit._export.stats import STATS, report_from_stats


@pytest.fixture
def limit() -> Iterator[None]:
    _cardinality.reset()
    assert _cardinality.configure(5)
    yield
    _cardinality.configure(_cardinality.DEFAULT_LIMIT)
    _cardinality.reset()


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, object], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [(dict(p.attributes or {}), p.value if hasattr(p, "value") else p.sum)
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


@pytest.mark.usefixtures("limit")
def test_new_sets_beyond_the_limit_go_to_the_overflow_series() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    counter = meter.create_counter("orders")
    for i in range(50):
        counter.add(1, {"user.id": f"u{i}"})
    counter.add(10, {"user.id": "u0"})  # an existing set keeps its own series
    points = _points(reader, "orders")
    assert len(points) == 5  # limit - 1 sets + the overflow series
    overflow = [v for a, v in points if a == {"otel.metric.overflow": True}]
    assert overflow == [46]
    assert sum(v for _, v in points) == 60  # nothing lost
    assert dict(points[0][0]) == {"user.id": "u0"} and points[0][1] == 11
    assert _cardinality.overflows() == {"orders": 46}


@pytest.mark.usefixtures("limit")
def test_the_limit_is_per_stream_and_honours_views() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(instrument_name="latency", attribute_keys={"route"})])
    meter = provider.get_meter("t")
    latency = meter.create_histogram("latency")
    other = meter.create_up_down_counter("other")
    for i in range(40):
        latency.record(0.1, {"route": f"/r{i % 3}", "user.id": f"u{i}"})  # the view keeps 3 sets: no overflow
        other.add(1, {"k": str(i % 4)})  # 4 sets: exactly limit - 1
    assert len(_points(reader, "latency")) == 3
    assert len(_points(reader, "other")) == 4
    assert _cardinality.overflows() == {}


@pytest.mark.usefixtures("limit")
def test_overflows_are_in_the_shutdown_report() -> None:
    reader = InMemoryMetricReader()
    counter = MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("hits")
    for i in range(8):
        counter.add(1, {"url.full": f"/x/{i}"})
    report = report_from_stats({}, {}, 0.1, 5.0)
    assert report["metrics"].metric_overflows == {"hits": 4}
    assert "4 measurements over the cardinality limit in 1 stream(s) (hits)" in str(report)
    STATS.reset()  # a forked child starts counting afresh
    assert _cardinality.overflows() == {}


def test_the_limit_is_a_setting() -> None:
    assert resolve(environ={}).metric_cardinality_limit == 2000
    assert resolve(environ={"OTELKIT_METRIC_CARDINALITY_LIMIT": "50"}).metric_cardinality_limit == 50
    with pytest.raises(ConfigError, match="OTELKIT_METRIC_CARDINALITY_LIMIT.*integer >= 2"):
        resolve(environ={"OTELKIT_METRIC_CARDINALITY_LIMIT": "1"})
