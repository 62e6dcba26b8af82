"""Log records: trace/span/correlation fields for every handler, the one OTLP handler, JsonFormatter."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk._logs import LogRecordProcessor

import otelkit
from otelkit import _init, _logs
from otelkit._correlation import correlate
from otelkit.testing import CapturedTelemetry, capture_telemetry


@pytest.fixture(autouse=True)
def _empty_otel_context() -> Iterator[None]:
    """Start from an empty OTel context: a span or baggage leaked by another module's test must not leak in."""
    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


FORMAT = "%(levelname)s %(trace_id)s %(span_id)s [%(correlation_id)s] %(message)s"


@pytest.fixture
def stream_handler() -> Iterator[io.StringIO]:
    """A plain stdlib StreamHandler on the root logger, with a format string using otelkit's fields."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)


def _ids(span: Any) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _otlp_handlers() -> list[logging.Handler]:
    """otelkit's handler; never one in ``root.handlers`` (basicConfig must not see it), so at most one."""
    assert [h for h in logging.getLogger().handlers if type(h).__name__ == "OtelkitLogHandler"] == []
    handler = _logs.otlp_handler()
    return [handler] if handler is not None else []


def test_plain_handler_format_gets_trace_and_correlation(
    otelkit_capture: CapturedTelemetry, stream_handler: io.StringIO
) -> None:
    log = logging.getLogger("app.orders")
    log.warning("before")
    with correlate("order-42"), otelkit.span("handle"):
        log.warning("inside")
    trace_id, span_id = _ids(otelkit_capture.spans.span("handle"))
    lines = stream_handler.getvalue().splitlines()
    assert lines == ["WARNING   [] before", f"WARNING {trace_id} {span_id} [order-42] inside"]


def test_exported_record_carries_trace_context_on_the_record(otelkit_capture: CapturedTelemetry) -> None:
    with correlate("c-1"), otelkit.span("job"):
        logging.getLogger("app").info("stored %d rows", 3, extra={"table": "orders", "meta": {"k": [1, 2]}})
    logging.getLogger("app").info("after")
    trace_id, span_id = _ids(otelkit_capture.spans.span("job"))
    inside, after = otelkit_capture.logs
    assert (inside.body, inside.trace_id, inside.span_id) == ("stored 3 rows", trace_id, span_id)
    assert inside.record.log_record.trace_flags.sampled
    assert inside.attributes["table"] == "orders"
    assert inside.attributes["meta"] == {"k": (1, 2)}
    assert inside.attributes["otelkit.correlation_id"] == "c-1"
    assert "trace_id" not in inside.attributes  # on the record itself, not duplicated as attributes
    assert inside.level == "INFO" and inside.logger == "app"
    assert (after.trace_id, after.span_id) == (None, None)


def test_exception_attributes(otelkit_capture: CapturedTelemetry) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("app").exception("failed")
    (record,) = otelkit_capture.logs
    assert record.level == "ERROR"
    assert record.attributes["exception.type"] == "KeyError"
    assert "raise KeyError" in record.attributes["exception.stacktrace"]


def test_internal_loggers_are_never_exported(otelkit_capture: CapturedTelemetry) -> None:
    for name in ("otelkit", "otelkit._export", "opentelemetry.sdk._logs", "grpc._channel", "urllib3.connectionpool"):
        logging.getLogger(name).error("internal diagnostics from %s", name)
    logging.getLogger("grpcio_app").error("an app logger whose name only starts like grpc")
    assert [r.body for r in otelkit_capture.logs] == ["an app logger whose name only starts like grpc"]


def test_records_logged_on_export_threads_are_not_exported(otelkit_capture: CapturedTelemetry) -> None:
    def work() -> None:
        logging.getLogger("some.library").error("logged while exporting")

    for name in ("otelkit-export-traces", "OtelBatchSpanRecordProcessor", "app-worker"):
        thread = threading.Thread(target=work, name=name)
        thread.start()
        thread.join(30)
        assert not thread.is_alive()  # its record, if exported, is in by now
    assert len(otelkit_capture.logs) == 1  # only the application thread's record


def test_logging_inside_the_pipeline_does_not_recurse(stream_handler: io.StringIO) -> None:
    class Chatty(LogRecordProcessor):
        """A processor that logs while handling a record (as a failing exporter would)."""

        def __init__(self) -> None:
            self.seen: list[Any] = []

        def on_emit(self, log_record: Any) -> None:
            self.seen.append(log_record.log_record.body)
            logging.getLogger("app").error("logged from inside the pipeline")

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    chatty = Chatty()
    with _capture_with(chatty):
        logging.getLogger("app").error("one")
    assert chatty.seen == ["one"]
    # the nested record still reached the app's other handlers
    assert "logged from inside the pipeline" in stream_handler.getvalue()


def _capture_with(processor: LogRecordProcessor) -> Any:
    captured = CapturedTelemetry()
    kwargs = captured.init_kwargs()
    kwargs["log_processors"] = [processor]

    class _Ctx:
        def __enter__(self) -> CapturedTelemetry:
            otelkit.init(service_name="t", instrument=(), system_metrics=False, **kwargs)
            return captured

        def __exit__(self, *exc: object) -> None:
            _init.reset()

    return _Ctx()


def test_one_handler_after_reinit_and_level(otelkit_capture: CapturedTelemetry) -> None:
    assert len(_otlp_handlers()) == 1
    logging.getLogger("app").debug("not exported at INFO")
    # A different setting re-initialises: still one handler, now at DEBUG.
    otelkit.init(service_name="otelkit-test", instrument=(), system_metrics=False, log_level="DEBUG",
                 **{k: v for k, v in otelkit_capture.init_kwargs().items() if k.endswith("_exporter")},
                 span_processors=[], metric_readers=[], log_processors=[])
    assert len(_otlp_handlers()) == 1
    assert _otlp_handlers()[0].level == logging.DEBUG
    otelkit.init(service_name="otelkit-test", instrument=(), system_metrics=False, log_level="DEBUG",
                 **{k: v for k, v in otelkit_capture.init_kwargs().items() if k.endswith("_exporter")},
                 span_processors=[], metric_readers=[], log_processors=[])
    assert len(_otlp_handlers()) == 1


def test_two_identical_inits_export_each_record_once() -> None:
    captured = CapturedTelemetry()
    kwargs = {"service_name": "otelkit-test", "instrument": (), "system_metrics": False, **captured.init_kwargs()}
    try:
        otelkit.init(**kwargs)
        otelkit.init(**kwargs)
        assert len(_otlp_handlers()) == 1
        logging.getLogger("app").warning("once")
        assert [r.body for r in captured.logs] == ["once"]
    finally:
        _init.reset()
    assert _otlp_handlers() == []  # reset removes it


def test_record_made_in_another_thread_keeps_its_span(otelkit_capture: CapturedTelemetry) -> None:
    """QueueHandler/QueueListener: the record is exported on the listener thread, ids from the record."""
    q: queue.Queue[logging.LogRecord] = queue.Queue()
    otlp = _otlp_handlers()[0]
    listener = logging.handlers.QueueListener(q, otlp)
    logger = logging.getLogger("app.queued")
    logger.propagate = False
    logger.addHandler(logging.handlers.QueueHandler(q))
    listener.start()
    try:
        with otelkit.span("producer"):
            logger.warning("queued")
    finally:
        listener.stop()
        logger.propagate = True
        logger.handlers.clear()
    trace_id, span_id = _ids(otelkit_capture.spans.span("producer"))
    (record,) = otelkit_capture.logs
    assert (record.trace_id, record.span_id) == (trace_id, span_id)


def test_extra_fields_override_instead_of_raising(stream_handler: io.StringIO) -> None:
    logging.getLogger("app").warning("explicit", extra={"correlation_id": "from-extra", "trace_id": "t"})
    assert stream_handler.getvalue().splitlines()[-1] == "WARNING t  [from-extra] explicit"


def test_fields_exist_across_threads_and_without_span(stream_handler: io.StringIO) -> None:
    done = threading.Event()

    def work() -> None:
        logging.getLogger("app").warning("from thread")
        done.set()

    threading.Thread(target=work).start()
    assert done.wait(5)
    assert stream_handler.getvalue().splitlines()[-1] == "WARNING   [] from thread"


def test_format_is_safe_when_telemetry_is_off() -> None:
    """A fresh process, telemetry disabled: a format string using the fields neither raises nor prints errors."""
    script = (
        "import logging, sys, otelkit\n"
        "otelkit.init(disabled=True)\n"
        "h = logging.StreamHandler(sys.stdout)\n"
        f"h.setFormatter(logging.Formatter({FORMAT!r}))\n"
        "logging.getLogger().addHandler(h)\n"
        "with otelkit.span('x'):\n"
        "    logging.getLogger('app').warning('still formatted')\n"
        "otelkit.shutdown()\n"
        "logging.getLogger('app').warning('after shutdown')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["WARNING   [] still formatted", "WARNING   [] after shutdown"]
    assert "KeyError" not in proc.stderr and "Logging error" not in proc.stderr


def test_log_correlation_off_gives_empty_fields(stream_handler: io.StringIO) -> None:
    with capture_telemetry(log_correlation=False) as captured, correlate("c"), otelkit.span("s"):
        logging.getLogger("app").warning("uncorrelated")
    assert stream_handler.getvalue().splitlines()[-1] == "WARNING   [] uncorrelated"
    # the exported record still has its trace context: that comes from the OTel context, not the fields
    assert captured.logs[0].trace_id is not None


class TestJsonFormatter:
    def _format(self, record_fn: Any, **kwargs: Any) -> dict[str, Any]:
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(otelkit.JsonFormatter(**kwargs))
        logger = logging.getLogger("app.json")
        logger.addHandler(handler)
        logger.propagate = False  # only this handler: pytest's own would choke on the odd values below
        try:
            record_fn(logger)
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
        (line,) = buffer.getvalue().splitlines()
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def test_fields_and_extra(self, otelkit_capture: CapturedTelemetry) -> None:
        with correlate("job-7"), otelkit.span("step"):
            extra = {"job_id": 7, "when": datetime(2020, 1, 1)}
            out = self._format(lambda log: log.warning("step %s done", 2, extra=extra),
                               static_fields={"service": "worker", "job_id": "static loses"})
        trace_id, span_id = _ids(otelkit_capture.spans.span("step"))
        assert out["message"] == "step 2 done"
        assert out["level"] == "WARNING" and out["logger"] == "app.json"
        assert (out["trace_id"], out["span_id"], out["correlation_id"]) == (trace_id, span_id, "job-7")
        assert out["job_id"] == 7 and out["when"] == "2020-01-01 00:00:00" and out["service"] == "worker"
        assert out["time"].endswith("Z")
        parsed = datetime.fromisoformat(out["time"].replace("Z", "+00:00"))
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert "exception" not in out

    def test_exception_and_empty_ids(self) -> None:
        def log_error(log: logging.Logger) -> None:
            try:
                raise ValueError("bad")
            except ValueError:
                log.exception("failed")

        out = self._format(log_error)
        assert out["trace_id"] == "" and out["span_id"] == "" and out["correlation_id"] == ""
        assert out["exception"].startswith("Traceback") and "ValueError: bad" in out["exception"]

    def test_never_raises_on_odd_values(self) -> None:
        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("no")

        out = self._format(lambda log: log.warning("odd %s %s", "only-one-arg", extra={"obj": Unprintable()}))
        assert out["obj"] == "<unprintable Unprintable>"
        assert "only-one-arg" in out["message"]


def test_uninstall_keeps_fields_and_remove_restores_factory() -> None:
    before = logging.getLogRecordFactory()
    assert getattr(before, "_otelkit", False)
    _logs.uninstall()
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert record.trace_id == "" and record.correlation_id == ""  # type: ignore[attr-defined]
    _logs.remove_record_factory()
    try:
        assert not getattr(logging.getLogRecordFactory(), "_otelkit", False)
        assert not getattr(logging.Logger.makeRecord, "_otelkit", False)
    finally:
        _logs.install_record_factory()
    assert getattr(logging.getLogRecordFactory(), "_otelkit", False)
