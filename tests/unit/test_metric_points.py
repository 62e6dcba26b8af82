"""``_compat.add_point``/``record_point``: the same exported metric data as the SDK's ``add``/``record``.

otelkit records its pipeline and integration points through these (they remember, per cached attribute dict, its
cleaned copy and each view stream's aggregation). Each test records one sequence twice, through the remembered
path on one ``MeterProvider`` and through the SDK's own ``add``/``record`` on an identically configured one, and
compares everything exported: points, attributes, sums, counts, buckets, min/max, exemplars (all but their
timestamps, which differ between two recordings).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics._internal.instrument import _ProxyCounter, _ProxyHistogram, _ProxyUpDownCounter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal.measurement_consumer import SynchronousMeasurementConsumer
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from otelkit import _cardinality, _compat

VERIFIED = sdk_version.startswith(_compat.VERIFIED_SDK)

# otelkit's cached sets: each dict object is passed again and again, never mutated
QUEUE_A = {"messaging.system": "redis", "messaging.destination.name": "a", "messaging.operation.name": "process"}
QUEUE_B = {"messaging.system": "redis", "messaging.destination.name": "b", "messaging.operation.name": "process"}
WITH_INT = {"db.system.name": "postgresql", "server.port": 5432, "ok": True, "ratio": 0.5}
SETS = (QUEUE_A, QUEUE_B, WITH_INT)
DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}


@pytest.fixture(autouse=True)
def fresh_points() -> Iterator[None]:
    _compat.reset_points()
    yield
    _compat.reset_points()


def _nan(value: Any) -> Any:
    """NaN compares unequal to itself: a marker instead (SDKs before 1.45 aggregate a NaN measurement)."""
    return "NaN" if isinstance(value, float) and value != value else value


def _exported(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    out: list[tuple[Any, ...]] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = []
                for p in metric.data.data_points:
                    exemplars = [(dict(e.filtered_attributes or {}), _nan(e.value), e.span_id, e.trace_id)
                                 for e in p.exemplars]
                    points.append((dict(p.attributes or {}), _nan(getattr(p, "value", None)),
                                   _nan(getattr(p, "sum", None)), getattr(p, "count", None),
                                   tuple(getattr(p, "bucket_counts", ()) or ()), _nan(getattr(p, "min", None)),
                                   _nan(getattr(p, "max", None)), exemplars))
                out.append((sm.scope.name, metric.name, metric.unit, type(metric.data).__name__,
                            getattr(metric.data, "aggregation_temporality", None), points))
    return out


class _Side:
    """One provider and its instruments; ``fast`` records through ``_compat``'s point functions."""

    def __init__(self, fast: bool, views: tuple[View, ...] = (), temporality: dict[type, Any] | None = None,
                 exemplar_filter: Any = None, proxy: bool = False) -> None:
        self.fast = fast
        self.reader = InMemoryMetricReader(preferred_temporality=temporality)
        kwargs: dict[str, Any] = {"metric_readers": [self.reader], "views": list(views)}
        if exemplar_filter is not None:
            kwargs["exemplar_filter"] = exemplar_filter
        self.provider = MeterProvider(**kwargs)
        self.tracer = TracerProvider().get_tracer("t")
        meter = self.provider.get_meter("otelkit.pipeline")
        self.counter: Any = meter.create_counter("messaging.client.consumed.messages", unit="{message}")
        self.histogram: Any = meter.create_histogram("messaging.process.duration", unit="s",
                                                     explicit_bucket_boundaries_advisory=[0.01, 0.1, 1.0])
        if proxy:  # what otelkit's ProxyMeter hands out: the API's proxies, pointed at the SDK's instruments
            counter, histogram = _ProxyCounter(self.counter.name), _ProxyHistogram(self.histogram.name)
            counter._real_instrument, histogram._real_instrument = self.counter, self.histogram
            self.counter, self.histogram = counter, histogram

    def add(self, amount: float, attributes: dict[str, Any]) -> None:
        if self.fast:
            _compat.add_point(self.counter, amount, attributes)
        else:
            self.counter.add(amount, attributes)

    def record(self, amount: float, attributes: dict[str, Any]) -> None:
        if self.fast:
            _compat.record_point(self.histogram, amount, attributes)
        else:
            self.histogram.record(amount, attributes)


def _sequence(side: _Side, rounds: int = 4) -> None:
    for i in range(rounds):
        for n, attributes in enumerate(SETS):
            side.add(1 + n, attributes)
            side.record(0.005 * (i + 1) * (n + 1), attributes)
        with side.tracer.start_as_current_span("in a sampled span"):  # histogram and counter exemplars
            side.add(2, QUEUE_A)
            side.record(0.5 + i, QUEUE_A)
            side.record(5.0, QUEUE_B)


def _both(**kwargs: Any) -> tuple[_Side, _Side]:
    return _Side(True, **kwargs), _Side(False, **kwargs)


def _assert_same(run: Callable[[_Side], None], **kwargs: Any) -> list[tuple[Any, ...]]:
    fast, sdk = _both(**kwargs)
    # The same random state for both: the span IDs and the counters' exemplar reservoir (a random pick) match.
    random.seed(17)
    run(fast)
    random.seed(17)
    run(sdk)
    exported = _exported(fast.reader)
    assert exported == _exported(sdk.reader)
    return exported


def _spy_on_consume(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The measurements that go through the SDK's ``SynchronousMeasurementConsumer`` from now on (the remembered
    path stands in for it)."""
    calls: list[object] = []
    sdk_consume = SynchronousMeasurementConsumer.consume_measurement

    def spy(self: Any, measurement: Any) -> None:
        calls.append(measurement)
        sdk_consume(self, measurement)

    monkeypatch.setattr(SynchronousMeasurementConsumer, "consume_measurement", spy)
    return calls


def test_the_fast_path_is_taken_on_a_verified_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _compat.points_fast() is VERIFIED
    if not VERIFIED:
        pytest.skip(f"SDK {sdk_version}: points take the SDK path")
    calls = _spy_on_consume(monkeypatch)
    side = _Side(True)
    side.add(1, QUEUE_A)
    side.record(0.2, QUEUE_A)
    assert calls == []  # the remembered path stands in for the consumer...
    assert [p[1] for m in _exported(side.reader) for p in m[5]] == [1, None]  # ...and the points are there
    side.counter.add(1, QUEUE_A)  # the SDK's own call still goes through it
    assert len(calls) == 1


def test_an_unverified_sdk_takes_the_sdk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "sdk_version", lambda: "1.40.0")
    _compat.reset_points()
    assert not _compat.points_fast()
    calls = _spy_on_consume(monkeypatch)
    _assert_same(_sequence)
    assert len(calls) == 2 * (4 * (2 * len(SETS) + 3))  # every point of both sides went through the SDK


def test_same_points_attributes_sums_buckets_and_exemplars() -> None:
    exported = _assert_same(_sequence)
    counter = next(m for m in exported if m[1] == "messaging.client.consumed.messages")[5]
    assert sorted(p[1] for p in counter) == [4 * 2, 4 * 3, 4 * 1 + 4 * 2]  # QUEUE_A: with the span's adds
    histogram = next(m for m in exported if m[1] == "messaging.process.duration")[5]
    assert {tuple(sorted(p[0])) for p in histogram} == {tuple(sorted(s)) for s in SETS}
    assert any(p[7] for p in histogram) and any(p[7] for p in counter)  # exemplars recorded in the span


def test_same_through_the_api_proxies_otelkit_hands_out() -> None:
    _assert_same(_sequence, proxy=True)


def test_a_proxy_without_a_real_instrument_drops_the_point() -> None:
    counter, histogram = _ProxyCounter("c"), _ProxyHistogram("h")
    _compat.add_point(counter, 1, QUEUE_A)  # nothing to record into, as the proxy's own add: no error
    _compat.record_point(histogram, 0.1, QUEUE_A)


def test_views_attribute_keys_and_drop_aggregation_apply() -> None:
    views = (View(instrument_name="messaging.process.duration", attribute_keys={"messaging.destination.name"},
                  aggregation=ExplicitBucketHistogramAggregation([0.05, 5.0])),
             View(instrument_name="messaging.client.consumed.messages", aggregation=DropAggregation()))
    exported = _assert_same(_sequence, views=views)
    assert [m[1] for m in exported] == ["messaging.process.duration"]  # the dropped counter exports nothing
    points = exported[0][5]
    assert sorted(p[0].get("messaging.destination.name", "") for p in points) == ["", "a", "b"]
    assert all(set(p[0]) <= {"messaging.destination.name"} for p in points)  # the view's keys only
    assert all(len(p[4]) == 3 for p in points)  # the view's buckets
    # the keys the view filtered out come back on the exemplars, as the SDK's own
    assert any(e[0].get("messaging.system") == "redis" for p in points for e in p[7])


def test_two_views_on_one_instrument_each_keep_their_own_stream() -> None:
    views = (View(instrument_name="messaging.process.duration", name="by_destination",
                  attribute_keys={"messaging.destination.name"}),
             View(instrument_name="messaging.process.duration", name="by_system", attribute_keys={"messaging.system"}))
    exported = _assert_same(_sequence, views=views)
    assert {m[1] for m in exported} >= {"by_destination", "by_system"}


def test_delta_temporality_across_collections() -> None:
    fast, sdk = _both(temporality=DELTA)
    for side in (fast, sdk):
        random.seed(17)
        _sequence(side, 2)
    first = _exported(fast.reader)
    assert first == _exported(sdk.reader)
    for side in (fast, sdk):
        side.add(7, QUEUE_B)
        side.record(0.3, QUEUE_B)
    second = _exported(fast.reader)
    assert second == _exported(sdk.reader)
    assert {m[4] for m in second} == {AggregationTemporality.DELTA}
    counter = next(m for m in second if m[1] == "messaging.client.consumed.messages")[5]
    assert [(p[0], p[1]) for p in counter] == [(QUEUE_B, 7)]  # only this interval's point
    assert _exported(fast.reader) == _exported(sdk.reader) == []  # nothing new: no points


@pytest.mark.parametrize("exemplar_filter", [AlwaysOffExemplarFilter(), AlwaysOnExemplarFilter()])
def test_exemplar_filters_are_respected(exemplar_filter: Any) -> None:
    exported = _assert_same(_sequence, exemplar_filter=exemplar_filter)
    exemplars = [e for m in exported for p in m[5] for e in p[7]]
    if isinstance(exemplar_filter, AlwaysOffExemplarFilter):
        assert exemplars == []
    else:
        assert any(e[2] is None for e in exemplars)  # outside a span too


@pytest.fixture
def cardinality_limit() -> Iterator[None]:
    _cardinality.reset()
    assert _cardinality.configure(3)
    yield
    _cardinality.configure(_cardinality.DEFAULT_LIMIT)
    _cardinality.reset()


@pytest.mark.usefixtures("cardinality_limit")
def test_the_cardinality_cap_applies_to_remembered_sets() -> None:
    sets = [{"messaging.destination.name": f"q{i}", "messaging.system": "redis"} for i in range(6)]

    def run(side: _Side) -> None:
        for _ in range(3):
            for attributes in sets:  # two sets fit (limit 3: limit - 1), the other four overflow, every time
                side.add(1, attributes)
                side.record(0.2, attributes)

    exported = _assert_same(run)
    counter = next(m for m in exported if m[1] == "messaging.client.consumed.messages")[5]
    assert sorted((p[0].get("messaging.destination.name", "overflow"), p[1]) for p in counter) == [
        ("overflow", 12), ("q0", 3), ("q1", 3)]
    assert _cardinality.overflows()["messaging.client.consumed.messages"] == 2 * 12  # both sides, counted


def test_sets_the_sdk_would_clean_take_its_path() -> None:
    odd: list[dict[str, Any]] = [{"tags": ("a", "b")}, {"none": None}, {}, {"": "empty key"}, {1: "int key"}]
    if VERIFIED:  # a list value: cleaned into a tuple (SDK 1.40 cannot key a stream on it at all)
        odd.append({"tags": ["a", "b"]})

    def run(side: _Side) -> None:
        for attributes in odd:
            side.add(1, attributes)
            side.record(0.1, attributes)

    _assert_same(run)


def test_invalid_amounts_are_dropped_as_the_sdk_drops_them() -> None:
    def run(side: _Side) -> None:
        for amount in (-1, float("nan"), float("inf"), 0, 0.25, True):
            side.add(amount, QUEUE_A)
            side.record(amount, QUEUE_A)

    _assert_same(run)


def test_many_dicts_are_forgotten_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "_POINT_MEMO_MAX", 4)

    def run(side: _Side) -> None:
        for i in range(20):  # per-call dicts (an error type...), and a cached one between them
            side.add(1, {"messaging.destination.name": f"q{i % 5}"})
            side.add(1, QUEUE_A)
            side.record(0.1, QUEUE_A)

    _assert_same(run)


@pytest.mark.skipif(not hasattr(MeterProvider, "add_metric_reader"), reason="this SDK adds no reader later")
def test_a_reader_added_or_removed_later_gets_the_sdks_points() -> None:
    fast, sdk = _both()
    late = {side: InMemoryMetricReader() for side in (fast, sdk)}
    for side in (fast, sdk):
        random.seed(17)
        _sequence(side, 2)  # remembered for one reader
        side.provider.add_metric_reader(late[side])
        _sequence(side, 1)  # now two readers: the new one sees only these points
        side.provider.remove_metric_reader(side.reader)
        _sequence(side, 1)
    assert _exported(late[fast]) == _exported(late[sdk])
    counter = next(m for m in _exported(late[fast]) if m[1] == "messaging.client.consumed.messages")[5]
    assert sorted(p[1] for p in counter) == [2 * 2, 2 * 3, 2 * (1 + 2)]  # two rounds after it was added


def test_trace_based_exemplars_follow_the_current_spans_sampled_flag() -> None:
    sampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    unsampled = NonRecordingSpan(SpanContext(0xABD, 0xDF0, is_remote=True, trace_flags=TraceFlags(0)))

    def run(side: _Side) -> None:
        for span, value in ((sampled, 0.02), (unsampled, 0.2), (INVALID_SPAN, 2.0)):
            with trace.use_span(span):
                side.record(value, QUEUE_B)
                side.add(1, QUEUE_B)
        with trace.use_span(unsampled):
            side.record(0.03, QUEUE_A)  # the bucket's only measurement: unsampled, so no exemplar

    exported = _assert_same(run)
    exemplars = [(p[0] == QUEUE_B, e[1], e[2], e[3]) for m in exported for p in m[5] for e in p[7]]
    assert sorted(exemplars) == [(True, 0.02, 0xDEF, 0xABC), (True, 1, 0xDEF, 0xABC)]


def test_an_up_down_counter_and_a_given_context_are_the_sdks() -> None:
    """The servers' ``http.server.active_requests`` (+1 then -1) and their duration recorded in the span's context
    given explicitly (the current context being another one): the same points and exemplars as the SDK's own."""

    def run(side: _Side) -> None:
        meter = side.provider.get_meter("otelkit.servers")
        active: Any = meter.create_up_down_counter("http.server.active_requests", unit="{request}")
        if side.counter.__class__ is _ProxyCounter:
            proxy = _ProxyUpDownCounter(active.name)
            proxy._real_instrument = active
            active = proxy
        span = side.tracer.start_span("request")
        span_context = trace.set_span_in_context(span)
        for i in range(3):
            for n, attributes in enumerate(SETS):
                if side.fast:
                    _compat.add_point(active, 1, attributes)
                    _compat.add_point(active, -1, attributes, span_context)
                    _compat.record_point(side.histogram, 0.1 * (i + n), attributes, span_context)
                    _compat.add_point(active, float("nan"), attributes)  # dropped with the SDK's warning
                else:
                    active.add(1, attributes)
                    active.add(-1, attributes, context=span_context)
                    side.histogram.record(0.1 * (i + n), attributes, context=span_context)
                    active.add(float("nan"), attributes)
        span.end()

    for proxy in (False, True):
        exported = _assert_same(run, proxy=proxy, exemplar_filter=AlwaysOnExemplarFilter())
        active_points = next(m for m in exported if m[1] == "http.server.active_requests")[5]
        # The NaN is dropped (with the SDK's warning) by the SDKs that check UpDownCounter amounts; older ones
        # (1.40) add it to the sum. Either way _assert_same found the fast path's points equal to the SDK's own.
        assert sorted(p[1] for p in active_points) in ([0, 0, 0], ["NaN", "NaN", "NaN"])
        histogram = next(m for m in exported if m[1] == "messaging.process.duration")[5]
        # the given context's span is on the exemplars, though no span is current
        assert all(e[2] is not None for p in histogram for e in p[7]) and any(p[7] for p in histogram)


def test_an_up_down_counter_takes_the_remembered_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if not VERIFIED:
        pytest.skip(f"SDK {sdk_version}: points take the SDK path")
    side = _Side(True)
    active: Any = side.provider.get_meter("m").create_up_down_counter("http.server.active_requests")
    _compat.add_point(active, 1, QUEUE_A)  # learnt: through the SDK's streams once
    calls = _spy_on_consume(monkeypatch)
    _compat.add_point(active, -1, QUEUE_A, trace.set_span_in_context(INVALID_SPAN))
    assert calls == []
    point = next(m for m in _exported(side.reader) if m[1] == "http.server.active_requests")[5][0]
    assert point[1] == 0
