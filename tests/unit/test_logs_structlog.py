"""otelkit.StructlogFields (correlation fields in the event dict) and otelkit.StructlogExporter (export to the OTLP
log pipeline): two processors, one job each."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import otelkit
from otelkit import _init
from otelkit._correlation import correlate
from otelkit.testing import CapturedTelemetry, capture_telemetry


class Recorder:
    """The last processor: keeps a copy of every event dict it sees."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        self.events.append(dict(event_dict))
        return "rendered"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """structlog configured natively (no stdlib): [add_log_level, StructlogFields(), StructlogExporter(), Recorder]."""
    rec = Recorder()
    structlog.configure(
        processors=[structlog.processors.add_log_level, otelkit.StructlogFields(), otelkit.StructlogExporter(), rec],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield rec
    structlog.reset_defaults()


def _ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_event_gets_fields_and_is_exported_with_trace_context(
    otelkit_capture: CapturedTelemetry, recorder: Recorder
) -> None:
    log = structlog.get_logger("shop.checkout")
    with correlate("order-42"), otelkit.span("checkout") as span:
        log.warning("card declined", amount=12.5, tags=["a", "b"], retry=False)
    trace_id, span_id = _ids(span)

    (event,) = recorder.events
    assert (event["trace_id"], event["span_id"], event["correlation_id"]) == (trace_id, span_id, "order-42")
    (record,) = otelkit_capture.logs
    assert record.body == "card declined"
    assert (record.trace_id, record.span_id) == (trace_id, span_id)
    assert record.level == "WARN"
    assert record.severity_number == 13
    assert record.logger == "structlog"
    assert record.attributes["amount"] == 12.5
    assert list(record.attributes["tags"]) == ["a", "b"]
    assert record.attributes["retry"] is False
    assert record.attributes["otelkit.correlation_id"] == "order-42"
    # The record carries them itself: not repeated as attributes.
    for key in ("event", "level", "trace_id", "span_id", "correlation_id"):
        assert key not in record.attributes


def test_outside_a_span_no_fields_and_no_trace_context(
    otelkit_capture: CapturedTelemetry, recorder: Recorder
) -> None:
    structlog.get_logger().info("idle")
    (event,) = recorder.events
    assert "trace_id" not in event and "span_id" not in event and "correlation_id" not in event
    (record,) = otelkit_capture.logs
    assert record.body == "idle"
    assert record.trace_id is None and record.span_id is None


def test_values_bound_by_the_user_win(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    with correlate("from-baggage"), otelkit.span("s"):
        structlog.get_logger().info("bound", correlation_id="from-user")
    assert recorder.events[0]["correlation_id"] == "from-user"
    assert otelkit_capture.logs[0].attributes["otelkit.correlation_id"] == "from-user"


def test_severity_and_the_log_level_threshold(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    log = structlog.get_logger()
    log.debug("below INFO: not exported")
    log.info("i")
    log.error("e")
    log.critical("c")
    log.log(logging.WARNING, "w")
    assert [(r.body, r.level, r.severity_number) for r in otelkit_capture.logs] == [
        ("i", "INFO", 9), ("e", "ERROR", 17), ("c", "FATAL", 21), ("w", "WARN", 13)]
    # ...but the processor still ran on the debug event (fields for the console).
    assert recorder.events[0]["event"] == "below INFO: not exported"


@pytest.mark.otelkit(log_level="ERROR")
def test_threshold_follows_otelkit_log_level(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    log = structlog.get_logger()
    log.warning("dropped")
    log.error("kept")
    assert [r.body for r in otelkit_capture.logs] == ["kept"]


def test_exception_is_recorded(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    log = structlog.get_logger()
    try:
        raise ValueError("bad input 7")
    except ValueError:
        log.exception("parsing failed")
    log.error("explicit", exc_info=KeyError("k"))
    first, second = otelkit_capture.logs
    assert first.level == "ERROR"
    assert first.attributes["exception.type"] == "ValueError"
    assert first.attributes["exception.message"] == "bad input 7"
    assert "raise ValueError" in first.attributes["exception.stacktrace"]
    assert second.attributes["exception.type"] == "KeyError"
    assert "exc_info" not in first.attributes


def test_exception_already_rendered_by_format_exc_info(otelkit_capture: CapturedTelemetry) -> None:
    structlog.configure(
        processors=[structlog.processors.format_exc_info, otelkit.StructlogExporter(),
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    try:
        try:
            raise RuntimeError("disk full")
        except RuntimeError:
            structlog.get_logger().exception("write failed")
    finally:
        structlog.reset_defaults()
    (record,) = otelkit_capture.logs
    assert record.attributes["exception.type"] == "RuntimeError"
    assert record.attributes["exception.message"] == "disk full"
    assert "Traceback" in record.attributes["exception.stacktrace"]
    assert "exception" not in record.attributes


def test_scope_is_the_logger_key(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    structlog.get_logger().info("named", logger="billing")
    assert otelkit_capture.logs[0].logger == "billing"


def test_secrets_are_scrubbed(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    structlog.get_logger().warning("cannot reach postgres://u:SECRETPW@h/db", api_token="tok-SECRET-123")
    (record,) = otelkit_capture.logs
    exported = json.dumps({"body": record.body, "attributes": {k: str(v) for k, v in record.attributes.items()}})
    assert "SECRETPW" not in exported
    assert "tok-SECRET-123" not in exported
    assert "api_token" in record.attributes
    assert "cannot reach" in record.body


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def test_bad_values_never_raise_and_keep_the_record(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    circular: list[Any] = []
    circular.append(circular)
    log = structlog.get_logger()
    with otelkit.span("s"):
        assert log.info("odd values", broken=Unprintable(), loop=circular, obj=object(),
                        nested={"k": {1, 2}}) == "rendered"
        assert log.info(Unprintable()) == "rendered"  # an event that is not even a string
    first, second = otelkit_capture.logs
    assert first.body == "odd values"
    assert first.attributes["broken"] == "<unprintable Unprintable>"
    assert isinstance(first.attributes["loop"], (str, list, tuple))
    assert first.attributes["obj"].startswith("<object object")
    assert first.trace_id is not None
    assert second.body == "<unprintable Unprintable>"


def test_a_failing_provider_never_raises(otelkit_capture: CapturedTelemetry, recorder: Recorder,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit import _logs_third_party

    def boom(name: str) -> Any:
        raise RuntimeError("provider broken")

    monkeypatch.setattr(_logs_third_party, "_otel_logger", boom)
    with otelkit.span("s"):
        assert structlog.get_logger().info("still logged") == "rendered"
    assert recorder.events[0]["event"] == "still logged"
    assert "trace_id" in recorder.events[0]


@pytest.fixture
def stdlib_output() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(trace_id)s %(message)s"))
    app = logging.getLogger("app.structlog")
    app.addHandler(handler)
    yield buffer
    app.removeHandler(handler)
    structlog.reset_defaults()


def _configure_stdlib_route(exporter: otelkit.StructlogExporter) -> None:
    structlog.configure(
        processors=[structlog.stdlib.add_log_level, otelkit.StructlogFields(), exporter,
                    structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def test_routed_through_stdlib_is_exported_once(otelkit_capture: CapturedTelemetry,
                                                stdlib_output: io.StringIO) -> None:
    _configure_stdlib_route(otelkit.StructlogExporter())
    with correlate("c-1"), otelkit.span("s") as span:
        structlog.get_logger("app.structlog").warning("via stdlib", order=7)
    trace_id, span_id = _ids(span)
    (record,) = otelkit_capture.logs  # the stdlib handler's record, not a second one from the processor
    assert record.body == "via stdlib"
    assert record.logger == "app.structlog"
    assert (record.trace_id, record.span_id) == (trace_id, span_id)
    assert record.attributes["order"] == 7
    assert record.attributes["otelkit.correlation_id"] == "c-1"
    assert stdlib_output.getvalue() == f"{trace_id} via stdlib\n"


def test_export_stdlib_routed_forces_a_second_record(otelkit_capture: CapturedTelemetry,
                                                     stdlib_output: io.StringIO) -> None:
    _configure_stdlib_route(otelkit.StructlogExporter(export_stdlib_routed=True))
    structlog.get_logger("app.structlog").warning("twice")
    assert [r.body for r in otelkit_capture.logs] == ["twice", "twice"]


def test_fields_alone_only_adds_fields(otelkit_capture: CapturedTelemetry, recorder: Recorder) -> None:
    structlog.configure(processors=[otelkit.StructlogFields(), recorder],
                        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    with otelkit.span("s") as span:
        structlog.get_logger().warning("fields only")
    assert otelkit_capture.logs == []
    assert recorder.events[0]["trace_id"] == _ids(span)[0]


def test_exporter_alone_exports_and_leaves_the_event_as_it_was(otelkit_capture: CapturedTelemetry,
                                                               recorder: Recorder) -> None:
    structlog.configure(processors=[otelkit.StructlogExporter(), recorder],
                        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    with correlate("order-7"), otelkit.span("s") as span:
        structlog.get_logger().warning("export only", amount=3)
    (event,) = recorder.events
    assert event == {"event": "export only", "amount": 3}
    (record,) = otelkit_capture.logs
    assert (record.body, record.attributes["amount"]) == ("export only", 3)
    assert (record.trace_id, record.span_id) == _ids(span)
    assert record.attributes["otelkit.correlation_id"] == "order-7"


def test_processor_formatter_is_exported_once(otelkit_capture: CapturedTelemetry) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        # also in the formatter chain (and foreign_pre_chain): adds the fields to the JSON line, exports nothing
        foreign_pre_chain=[otelkit.StructlogFields(), otelkit.StructlogExporter()],
        processors=[otelkit.StructlogFields(), otelkit.StructlogExporter(),
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()]))
    app = logging.getLogger("app.formatter")
    app.addHandler(handler)
    structlog.configure(
        processors=[otelkit.StructlogFields(), otelkit.StructlogExporter(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        with otelkit.span("s") as span:
            structlog.get_logger("app.formatter").warning("formatted", user="ada")
            app.warning("plain stdlib")
    finally:
        app.removeHandler(handler)
        structlog.reset_defaults()
    trace_id, _ = _ids(span)
    assert sorted(r.body for r in otelkit_capture.logs) == ["formatted", "plain stdlib"]
    # The stdlib handler exports the wrapped event dict as a structured record, not as its repr.
    formatted = next(r for r in otelkit_capture.logs if r.body == "formatted")
    assert formatted.attributes["user"] == "ada"
    assert formatted.trace_id == trace_id
    assert "_logger" not in formatted.attributes and "trace_id" not in formatted.attributes
    structlog_line, stdlib_line = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert structlog_line["trace_id"] == trace_id and structlog_line["user"] == "ada"
    assert stdlib_line["trace_id"] == trace_id


def test_telemetry_off_adds_nothing_exports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    rec = Recorder()
    structlog.configure(processors=[otelkit.StructlogFields(), otelkit.StructlogExporter(), rec],
                        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    try:
        with capture_telemetry() as captured:
            assert _init.get_settings() is not None and _init.get_settings().disabled  # type: ignore[union-attr]
            with correlate("c"), otelkit.span("s"):
                structlog.get_logger().error("off", value=1)
            assert captured.logs == []
    finally:
        structlog.reset_defaults()
    (event,) = rec.events
    assert event.get("trace_id", "") == "" and event.get("correlation_id", "") == ""


def test_before_init_nothing_raises(fresh_otelkit: None) -> None:
    rec = Recorder()
    structlog.configure(processors=[otelkit.StructlogFields(), otelkit.StructlogExporter(), rec],
                        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    try:
        assert structlog.get_logger().info("early") == "rendered"
    finally:
        structlog.reset_defaults()
    assert rec.events[0]["event"] == "early"


def test_clear_import_error_without_structlog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "structlog", None)
    with pytest.raises(ImportError, match=r"pip install structlog"):
        otelkit.StructlogFields()
    with pytest.raises(ImportError, match=r"pip install structlog"):
        otelkit.StructlogExporter()
