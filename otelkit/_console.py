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
    MetricExporter,
    MetricExportResult,
    MetricsData,
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
_MAX_REMEMBERED_NAMES = 4096

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


MAX_TRACEBACK_LINES = 40


def traceback_lines(stacktrace: object, prefix: str, paint: Any) -> list[str]:
    """An exception's formatted traceback as indented lines (control characters escaped).

    Long ones keep their first line and their last lines (where the error is), with a count of what was left out.
    """
    if not isinstance(stacktrace, str) or not stacktrace.strip():
        return []
    lines = [clean(line) for line in stacktrace.rstrip("\n").splitlines()]
    if len(lines) > MAX_TRACEBACK_LINES:
        keep = MAX_TRACEBACK_LINES - 2
        lines = [lines[0], f"  … {len(lines) - 1 - keep} more lines …", *lines[-keep:]]
    return [prefix + paint(_RED if i == len(lines) - 1 else _DIM, line) for i, line in enumerate(lines)]


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
        # Names of recently seen spans by span ID, so a link (consumer -> producer) names its target.
        self._names: dict[int, str] = {}

    def _remember(self, spans: Iterable[ReadableSpan]) -> None:
        names = self._names
        for span in spans:
            if span.context is not None:
                names[span.context.span_id] = span.name
        while len(names) > _MAX_REMEMBERED_NAMES:
            del names[next(iter(names))]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Buffer the spans; print every trace whose local root is among them."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        ready: list[tuple[list[ReadableSpan], bool]] = []
        now = time.monotonic()
        with self._lock:
            self._remember(spans)
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
        return _render_tree(spans, partial, colour=colour, unicode=unicode, names=dict(self._names))

    def _print(self, spans: list[ReadableSpan], partial: bool) -> None:
        try:
            stream = self._out.stream()
            with self._lock:
                names = dict(self._names)
            text = _render_tree(spans, partial, colour=self._out.colour(), unicode=True, names=names)
            if not _can_encode(stream, text):
                text = _ascii(_render_tree(spans, partial, colour=False, unicode=False, names=names), stream)
            with self._out.lock:
                self._out.write(text)
        except Exception:  # a console printer must not break the export pipeline
            import logging

            logging.getLogger("otelkit").debug("otelkit: could not print spans", exc_info=True)


def _kind_name(kind: SpanKind) -> str:
    return kind.name.lower()


MAX_LINKS_SHOWN = 3


def _tracebacks(spans: Sequence[ReadableSpan]) -> dict[int | None, str]:
    """span ID -> the traceback to print under it: one per exception, under the innermost span it went through.

    An exception leaving nested spans is recorded on each (instrumented libraries, the SDK's own context
    manager); its traceback grows as it unwinds. Printed once, the fullest text, where it was raised.
    """
    found: dict[tuple[object, object], tuple[int, int | None, str]] = {}  # key -> (end, span_id, text)
    fullest: dict[tuple[object, object], str] = {}
    for span in spans:
        for event in span.events or ():
            attributes = event.attributes
            if event.name != "exception" or not attributes:
                continue
            text = attributes.get("exception.stacktrace")
            if not isinstance(text, str) or not text:
                continue
            key = (attributes.get("exception.type"), attributes.get("exception.message"))
            end = span.end_time or 0
            if key not in found or end < found[key][0]:
                found[key] = (end, span.context.span_id if span.context is not None else None, text)
            if len(text) > len(fullest.get(key, "")):
                fullest[key] = text
    return {span_id: fullest[key] for key, (_end, span_id, _text) in found.items()}


def _link_lines(span: ReadableSpan, names: Mapping[int, str], unicode: bool) -> list[str]:
    """``↳ linked to send orders (trace 97eb8b80, span 91cbf562)``: where a consumer's message came from."""
    links = list(span.links or ())
    out = []
    arrow = "↳" if unicode else "->"
    for link in links[:MAX_LINKS_SHOWN]:
        context = link.context
        name = names.get(context.span_id)
        what = f"{clean(name)} " if name else ""
        out.append(f"{arrow} linked to {what}(trace {context.trace_id:032x}, span {context.span_id:016x})")
    if len(links) > MAX_LINKS_SHOWN:
        out.append(f"{arrow} … and {len(links) - MAX_LINKS_SHOWN} more links")
    return out


def _render_tree(spans: Sequence[ReadableSpan], partial: bool, *, colour: bool, unicode: bool,
                 names: Mapping[int, str] | None = None) -> str:
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
    tracebacks = _tracebacks(spans)
    branch, last, pipe, blank = ("├─ ", "└─ ", "│  ", "   ") if unicode else ("|- ", "`- ", "|  ", "   ")

    def walk(node: ReadableSpan, prefix: str, is_last: bool, correlation: object = None) -> None:
        lines.append(prefix + (last if is_last else branch) + _span_line(node, paint, correlation))
        correlation = (node.attributes or {}).get(_CORRELATION, correlation)
        kids = children.get(node.context.span_id if node.context is not None else None, [])
        below = prefix + (blank if is_last else pipe) + (pipe if kids else blank)
        for link in _link_lines(node, names or {}, unicode):
            lines.append(below + paint(_CYAN, link))
        stacktrace = tracebacks.get(node.context.span_id if node.context is not None else None)
        if stacktrace:
            lines.extend(traceback_lines(stacktrace, below, paint))
        for i, kid in enumerate(kids):
            walk(kid, prefix + (blank if is_last else pipe), i == len(kids) - 1, correlation)

    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return "\n".join(lines) + "\n"


def _painter(colour: bool) -> Any:
    if not colour:
        return lambda _code, text: text
    return lambda code, text: f"{code}{text}{_RESET}"


_CORRELATION = "otelkit.correlation_id"


def _span_line(span: ReadableSpan, paint: Any, inherited_correlation: object = None) -> str:
    duration = (span.end_time - span.start_time) if span.end_time and span.start_time else None
    parts = [paint(_BOLD, clean(span.name)), paint(_DIM, _kind_name(span.kind)),
             paint(_CYAN, format_duration(duration))]
    status = span.status
    if status is not None and status.status_code is StatusCode.ERROR:
        description = _short(status.description).strip('"') if status.description else ""
        parts.append(paint(_RED, f"ERROR {description}".rstrip()))
    attributes = span.attributes
    if attributes and inherited_correlation is not None and attributes.get(_CORRELATION) == inherited_correlation:
        # Shown on the span that started it; its children repeat it on every line otherwise.
        attributes = {k: v for k, v in attributes.items() if k != _CORRELATION}
    attrs = key_attributes(attributes)
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
            text = "".join(format_log_record(item, paint) for item in batch)
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


def format_log_record(item: Any, paint: Any = None) -> str:
    """:func:`format_log_line` plus, for a record with an exception, its traceback (indented), newline-ended."""
    paint = paint or _painter(False)
    text = format_log_line(item, paint) + "\n"
    record = getattr(item, "log_record", item)
    stacktrace = (record.attributes or {}).get("exception.stacktrace")
    lines = traceback_lines(stacktrace, "    ", paint)
    return text + "".join(line + "\n" for line in lines)


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
    """A short metric summary: the application's metrics one line per series, then one line each for the
    process and for otelkit's own export counts.

    ::

        metrics at 12:00:00
          jobs.done [{job}]  emails  3
          job.duration [s]  n=2 avg 200 ms max 300 ms
          process  cpu 0.48 s (user 0.40 s, system 0.08 s) · memory 52.2 MiB · 2 threads · 6 fds · gc 148
          telemetry  exported 4 spans, 2 log records · dropped none

    Series are labelled by their attribute values (keys that only repeat the metric's name, such as
    ``messaging.operation.type``, are left out). Host metrics (``system.*``) and utilisation gauges are not
    shown: they mean something on a dashboard over time, not in one reading (the first utilisation reading
    of a process is always 0). Everything still goes over OTLP when an endpoint is set.

    Args:
        stream: Where to write; ``None`` (default) means ``sys.stderr`` at write time.
        colour: Force colour on or off; ``None`` colours only a TTY.
        max_series: Lines per metric before ``… N more``.
    """

    def __init__(self, stream: IO[str] | None = None, *, colour: bool | None = None, max_series: int = 5,
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
        runtime: dict[str, Any] = {}
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    name = metric.name
                    if name.startswith(_RUNTIME_PREFIXES) or name.startswith("otelkit.telemetry."):
                        runtime[name] = metric
                    elif not name.startswith(_HIDDEN_PREFIXES):
                        lines.extend(self._metric_lines(metric, paint))
        process = _process_line(runtime)
        if process:
            lines.append(f"  {paint(_BOLD, 'process')}  {process}")
        telemetry = _telemetry_line(runtime)
        if telemetry:
            lines.append(f"  {paint(_BOLD, 'telemetry')}  {telemetry}")
        if not lines:
            return ""
        header = paint(_DIM, f"metrics at {datetime.now().strftime('%H:%M:%S')}")
        return "\n".join([header, *lines]) + "\n"

    def _metric_lines(self, metric: Any, paint: Any) -> Iterable[str]:
        data = metric.data
        unit = f" [{clean(metric.unit)}]" if metric.unit else ""
        points = list(getattr(data, "data_points", ()))
        if not points:
            return
        for point in points[: self._max_series]:
            label = _series_label(point.attributes or {})
            shown = f"  {paint(_DIM, label)}" if label else ""
            yield f"  {paint(_BOLD, clean(metric.name))}{unit}{shown}  {_point_value(point, metric.unit)}"
        if len(points) > self._max_series:
            yield f"  {clean(metric.name)} … {len(points) - self._max_series} more series"
    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


# Runtime metrics summed up in the "process" line; host metrics are left out of the console summary.
_RUNTIME_PREFIXES = ("process.", "cpython.", "otelkit.telemetry.")
_HIDDEN_PREFIXES = ("system.",)
# Attribute keys that only repeat what the metric's name says.
_REDUNDANT_KEYS = frozenset(("messaging.operation.name", "messaging.operation.type", "cpython.gc.generation"))


def _series_label(attributes: Mapping[str, Any]) -> str:
    return clean(" ".join(str(v) for k, v in sorted(attributes.items()) if k not in _REDUNDANT_KEYS))


def _num(value: float | int) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


def _with_unit(value: float | int, unit: str | None) -> str:
    if unit == "s":
        return format_duration(int(value * 1e9))
    if unit == "ms":
        return format_duration(int(value * 1e6))
    if unit == "By":
        return _bytes(value)
    return _num(value)


def _bytes(value: float | int) -> str:
    amount = float(value)
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or suffix == "GiB":
            return f"{amount:.0f} {suffix}" if suffix == "B" else f"{amount:.1f} {suffix}"
        amount /= 1024
    return f"{amount:.1f} GiB"  # pragma: no cover - the loop always returns


def _point_value(point: Any, unit: str | None = None) -> str:
    if hasattr(point, "bucket_counts"):
        count = point.count
        if not count:
            return "n=0"
        return (f"n={count} avg {_with_unit(point.sum / count, unit)} min {_with_unit(point.min, unit)} "
                f"max {_with_unit(point.max, unit)}")
    return _with_unit(point.value, unit)


def _values(metric: Any) -> list[tuple[Mapping[str, Any], float]]:
    if metric is None:
        return []
    return [(p.attributes or {}, p.value) for p in getattr(metric.data, "data_points", ()) if hasattr(p, "value")]


def _process_line(runtime: Mapping[str, Any]) -> str:
    """CPU time, memory, threads, fds and GC of this process, from the runtime metrics (utilisation left out)."""
    parts: list[str] = []
    cpu = {str(a.get("type", "")): v for a, v in _values(runtime.get("process.cpu.time"))}
    if cpu:
        detail = ", ".join(f"{k} {v:.2f} s" for k, v in cpu.items() if k)
        parts.append(f"cpu {sum(cpu.values()):.2f} s" + (f" ({detail})" if detail else ""))
    memory = _values(runtime.get("process.memory.usage"))
    if memory:
        parts.append(f"memory {_bytes(memory[0][1])}")
    threads = _values(runtime.get("process.thread.count"))
    if threads:
        parts.append(f"{_num(threads[0][1])} threads")
    fds = _values(runtime.get("process.open_file_descriptor.count"))
    if fds:
        parts.append(f"{_num(fds[0][1])} fds")
    gc = _values(runtime.get("cpython.gc.collections"))
    if gc:
        parts.append(f"gc {_num(sum(v for _a, v in gc))} collections")
    return " · ".join(parts)


_ITEMS = {"traces": "spans", "metrics": "metric points", "logs": "log records"}


def _telemetry_line(runtime: Mapping[str, Any]) -> str:
    """What otelkit exported and dropped so far, by signal (and reason)."""
    exported = [f"{_num(v)} {_ITEMS.get(str(a.get('otelkit.signal')), a.get('otelkit.signal'))}"
                for a, v in _values(runtime.get("otelkit.telemetry.exported")) if v]
    dropped = [f"{_num(v)} {_ITEMS.get(str(a.get('otelkit.signal')), a.get('otelkit.signal'))} "
               f"({a.get('otelkit.reason', '?')})" for a, v in _values(runtime.get("otelkit.telemetry.dropped")) if v]
    if not exported and not dropped and "otelkit.telemetry.exported" not in runtime:
        return ""
    return (f"exported {', '.join(exported) or 'nothing yet'} · "
            f"dropped {', '.join(clean(d) for d in dropped) or 'none'}")
