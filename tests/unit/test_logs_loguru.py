"""otelkit.LoguruExporter() and otelkit.LoguruFields(): loguru records over OTLP, correlation fields in extra."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

import otelkit
from otelkit._correlation import correlate
from otelkit.testing import CapturedTelemetry, capture_telemetry

FORMAT = "{extra[trace_id]}|{extra[span_id]}|{extra[correlation_id]}|{message}"


@pytest.fixture
def handler_ids() -> Iterator[list[int]]:
    """Loguru handler ids added by the test, removed afterwards (the loguru logger is process-global)."""
    ids: list[int] = []
    yield ids
    for handler_id in ids:
        logger.remove(handler_id)


@pytest.fixture
def otlp(handler_ids: list[int]) -> None:
    handler_ids.append(logger.add(**otelkit.LoguruExporter()))


def _ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_record_is_exported_with_trace_context_and_extra(otelkit_capture: CapturedTelemetry, otlp: None) -> None:
    with correlate("order-7"), otelkit.span("checkout") as span:
        logger.bind(order=7, ratio=0.5, tags=("x", "y")).warning("charging {}", "card")
    trace_id, span_id = _ids(span)
    (record,) = otelkit_capture.logs
    assert record.body == "charging card"
    assert (record.trace_id, record.span_id) == (trace_id, span_id)
    assert (record.level, record.severity_number) == ("WARN", 13)
    assert record.logger == __name__
    assert record.attributes["order"] == 7
    assert record.attributes["ratio"] == 0.5
    assert list(record.attributes["tags"]) == ["x", "y"]
    assert record.attributes["otelkit.correlation_id"] == "order-7"
    assert record.attributes["code.function.name"] == "test_record_is_exported_with_trace_context_and_extra"
    assert record.attributes["code.file.path"].endswith("test_logs_loguru.py")
    assert isinstance(record.attributes["code.line.number"], int)


def test_outside_a_span_no_trace_context(otelkit_capture: CapturedTelemetry, otlp: None) -> None:
    logger.info("idle")
    (record,) = otelkit_capture.logs
    assert record.trace_id is None and record.span_id is None
    assert "otelkit.correlation_id" not in record.attributes


def test_levels_map_to_severity_and_follow_log_level(otelkit_capture: CapturedTelemetry, otlp: None) -> None:
    logger.trace("t")
    logger.debug("d")
    logger.info("i")
    logger.success("s")
    logger.error("e")
    logger.critical("c")
    assert [(r.body, r.level, r.severity_number) for r in otelkit_capture.logs] == [
        ("i", "INFO", 9), ("s", "SUCCESS", 10), ("e", "ERROR", 17), ("c", "FATAL", 21)]


def test_explicit_level(otelkit_capture: CapturedTelemetry, handler_ids: list[int]) -> None:
    handler_ids.append(logger.add(**otelkit.LoguruExporter(level="DEBUG")))
    logger.trace("t")
    logger.debug("d")
    assert [(r.body, r.level) for r in otelkit_capture.logs] == [("d", "DEBUG")]


def test_exception_is_recorded(otelkit_capture: CapturedTelemetry, otlp: None) -> None:
    try:
        raise ValueError("bad input 3")
    except ValueError:
        logger.exception("parsing failed")
    (record,) = otelkit_capture.logs
    assert record.level == "ERROR"
    assert record.attributes["exception.type"] == "ValueError"
    assert record.attributes["exception.message"] == "bad input 3"
    assert 'raise ValueError("bad input 3")' in record.attributes["exception.stacktrace"]


def test_configure_handlers_spec(otelkit_capture: CapturedTelemetry) -> None:
    spec = otelkit.LoguruExporter()
    assert spec["format"] == "{message}"
    ids = logger.configure(handlers=[spec])
    try:
        logger.info("configured")
    finally:
        for handler_id in ids:
            logger.remove(handler_id)
        logger.add(sys.stderr)  # configure() dropped loguru's default handler: put one back
    assert [r.body for r in otelkit_capture.logs] == ["configured"]


def test_patcher_fields_for_format_strings(otelkit_capture: CapturedTelemetry, handler_ids: list[int]) -> None:
    out = io.StringIO()
    handler_ids.append(logger.add(out, format=FORMAT))
    patched = logger.patch(otelkit.LoguruFields())
    patched.info("outside")
    with correlate("c-9"), otelkit.span("s") as span:
        patched.info("inside")
        patched.bind(correlation_id="bound").info("bound")
    trace_id, span_id = _ids(span)
    assert out.getvalue().splitlines() == [
        "|||outside", f"{trace_id}|{span_id}|c-9|inside", f"{trace_id}|{span_id}|bound|bound"]


def test_enqueued_records_keep_their_trace_context(otelkit_capture: CapturedTelemetry,
                                                   handler_ids: list[int]) -> None:
    handler_ids.append(logger.add(**otelkit.LoguruExporter(), enqueue=True))
    patched = logger.patch(otelkit.LoguruFields())
    with correlate("q-1"), otelkit.span("s") as span:
        patched.warning("queued")
    logger.complete()
    (record,) = otelkit_capture.logs
    assert (record.trace_id, record.span_id) == _ids(span)
    assert record.attributes["otelkit.correlation_id"] == "q-1"
    assert "trace_id" not in record.attributes


def test_secrets_are_scrubbed(otelkit_capture: CapturedTelemetry, otlp: None) -> None:
    logger.bind(api_token="tok-SECRET-123").error("cannot reach postgres://u:SECRETPW@h/db")
    (record,) = otelkit_capture.logs
    exported = json.dumps({"body": record.body, "attributes": {k: str(v) for k, v in record.attributes.items()}})
    assert "SECRETPW" not in exported
    assert "tok-SECRET-123" not in exported
    assert "api_token" in record.attributes


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def test_bad_values_never_raise_and_keep_the_record(otelkit_capture: CapturedTelemetry, otlp: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    circular: list[Any] = []
    circular.append(circular)
    with otelkit.span("s"):
        logger.bind(broken=Unprintable(), loop=circular, obj=object()).info("odd values")
    (record,) = otelkit_capture.logs
    assert record.body == "odd values"
    assert record.attributes["broken"] == "<unprintable Unprintable>"
    assert record.attributes["obj"].startswith("<object object")
    assert record.trace_id is not None
    # loguru prints sink errors on stderr ("--- Logging error in Loguru Handler"): the sink raised none.
    assert "Logging error" not in capsys.readouterr().err


def test_patcher_survives_a_broken_record() -> None:
    fields = otelkit.LoguruFields()
    fields({"no extra": True})
    fields(None)


def test_telemetry_off(monkeypatch: pytest.MonkeyPatch, handler_ids: list[int]) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    out = io.StringIO()
    with capture_telemetry() as captured:
        handler_ids.append(logger.add(**otelkit.LoguruExporter()))
        handler_ids.append(logger.add(out, format=FORMAT))
        with correlate("c"), otelkit.span("s"):
            logger.patch(otelkit.LoguruFields()).error("off")
        assert captured.logs == []
    assert out.getvalue() == "|||off\n"


def test_clear_import_error_without_loguru(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "loguru", None)
    with pytest.raises(ImportError, match=r"pip install loguru"):
        otelkit.LoguruExporter()
    with pytest.raises(ImportError, match=r"pip install loguru"):
        otelkit.LoguruFields()


class _InterceptHandler(logging.Handler):
    """The recipe from loguru's README: stdlib records re-logged through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        logger.opt(depth=6, exception=record.exc_info).log(record.levelname, record.getMessage())


@pytest.mark.parametrize("intercept_first", [False, True])
def test_stdlib_routed_into_loguru_is_exported_once(otelkit_capture: CapturedTelemetry, otlp: None,
                                                     intercept_first: bool) -> None:
    root = logging.getLogger()
    intercept = _InterceptHandler()
    # otelkit's own root handler is already there; the recipe adds loguru's path before or after it.
    if intercept_first:
        root.handlers.insert(0, intercept)
    else:
        root.addHandler(intercept)
    try:
        app = logging.getLogger("intercepted_app")
        app.setLevel(logging.INFO)
        with otelkit.span("request"):
            app.warning("via stdlib %s", 1)
            app.warning("via stdlib %s", 2)
            logger.warning("via loguru")
    finally:
        root.removeHandler(intercept)
    bodies = sorted(str(r.body) for r in otelkit_capture.logs)
    assert bodies == ["via loguru", "via stdlib 1", "via stdlib 2"], bodies
