"""Test your own telemetry: capture spans, metrics and logs in memory.

Two ways in:

* the pytest fixture ``otelkit_capture`` (registered automatically through the
  ``pytest11`` entry point when otelkit is installed)::

      def test_checkout(otelkit_capture):
          checkout()
          assert otelkit_capture.spans.names() == ["charge", "checkout"]
          assert otelkit_capture.spans.span("charge").attributes["amount"] == 10
          assert otelkit_capture.metric_points("orders.placed")[0].value == 1
          assert otelkit_capture.logs[0].trace_id == otelkit_capture.spans.trace_id("checkout")

  ``@pytest.mark.otelkit(instrument=["httpx"], service_name="shop")`` passes
  ``init()`` keyword arguments to the fixture;

* the context manager :func:`capture_telemetry`, anywhere::

      with capture_telemetry() as captured:
          run_job()
      assert "job" in captured.spans.names()

Both call ``otelkit.init()`` with every exporter set to ``none`` and in-memory
processors/readers added (synchronous: a span is captured the moment it ends),
and reset otelkit on exit. By default nothing is auto-instrumented and system
metrics are off (pass ``instrument=...`` / ``system_metrics=True`` to change
that). If the code under test calls ``otelkit.init()`` itself with other
arguments, that re-initialises otelkit and replaces the in-memory pipeline:
pass the application's ``init()`` arguments to the capture instead.

The ``otelkit_otlp_receiver`` and ``otelkit_collector`` fixtures (a real OTLP receiver, and the
real ``rotel`` collector in front of it) come from the same plugin
(:mod:`otelkit.testing._plugin`), built on :mod:`otelkit.testing._receiver`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, overload

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit._compat import InMemoryLogRecordExporter, SimpleLogRecordProcessor

__all__ = ["CapturedLog", "CapturedSpans", "CapturedTelemetry", "MetricPoint", "capture_telemetry"]

_DEFAULTS: dict[str, Any] = {
    "service_name": "otelkit-test",
    "instrument": (),
    "system_metrics": False,
}


class CapturedSpans(Sequence[ReadableSpan]):
    """Finished spans in the order they ended, with lookup helpers."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self._spans = list(spans)

    @overload
    def __getitem__(self, index: int) -> ReadableSpan: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ReadableSpan]: ...

    def __getitem__(self, index: int | slice) -> ReadableSpan | Sequence[ReadableSpan]:
        return self._spans[index]

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        return f"CapturedSpans({self.names()!r})"

    def names(self) -> list[str]:
        """Span names, in the order the spans ended."""
        return [s.name for s in self._spans]

    def named(self, name: str) -> list[ReadableSpan]:
        """Every span called ``name``."""
        return [s for s in self._spans if s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one span called ``name``; ``AssertionError`` (listing what exists) if not exactly one."""
        found = self.named(name)
        if len(found) != 1:
            raise AssertionError(f"expected exactly one span named {name!r}, found {len(found)}; "
                                 f"spans: {self.names()!r}")
        return found[0]

    def trace_id(self, name: str) -> str:
        """The trace ID of the one span called ``name``, as lower-case hex (as on :class:`CapturedLog`)."""
        context = self.span(name).context
        return format(context.trace_id, "032x") if context is not None else ""

    def span_id(self, name: str) -> str:
        """The span ID of the one span called ``name``, as lower-case hex (as on :class:`CapturedLog`)."""
        context = self.span(name).context
        return format(context.span_id, "016x") if context is not None else ""

    def roots(self) -> list[ReadableSpan]:
        """Spans without a local parent."""
        return [s for s in self._spans if s.parent is None or s.parent.is_remote]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """Direct children of ``parent``, by start time."""
        parent_id = parent.context.span_id if parent.context is not None else None
        kids = [s for s in self._spans if s.parent is not None and s.parent.span_id == parent_id]
        return sorted(kids, key=lambda s: s.start_time or 0)

    def tree(self) -> str:
        """The spans rendered as the console exporter's tree (handy in assertion messages)."""
        from otelkit._console import _render_tree

        by_trace: dict[int, list[ReadableSpan]] = {}
        for s in self._spans:
            if s.context is not None:
                by_trace.setdefault(s.context.trace_id, []).append(s)
        return "".join(_render_tree(group, False, colour=False, unicode=True) for group in by_trace.values())


@dataclass(frozen=True)
class MetricPoint:
    """One data point: ``value`` for counters and gauges; ``count``/``sum``/``min``/``max`` for histograms."""

    name: str
    kind: str
    unit: str
    attributes: Mapping[str, Any]
    value: float | int | None = None
    count: int | None = None
    sum: float | int | None = None
    min: float | int | None = None
    max: float | int | None = None
    bucket_counts: tuple[int, ...] = field(default=())
    explicit_bounds: tuple[float, ...] = field(default=())


@dataclass(frozen=True)
class CapturedLog:
    """A log record as exported: body, level, logger, trace/span ids (hex, or ``None``), attributes."""

    body: Any
    level: str | None
    severity_number: int | None
    logger: str | None
    trace_id: str | None
    span_id: str | None
    attributes: Mapping[str, Any]
    record: Any = field(repr=False, compare=False, default=None)


def _hex(value: int | None, width: int) -> str | None:
    return format(value, f"0{width}x") if value else None


class CapturedTelemetry:
    """What :func:`capture_telemetry` collected. Every accessor reads the current state."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.metric_reader = InMemoryMetricReader()
        self.log_exporter = InMemoryLogRecordExporter()

    @property
    def spans(self) -> CapturedSpans:
        """Finished spans so far."""
        return CapturedSpans(self.span_exporter.get_finished_spans())

    @property
    def logs(self) -> list[CapturedLog]:
        """Log records exported so far."""
        out = []
        for item in self.log_exporter.get_finished_logs():
            record = item.log_record
            scope = item.instrumentation_scope
            out.append(CapturedLog(
                body=record.body,
                level=record.severity_text,
                severity_number=record.severity_number.value if record.severity_number is not None else None,
                logger=scope.name if scope is not None else None,
                trace_id=_hex(record.trace_id, 32),
                span_id=_hex(record.span_id, 16),
                attributes=dict(record.attributes or {}),
                record=item,
            ))
        return out

    def metrics(self) -> dict[str, list[MetricPoint]]:
        """Collect now: metric name -> its points (cumulative since capture started)."""
        data = self.metric_reader.get_metrics_data()
        out: dict[str, list[MetricPoint]] = {}
        if data is None:
            return out
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = out.setdefault(metric.name, [])
                    kind = type(metric.data).__name__.lower()
                    for p in getattr(metric.data, "data_points", ()):
                        attrs = dict(p.attributes or {})
                        if hasattr(p, "bucket_counts"):
                            points.append(MetricPoint(metric.name, kind, metric.unit or "", attrs, count=p.count,
                                                      sum=p.sum, min=p.min, max=p.max,
                                                      bucket_counts=tuple(p.bucket_counts),
                                                      explicit_bounds=tuple(p.explicit_bounds)))
                        else:
                            points.append(MetricPoint(metric.name, kind, metric.unit or "", attrs, value=p.value))
        return out

    def metric_points(self, name: str, **attributes: Any) -> list[MetricPoint]:
        """Points of metric ``name`` whose attributes include ``attributes`` (collected now)."""
        return [p for p in self.metrics().get(name, [])
                if all(p.attributes.get(k) == v for k, v in attributes.items())]

    def clear(self) -> None:
        """Forget captured spans and logs (metrics are cumulative; compare before/after instead)."""
        self.span_exporter.clear()
        self.log_exporter.clear()

    def init_kwargs(self) -> dict[str, Any]:
        """The in-memory pieces as ``otelkit.init()`` keyword arguments."""
        return {
            "traces_exporter": "none",
            "metrics_exporter": "none",
            "logs_exporter": "none",
            "span_processors": [SimpleSpanProcessor(self.span_exporter)],
            "metric_readers": [self.metric_reader],
            "log_processors": [SimpleLogRecordProcessor(self.log_exporter)],
        }


@contextmanager
def capture_telemetry(**init_kwargs: Any) -> Iterator[CapturedTelemetry]:
    """Initialise otelkit with in-memory exporters for the duration of the block.

    Args:
        **init_kwargs: Extra ``otelkit.init()`` arguments (``service_name``,
            ``instrument``, ``log_level``...). Defaults: ``service_name="otelkit-test"``,
            ``instrument=()``, ``system_metrics=False``.

    Yields:
        The :class:`CapturedTelemetry`, filling up as the code under test runs.
    """
    import otelkit
    from otelkit import _init

    captured = CapturedTelemetry()
    kwargs = {**_DEFAULTS, **init_kwargs, **captured.init_kwargs()}
    otelkit.init(**kwargs)
    try:
        yield captured
    finally:
        _init.reset()
