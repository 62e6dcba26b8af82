"""Readable console exporters, fed by real SDK providers: span trees, log lines, metric summaries."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otelkit import _logs
from otelkit._console import ConsoleLogExporter, ConsoleMetricExporter, TreeConsoleSpanExporter, format_duration


@pytest.fixture(autouse=True)
def _empty_otel_context() -> Iterator[None]:
    """Start from an empty OTel context: a span or baggage leaked by another module's test must not leak in."""
    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


DURATION = r"\d+(\.\d+)? (µs|ms|s)"


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def tracer_and_exporter(out: io.StringIO) -> Iterator[tuple[trace.Tracer, TreeConsoleSpanExporter]]:
    exporter = TreeConsoleSpanExporter(out, colour=False)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_tree_with_indentation_kinds_durations_status_and_key_attributes(
    tracer_and_exporter: tuple[trace.Tracer, TreeConsoleSpanExporter], out: io.StringIO
) -> None:
    tracer, _ = tracer_and_exporter
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "GET", "url.full": "http://api/orders",
                                                  "irrelevant": "hidden"}) as root:
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                          attributes={"db.statement": "SELECT * FROM orders WHERE id = ?"}):
            with tracer.start_as_current_span("decode"):
                pass
        assert out.getvalue() == ""  # children ended, but the tree waits for its root
        try:
            with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER,
                                              attributes={"messaging.destination.name": "jobs"}):
                raise ConnectionError("refused")
        except ConnectionError:
            pass
    lines = out.getvalue().splitlines()
    trace_hex = format(root.get_span_context().trace_id, "032x")
    assert re.fullmatch(rf"trace {trace_hex} · 4 spans · {DURATION}", lines[0])
    assert re.fullmatch(rf"└─ GET /orders  server  {DURATION}  http.request.method=GET url.full=http://api/orders",
                        lines[1])
    assert re.fullmatch(rf"   ├─ SELECT orders  client  {DURATION}  "
                        r'db.statement="SELECT \* FROM orders WHERE id = \?"', lines[2])
    assert re.fullmatch(rf"   │  └─ decode  internal  {DURATION}", lines[3])
    assert re.fullmatch(rf"   └─ publish  producer  {DURATION}  ERROR ConnectionError: refused  "
                        r"messaging.destination.name=jobs", lines[4])
    assert "hidden" not in out.getvalue() and "\x1b[" not in out.getvalue()
    # The exception went through publish and GET /orders (both recorded it): its traceback prints once,
    # under publish, where it was raised.
    assert lines[5] == "         Traceback (most recent call last):"
    assert lines[-1] == "         ConnectionError: refused"
    assert sum(1 for line in lines if "Traceback" in line) == 1


def test_spans_arriving_in_batches_children_first_make_one_tree(out: io.StringIO) -> None:
    exporter = TreeConsoleSpanExporter(out, colour=False)
    provider = TracerProvider()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=2, schedule_delay_millis=60_000)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        for i in range(5):
            with tracer.start_as_current_span(f"child-{i}"):
                pass
    assert processor.force_flush(10_000)
    provider.shutdown()
    text = out.getvalue()
    assert text.count("trace ") == 1
    assert "6 spans" in text and "(partial" not in text
    assert [line.split()[1] for line in text.splitlines()[1:]] == ["root"] + [f"child-{i}" for i in range(5)]


def test_remote_parent_makes_a_local_root(
    tracer_and_exporter: tuple[trace.Tracer, TreeConsoleSpanExporter], out: io.StringIO
) -> None:
    tracer, _ = tracer_and_exporter
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("consume", context=ctx, kind=SpanKind.CONSUMER):
        pass
    assert out.getvalue().startswith(f"trace {0xABC:032x} · 1 span · ")
    assert "└─ consume  consumer" in out.getvalue()


def test_unfinished_root_prints_partial_on_flush_and_shutdown(
    tracer_and_exporter: tuple[trace.Tracer, TreeConsoleSpanExporter], out: io.StringIO
) -> None:
    tracer, exporter = tracer_and_exporter
    root = tracer.start_span("long-running")
    with tracer.start_as_current_span("step", context=trace.set_span_in_context(root)):
        pass
    assert out.getvalue() == ""
    assert exporter.force_flush()
    assert "(partial: root not ended yet)" in out.getvalue()
    assert "└─ step  internal" in out.getvalue()
    with tracer.start_as_current_span("step-2", context=trace.set_span_in_context(root)):
        pass
    exporter.shutdown()
    assert out.getvalue().count("(partial") == 2
    root.end()


def test_memory_is_bounded(out: io.StringIO) -> None:
    exporter = TreeConsoleSpanExporter(out, colour=False, max_buffered_spans=3)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    roots = [tracer.start_span(f"root-{i}") for i in range(4)]
    for root in roots:
        with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
            pass
    # 4 waiting children > 3: the oldest trace was printed (partial) to stay in bounds
    assert out.getvalue().count("(partial") == 1
    assert f"{roots[0].get_span_context().trace_id:032x}" in out.getvalue()
    for root in roots:
        root.end()
    provider.shutdown()


def test_stale_traces_print_after_max_wait(out: io.StringIO) -> None:
    exporter = TreeConsoleSpanExporter(out, colour=False, max_wait=0.0)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    root = tracer.start_span("open")
    with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
        pass
    assert "(partial" in out.getvalue()
    root.end()
    provider.shutdown()


def test_colour_and_ascii_fallback() -> None:
    coloured = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(TreeConsoleSpanExporter(coloured, colour=True)))
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    provider.add_span_processor(SimpleSpanProcessor(TreeConsoleSpanExporter(ascii_out, colour=False)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("a"), tracer.start_as_current_span("b"):
        pass
    assert "\x1b[1ma\x1b[0m" in coloured.getvalue()
    ascii_out.flush()
    text = ascii_out.buffer.getvalue().decode("ascii")  # type: ignore[attr-defined]
    assert "`- a  internal" in text and "   `- b  internal" in text
    provider.shutdown()


def test_format_duration() -> None:
    assert format_duration(350_000) == "350 µs"
    assert format_duration(12_400_000) == "12.4 ms"
    assert format_duration(2_500_000_000) == "2.50 s"
    assert format_duration(None) == "?"


def test_log_lines_from_the_logging_pipeline(out: io.StringIO) -> None:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogExporter(out, colour=False)))
    tracer_provider = TracerProvider()
    tracer = tracer_provider.get_tracer("t")
    handler = _logs.OtelkitLogHandler(provider, logging.INFO)
    logger = logging.getLogger("app.console")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with tracer.start_as_current_span("s") as span:
            logger.warning("order %s stored", 7)
        try:
            raise ValueError("bad input")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second, *traceback = out.getvalue().splitlines()
    assert traceback[0] == "    Traceback (most recent call last):" and traceback[-1] == "    ValueError: bad input"
    short_trace = f"{span.get_span_context().trace_id:032x}"[:8]
    assert re.fullmatch(rf"\d\d:\d\d:\d\d\.\d{{3}}  WARN   app.console  order 7 stored  "
                        rf"trace={short_trace} span=\w{{8}}", first)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}  ERROR  app.console  failed  ValueError: \"?bad input\"?", second)


def test_metric_summary(out: io.StringIO) -> None:
    exporter = ConsoleMetricExporter(out, colour=False)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("t")
    meter.create_counter("jobs.done", unit="{job}").add(3, {"queue": "emails"})
    histogram = meter.create_histogram("job.duration", unit="s")
    for value in (0.1, 0.3):
        histogram.record(value)
    meter.create_up_down_counter("queue.depth").add(-2)
    assert reader.force_flush(10_000)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"metrics at \d\d:\d\d:\d\d", lines[0])
    assert "  jobs.done [{job}]  emails  3" in lines
    assert "  job.duration [s]  n=2 avg 200.0 ms min 100.0 ms max 300.0 ms" in lines
    assert "  queue.depth  -2" in lines
    provider.shutdown()


def test_metric_summary_caps_series(out: io.StringIO) -> None:
    exporter = ConsoleMetricExporter(out, colour=False, max_series=2)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("t").create_counter("hits")
    for i in range(5):
        counter.add(1, {"route": str(i)})
    assert reader.force_flush(10_000)
    assert "  hits … 3 more series" in out.getvalue().splitlines()
    provider.shutdown()


def test_default_stream_is_stderr_at_write_time(capsys: pytest.CaptureFixture[str]) -> None:
    exporter = TreeConsoleSpanExporter(colour=False)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("to-stderr"):
        pass
    captured = capsys.readouterr()
    assert "└─ to-stderr  internal" in captured.err and captured.out == ""
    provider.shutdown()


class _BreaksOnce(io.StringIO):
    """A stream whose first write raises ``error``; later writes work."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    def write(self, s: str) -> int:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().write(s)


class _KeepLogs(LogRecordExporter):
    def __init__(self) -> None:
        self.batches: list[Sequence[Any]] = []

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.batches.append(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("error", [OSError("closed pipe"), ValueError("I/O operation on closed file"),
                                   RuntimeError("odd stream")], ids=["OSError", "ValueError", "RuntimeError"])
def test_exporters_survive_a_broken_stream(error: Exception) -> None:
    """Each exporter is called directly: through SimpleSpanProcessor the SDK would swallow an exception
    itself and the test could not fail. A write that raises is not raised, and the next write prints."""
    kept_spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(kept_spans))
    for name in ("lost-span", "printed-span"):
        with tracer_provider.get_tracer("t").start_as_current_span(name):
            pass
    kept_logs = _KeepLogs()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(kept_logs))
    logger = logger_provider.get_logger("t")
    for body in ("lost-line", "printed-line"):
        logger.emit(LogRecord(body=body, severity_text="INFO"))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    meter_provider.get_meter("t").create_counter("hits").add(1)
    metrics_data = reader.get_metrics_data()
    assert metrics_data is not None

    stream = _BreaksOnce(error)
    spans = TreeConsoleSpanExporter(stream, colour=False)
    lost, printed = kept_spans.get_finished_spans()
    spans.export([lost])
    spans.export([printed])
    assert "printed-span" in stream.getvalue() and "lost-span" not in stream.getvalue()

    stream = _BreaksOnce(error)
    logs = ConsoleLogExporter(stream, colour=False)
    (lost_line,), (printed_line,) = kept_logs.batches
    logs.export([lost_line])
    logs.export([printed_line])
    assert "printed-line" in stream.getvalue() and "lost-line" not in stream.getvalue()

    stream = _BreaksOnce(error)
    summary = ConsoleMetricExporter(stream, colour=False)
    summary.export(metrics_data)
    assert stream.getvalue() == ""
    summary.export(metrics_data)
    assert "hits" in stream.getvalue()
    for provider in (tracer_provider, logger_provider, meter_provider):
        provider.shutdown()


def test_console_exporters_through_init_in_a_real_process() -> None:
    """OTEL_*_EXPORTER=console end to end: init() wires these exporters; the tree and log lines reach stderr."""
    script = (
        "import logging, otelkit\n"
        "otelkit.init(service_name='console-e2e', metrics_exporter='none', instrument=())\n"
        "with otelkit.span('handle', _kind='server', **{'http.request.method': 'POST'}):\n"
        "    with otelkit.span('store', **{'db.statement': 'INSERT INTO t VALUES (1)'}):\n"
        "        logging.getLogger('app').warning('stored')\n"
        "otelkit.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    env.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "console", "NO_COLOR": "1"})
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert re.search(rf"└─ handle  server  {DURATION}  http.request.method=POST", err), err
    assert re.search(rf"   └─ store  internal  {DURATION}  db.statement=", err), err
    assert re.search(r"WARN   app  stored  trace=[0-9a-f]{8} span=[0-9a-f]{8}", err), err
    assert "{" not in err.split("trace ", 1)[1]  # a tree, not JSON dumps
    assert proc.stdout == ""
