"""Console exporters a person can read: a span tree per trace, one line per log, a metric summary.

They write to ``sys.stderr`` by default (looked up at each write, so pytest's
capture and redirections work), keeping stdout for the program's own output
(JSON logs, CLI results). Colour is used only when the stream is a TTY and
``NO_COLOR`` is not set (``FORCE_COLOR`` forces it).

Spans of one trace reach an exporter in several batches, children before
their parent. :class:`TreeConsoleSpanExporter` therefore buffers spans per
trace until the trace's local root ends (a span with no parent, or whose
parent is remote), then prints the whole tree::

    trace 4bf92f3577b34da6a3ce929d0e0e4736 · 3 spans · 12.4 ms
    └─ GET /orders  server  12.4 ms  http.request.method=GET url.full=http://api/orders
       ├─ SELECT orders  client  3.1 ms  db.statement="SELECT * FROM orders WHERE id = ?"
       └─ GET  client  0.4 ms  ERROR ConnectionError: refused

Memory is bounded: at most ``max_buffered_spans`` spans wait; beyond that, and
for traces whose root has not ended after ``max_wait`` seconds (a long-lived
parent), the oldest trace is printed as it is, marked ``(partial)``.
``force_flush`` and ``shutdown`` print every leftover.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import IO, Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from otelkit._compat import LogRecordExporter, LogRecordExportResult

__all__ = ["ConsoleLogExporter", "ConsoleMetricExporter", "TreeConsoleSpanExporter"]

# Attributes worth a glance, in display order (old and new semconv names).
KEY_ATTRIBUTES = (
    "http.request.method", "http.method", "http.route", "url.full", "http.url", "url.path",
    "http.response.status_code", "http.status_code", "server.address",
    "db.system.name", "db.system", "db.operation.name", "db.query.text", "db.statement",
    "messaging.system", "messaging.operation.type", "messaging.destination.name",
    "otelkit.pipeline.stage", "otelkit.outcome", "otelkit.correlation_id", "error.type",
)
_MAX_VALUE = 80

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"
_LEVEL_COLOURS = {"ERROR": _RED, "FATAL": _RED, "CRITICAL": _RED, "WARN": _YELLOW, "WARNING": _YELLOW,
                  "DEBUG": _DIM, "TRACE": _DIM}


def _use_colour(stream: IO[str], colour: bool | None) -> bool:
    if colour is not None:
        return colour
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _can_encode(stream: IO[str], text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _ascii(text: str, stream: IO[str]) -> str:
    """``text`` made writable to a stream that cannot encode it (e.g. an ASCII console)."""
    text = text.replace("µs", "us").replace("…", "...")
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        return text.encode(encoding, errors="replace").decode(encoding)
    except LookupError:
        return text.encode("ascii", errors="replace").decode("ascii")


# Terminal control characters in user data (span names, log bodies, attribute values): ESC/CSI/OSC
# sequences recolour or clear the terminal and set its title, CR/BS overwrite a printed line, bidi
# overrides reorder it. They are printed escaped (repr style), so the operator sees them, defused.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEP_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with terminal control characters escaped (``\\x1b``); tabs (and newlines if asked) kept."""
    pattern = _CONTROL_KEEP_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape_char, text) if pattern.search(text) else text


def format_duration(nanoseconds: int | None) -> str:
    """``1.2 s``, ``12.4 ms``, ``350 µs``; ``?`` when unknown."""
    if nanoseconds is None or nanoseconds < 0:
        return "?"
    if nanoseconds >= 1_000_000_000:
        return f"{nanoseconds / 1e9:.2f} s"
    if nanoseconds >= 1_000_000:
        return f"{nanoseconds / 1e6:.1f} ms"
    return f"{nanoseconds / 1e3:.0f} µs"


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)
    text = clean(text.replace("\n", " "))
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 1] + "…"
    if isinstance(value, str) and (" " in text or not text):
        return f'"{text}"'
    return text


def key_attributes(attributes: Mapping[str, object] | None) -> str:
    """The :data:`KEY_ATTRIBUTES` present, as ``k=v`` pairs."""
    if not attributes:
        return ""
    return " ".join(f"{k}={_short(attributes[k])}" for k in KEY_ATTRIBUTES if k in attributes)


class _Writer:
    """A stream (or stderr at write time) with colour and glyph choices made once per write."""

    def __init__(self, stream: IO[str] | None, colour: bool | None) -> None:
        self._stream = stream
        self._colour = colour
        self.lock = threading.Lock()

    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    def write(self, text: str) -> None:
        stream = self.stream()
        try:
            stream.write(text)
            stream.flush()
        except (ValueError, OSError):  # closed at interpreter exit: nothing useful to do
            pass

    def colour(self) -> bool:
        return _use_colour(self.stream(), self._colour)


# --- spans -----------------------------------------------------------------------------------------


class _Trace:
    __slots__ = ("first_seen", "spans")

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.spans: list[ReadableSpan] = []


class TreeConsoleSpanExporter(SpanExporter):
    """Prints each finished trace as an indented tree (see the module docstring).

    Args:
        stream: Where to write; ``None`` (default) means ``sys.stderr`` at write time.
        colour: Force colour on or off; ``None`` colours only a TTY (and honours ``NO_COLOR``).
        max_buffered_spans: Spans held while waiting for roots; beyond, the oldest trace prints partial.
        max_wait: Seconds a trace waits for its root before it prints partial.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        colour: bool | None = None,
        max_buffered_spans: int = 10_000,
        max_wait: float = 30.0,
    ) -> None:
        self._out = _Writer(stream, colour)
        self._traces: dict[int, _Trace] = {}
        self._buffered = 0
        self._max_buffered = max(1, max_buffered_spans)
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Buffer the spans; print every trace whose local root is among them."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        ready: list[tuple[list[ReadableSpan], bool]] = []
        now = time.monotonic()
        with self._lock:
            for span in spans:
                context = span.context
                if context is None:
                    continue
                entry = self._traces.get(context.trace_id)
                if entry is None:
                    entry = self._traces[context.trace_id] = _Trace(now)
                entry.spans.append(span)
                self._buffered += 1
                parent = span.parent
                if parent is None or parent.is_remote:
                    ready.append((entry.spans, False))
                    del self._traces[context.trace_id]
                    self._buffered -= len(entry.spans)
            # Overflow and stale traces print partial, oldest first (dicts keep insertion order).
            for trace_id in list(self._traces):
                entry = self._traces[trace_id]
                if self._buffered <= self._max_buffered and now - entry.first_seen < self._max_wait:
                    break
                del self._traces[trace_id]
                self._buffered -= len(entry.spans)
                ready.append((entry.spans, True))
        for group, partial in ready:
            self._print(group, partial)
        return SpanExportResult.SUCCESS

    def _drain(self) -> None:
        with self._lock:
            leftovers = [entry.spans for entry in self._traces.values()]
            self._traces.clear()
            self._buffered = 0
        for group in leftovers:
            self._print(group, True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Print every buffered trace, complete or not."""
        self._drain()
        return True

    def shutdown(self) -> None:
        """Print leftovers; later exports are refused."""
        self._drain()
        self._shutdown = True

    def render(self, spans: Sequence[ReadableSpan], partial: bool = False, *, colour: bool = False,
               unicode: bool = True) -> str:
        """The tree for the spans of one trace, as text (public for tests and ``otelkit demo``)."""
        return _render_tree(spans, partial, colour=colour, unicode=unicode)

    def _print(self, spans: list[ReadableSpan], partial: bool) -> None:
        try:
            stream = self._out.stream()
            text = _render_tree(spans, partial, colour=self._out.colour(), unicode=True)
            if not _can_encode(stream, text):
                text = _ascii(_render_tree(spans, partial, colour=False, unicode=False), stream)
            with self._out.lock:
                self._out.write(text)
        except Exception:  # a console printer must not break the export pipeline
            import logging

            logging.getLogger("otelkit").debug("otelkit: could not print spans", exc_info=True)


def _kind_name(kind: SpanKind) -> str:
    return kind.name.lower()


def _render_tree(spans: Sequence[ReadableSpan], partial: bool, *, colour: bool, unicode: bool) -> str:
    if not spans:
        return ""
    paint = _painter(colour)
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in spans:
        parent = s.parent
        # A parent not in this group (remote, or not ended yet) makes the span a root here.
        key = parent.span_id if parent is not None and parent.span_id in by_id else None
        children.setdefault(key, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: s.start_time or 0)
    roots = children.get(None, [])
    starts = [s.start_time for s in spans if s.start_time is not None]
    ends = [s.end_time for s in spans if s.end_time is not None]
    total = (max(ends) - min(starts)) if starts and ends else None
    first = spans[0].context
    trace_hex = format(first.trace_id, "032x") if first is not None else "?"
    dot = "·" if unicode else "-"
    header = f"trace {trace_hex} {dot} {len(spans)} span{'s' if len(spans) != 1 else ''} {dot} {format_duration(total)}"
    if partial:
        header += " (partial: root not ended yet)"
    lines = [paint(_DIM, header)]
    branch, last, pipe, blank = ("├─ ", "└─ ", "│  ", "   ") if unicode else ("|- ", "`- ", "|  ", "   ")

    def walk(node: ReadableSpan, prefix: str, is_last: bool) -> None:
        lines.append(prefix + (last if is_last else branch) + _span_line(node, paint))
        kids = children.get(node.context.span_id if node.context is not None else None, [])
        for i, kid in enumerate(kids):
            walk(kid, prefix + (blank if is_last else pipe), i == len(kids) - 1)

    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return "\n".join(lines) + "\n"


def _painter(colour: bool) -> Any:
    if not colour:
        return lambda _code, text: text
    return lambda code, text: f"{code}{text}{_RESET}"


def _span_line(span: ReadableSpan, paint: Any) -> str:
    duration = (span.end_time - span.start_time) if span.end_time and span.start_time else None
    parts = [paint(_BOLD, clean(span.name)), paint(_DIM, _kind_name(span.kind)),
             paint(_CYAN, format_duration(duration))]
    status = span.status
    if status is not None and status.status_code is StatusCode.ERROR:
        description = _short(status.description).strip('"') if status.description else ""
        parts.append(paint(_RED, f"ERROR {description}".rstrip()))
    attrs = key_attributes(span.attributes)
    if attrs:
        parts.append(attrs)
    for event in span.events or ():
        if event.name == "exception" and event.attributes and not (status and status.description):
            parts.append(paint(_RED, f"{_short(event.attributes.get('exception.type', 'exception'))}: "
                                     f"{_short(event.attributes.get('exception.message', ''))}"))
            break
    return "  ".join(parts)


# --- logs ------------------------------------------------------------------------------------------


class ConsoleLogExporter(LogRecordExporter):
    """One line per log record: time, level, logger, message, short trace id, correlation id.

    ``12:00:00.123 INFO  app.orders  order stored  trace=4bf92f35 span=00f067aa corr=abc``

    Args:
        stream: Where to write; ``None`` (default) means ``sys.stderr`` at write time.
        colour: Force colour on or off; ``None`` colours only a TTY.
    """

    def __init__(self, stream: IO[str] | None = None, *, colour: bool | None = None) -> None:
        self._out = _Writer(stream, colour)
        self._shutdown = False

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        """Print each record of the batch as one line."""
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        try:
            paint = _painter(self._out.colour())
            text = "".join(format_log_line(item, paint) + "\n" for item in batch)
            if not _can_encode(self._out.stream(), text):
                text = _ascii(text, self._out.stream())
            with self._out.lock:
                self._out.write(text)
        except Exception:
            import logging

            logging.getLogger("otelkit").debug("otelkit: could not print log records", exc_info=True)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self) -> None:
        """Refuse later exports."""
        self._shutdown = True


def format_log_line(item: Any, paint: Any = None) -> str:
    """One readable line for a ``ReadableLogRecord`` (or a bare OTel ``LogRecord``)."""
    paint = paint or _painter(False)
    record = getattr(item, "log_record", item)
    scope = getattr(item, "instrumentation_scope", None)
    stamp = record.timestamp or record.observed_timestamp or time.time_ns()
    when = datetime.fromtimestamp(stamp / 1e9).strftime("%H:%M:%S.%f")[:-3]
    level = (record.severity_text or (record.severity_number.name if record.severity_number else "") or "LOG").upper()
    level_text = paint(_LEVEL_COLOURS.get(level, ""), f"{level:<5}") if level in _LEVEL_COLOURS else f"{level:<5}"
    # Multi-line bodies (tracebacks) keep their newlines; every other control character is escaped.
    body = clean(record.body, keep_newlines=True) if isinstance(record.body, str) else _short(record.body)
    parts = [paint(_DIM, when), level_text]
    if scope is not None and scope.name:
        parts.append(paint(_CYAN, clean(scope.name)))
    parts.append(body)
    tail = []
    if record.trace_id:
        tail.append(f"trace={format(record.trace_id, '032x')[:8]}")
    if record.span_id:
        tail.append(f"span={format(record.span_id, '016x')[:8]}")
    attributes = record.attributes or {}
    correlation = attributes.get("otelkit.correlation_id")
    if correlation:
        tail.append(f"corr={_short(correlation)}")
    if "exception.type" in attributes:
        tail.append(paint(_RED, f"{_short(attributes['exception.type'])}: "
                                f"{_short(attributes.get('exception.message', ''))}"))
    if tail:
        parts.append(paint(_DIM, " ".join(tail)))
    return "  ".join(parts)


# --- metrics ---------------------------------------------------------------------------------------


class ConsoleMetricExporter(MetricExporter):
    """A compact metric summary: one line per metric and attribute set.

    ``  http.client.request.duration [s] histogram {http.request.method=GET} n=12 avg=0.013 min=0.002 max=0.041``

    Args:
        stream: Where to write; ``None`` (default) means ``sys.stderr`` at write time.
        colour: Force colour on or off; ``None`` colours only a TTY.
        max_series: Lines per metric before ``… N more``.
    """

    def __init__(self, stream: IO[str] | None = None, *, colour: bool | None = None, max_series: int = 10,
                 preferred_temporality: dict[type, Any] | None = None,
                 preferred_aggregation: dict[type, Any] | None = None) -> None:
        super().__init__(preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation)
        self._out = _Writer(stream, colour)
        self._max_series = max(1, max_series)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Print the summary of one collection."""
        try:
            text = self.render(metrics_data, colour=self._out.colour())
            if not _can_encode(self._out.stream(), text):
                text = _ascii(text, self._out.stream())
            if text:
                with self._out.lock:
                    self._out.write(text)
        except Exception:
            import logging

            logging.getLogger("otelkit").debug("otelkit: could not print metrics", exc_info=True)
        return MetricExportResult.SUCCESS

    def render(self, metrics_data: MetricsData, *, colour: bool = False) -> str:
        """The summary as text (empty when there is no point)."""
        paint = _painter(colour)
        lines: list[str] = []
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    lines.extend(self._metric_lines(metric, paint))
        if not lines:
            return ""
        header = paint(_DIM, f"metrics at {datetime.now().strftime('%H:%M:%S')}")
        return "\n".join([header, *lines]) + "\n"

    def _metric_lines(self, metric: Any, paint: Any) -> Iterable[str]:
        data = metric.data
        if isinstance(data, Histogram):
            kind = "histogram"
        elif isinstance(data, Sum):
            kind = "counter" if data.is_monotonic else "updowncounter"
        elif isinstance(data, Gauge):
            kind = "gauge"
        else:
            kind = type(data).__name__.lower()
        unit = f" [{metric.unit}]" if metric.unit else ""
        points = list(getattr(data, "data_points", ()))
        for point in points[: self._max_series]:
            attrs = clean(",".join(f"{k}={v}" for k, v in sorted((point.attributes or {}).items())))
            label = f"{{{attrs}}} " if attrs else ""
            yield f"  {paint(_BOLD, clean(metric.name))}{unit} {paint(_DIM, kind)} {label}{_point_value(point)}"
        if len(points) > self._max_series:
            yield f"  {metric.name} … {len(points) - self._max_series} more series"

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


def _num(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _point_value(point: Any) -> str:
    if hasattr(point, "bucket_counts"):
        count = point.count
        if not count:
            return "n=0"
        return (f"n={count} avg={_num(point.sum / count)} min={_num(point.min)} max={_num(point.max)} "
                f"sum={_num(point.sum)}")
    return _num(point.value)
