"""Log correlation and OTLP export for structlog and loguru: one shape for every logging library.

What :mod:`otelkit._logs` does for stdlib ``logging``, for the two other common
logging libraries, without depending on either (both are imported only when a
helper is created). Every helper is a class, built with keyword-only options
and handed to the library where it takes that kind of object; each does one
job, *fields* (``trace_id``, ``span_id``, ``correlation_id`` for your output)
or *export* (an OTel log record):

=========== ======================== ========================== ======================
library     fields                   export                     rendering
=========== ======================== ========================== ======================
logging     ``init()`` (on records)  ``init()`` (root handler)  :class:`JsonFormatter`
structlog   :class:`StructlogFields` :class:`StructlogExporter` your renderer
loguru      :class:`LoguruFields`    :class:`LoguruExporter`    loguru's format
=========== ======================== ========================== ======================

Records go to the *global* logger provider (otelkit's proxy after ``init()``),
so they take the same path as stdlib records: otelkit's processors, scrubbing,
``OTELKIT_LOG_LEVEL`` as the export threshold, and nothing at all when
telemetry is disabled. The field values are those of the stdlib record
factory (:func:`otelkit._logs.current_fields`): lower-case hex IDs, and
nothing (structlog) or ``""`` (loguru) when there is no span or
``log_correlation`` is off. None of this ever raises into the application.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from threading import get_ident as _get_ident
from typing import Any

from opentelemetry import trace

from otelkit import _active, _logs
from otelkit._compat import ApiLogRecord as OTelLogRecord
from otelkit._compat import NoOpLogger, logs_api, proxy_logger_delegate
from otelkit._logs import _FIELDS, _exception_attributes, _put, _safe_str, structlog_event
from otelkit._names import CORRELATION_ATTRIBUTE

__all__ = ["LoguruExporter", "LoguruFields", "StructlogExporter", "StructlogFields"]


_LEVEL_TEXT = {
    logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}

_internal = logging.getLogger("otelkit")


def _require(package: str, helper: str) -> None:
    try:
        __import__(package)
    except ImportError as exc:
        raise ImportError(f"otelkit.{helper} needs the {package!r} package, which is not installed: "
                          f"pip install {package}") from exc


# --- emitting --------------------------------------------------------------------------------------

_provider: Any = None
_loggers: dict[str, Any] = {}
_loggers_lock = threading.Lock()


def _otel_logger(name: str) -> Any:
    """The OTel logger ``name`` of the current global provider (cached: ``get_logger`` takes a lock)."""
    global _provider, _loggers
    provider = logs_api.get_logger_provider()
    if provider is not _provider:
        with _loggers_lock:
            _provider, _loggers = provider, {}
    found = _loggers.get(name)
    if found is None:
        found = _loggers[name] = provider.get_logger(name)
    return found


def _export_level() -> int:
    settings = _active.settings()
    return settings.log_level if settings is not None else logging.INFO


def _exporting_allowed(scope: str) -> bool:
    # Same exclusions as the stdlib handler: nothing logged while exporting, or by the exporters, is exported.
    if getattr(_logs._emitting, "active", False):
        return False
    if threading.current_thread().name.startswith(_logs._EXPORT_THREADS):
        return False
    return not _logs._never_exported(scope)


def _emit(scope: str, levelno: int, body: Any, attributes: dict[str, Any], context: Any,
          timestamp: int | None = None, level_name: str | None = None) -> None:
    """Send one record to the global logger provider; never raises."""
    if not _exporting_allowed(scope):
        return
    _logs._emitting.active = True
    try:
        otel_logger = _otel_logger(scope)
        if isinstance(proxy_logger_delegate(otel_logger), NoOpLogger):
            return  # telemetry disabled, or before init(): skip building the record
        otel_logger.emit(OTelLogRecord(
            timestamp=timestamp if timestamp is not None else time.time_ns(),
            context=context if context is not None else _logs._EMPTY_CONTEXT,
            severity_text=_logs._SEVERITY_TEXT.get(level_name, level_name) if level_name
            else _LEVEL_TEXT.get(levelno) or logging.getLevelName(levelno),
            severity_number=_logs._severity(levelno),
            body=body,
            attributes=attributes,
        ))
    except Exception:
        _internal.debug("otelkit: could not export a log record", exc_info=True)
    finally:
        _logs._emitting.active = False


def _fields() -> tuple[str, str, str]:
    """The stdlib record fields for the current context; ``""`` each when correlation is off or it fails."""
    if not (_logs._factory_active and _logs._correlation_enabled):
        return "", "", ""
    try:
        return _logs.current_fields()
    except Exception:
        return "", "", ""


def _context_from_hex(trace_hex: object, span_hex: object) -> Any:
    if not trace_hex or not span_hex or not isinstance(trace_hex, str) or not isinstance(span_hex, str):
        return None
    try:
        rebuilt = trace.SpanContext(int(trace_hex, 16), int(span_hex, 16), is_remote=False,
                                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    except ValueError:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(rebuilt)) if rebuilt.is_valid else None


# --- structlog -------------------------------------------------------------------------------------

_STRUCTLOG_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO, "warning": logging.WARNING,
    "warn": logging.WARNING, "error": logging.ERROR, "err": logging.ERROR, "exception": logging.ERROR,
    "failure": logging.ERROR, "critical": logging.CRITICAL, "fatal": logging.CRITICAL,
    "notset": logging.NOTSET,
}
def _structlog_level(method_name: str, event_dict: Mapping[str, Any]) -> int:
    levelno = _STRUCTLOG_LEVELS.get(method_name)
    if levelno is None:
        level = event_dict.get("level")
        levelno = _STRUCTLOG_LEVELS.get(level.lower(), logging.INFO) if isinstance(level, str) else logging.INFO
    return levelno


def _routed_through_stdlib(logger: object, event_dict: Mapping[str, Any]) -> bool:
    # structlog.stdlib.LoggerFactory hands processors the stdlib logger the event ends up in; inside
    # structlog.stdlib.ProcessorFormatter the event dict carries the stdlib record being formatted.
    # Either way otelkit's root handler exports the stdlib record.
    return isinstance(logger, (logging.Logger, logging.LoggerAdapter)) or "_record" in event_dict


def _add_fields(event_dict: MutableMapping[str, Any]) -> None:
    trace_hex, span_hex, correlation = _fields()
    if trace_hex:
        if not event_dict.get("trace_id"):
            event_dict["trace_id"] = trace_hex
        if not event_dict.get("span_id"):
            event_dict["span_id"] = span_hex
    if correlation and not event_dict.get("correlation_id"):
        event_dict["correlation_id"] = correlation


class StructlogFields:
    """A structlog processor adding the trace correlation fields to each event.

    Adds ``trace_id`` and ``span_id`` (lower-case hex, as on stdlib records)
    when a span is current, and ``correlation_id`` inside a correlation scope;
    values the event already has win, unless they are empty. Put it before the
    renderer, so the fields show in your output::

        structlog.configure(processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            otelkit.StructlogFields(),
            otelkit.StructlogExporter(),
            structlog.processors.JSONRenderer(),
        ])

    It also works in ``ProcessorFormatter``'s ``foreign_pre_chain`` (stdlib
    records rendered by structlog). Never raises; returns the event dict.

    Raises:
        ImportError: structlog is not installed.
    """

    def __init__(self) -> None:
        _require("structlog", "StructlogFields")

    def __repr__(self) -> str:
        return "StructlogFields()"

    def __call__(self, logger: object, method_name: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Add the fields; returns ``event_dict``."""
        try:
            _add_fields(event_dict)
        except Exception:
            _internal.debug("otelkit: StructlogFields failed on an event", exc_info=True)
        return event_dict


class StructlogExporter:
    """A structlog processor emitting each event as an OTel log record (export over OTLP).

    Put it after the processors that add data (``merge_contextvars``,
    ``add_log_level``, ``TimeStamper``...) and before the renderer (see
    :class:`StructlogFields` for a chain with both). For each event it emits an
    OTel log record to the global logger provider: body = the ``event``
    message, severity from the method called (``log.warning``) or the ``level``
    key, the other keys as attributes (values OTLP cannot hold are
    stringified), the trace context of the current span on the record itself,
    and ``exc_info``/``exception`` as ``exception.type``, ``exception.message``,
    ``exception.stacktrace``. Events below ``OTELKIT_LOG_LEVEL`` are not
    exported; records are scrubbed like every otelkit log record. It does not
    change the event dict.

    **structlog routed through stdlib logging** (``structlog.stdlib.LoggerFactory``,
    ``ProcessorFormatter``): the stdlib record already goes over OTLP through
    otelkit's root handler, so the exporter skips those events instead of
    emitting a second record (``export_stdlib_routed=True`` emits them anyway). To
    get the event's keys as attributes of that record, end the chain with
    ``structlog.stdlib.render_to_log_kwargs``.

    Never raises; returns the event dict it was given.

    Args:
        logger_name: Instrumentation scope of the records when the event has no
            ``logger`` key (``structlog.stdlib.add_logger_name``).
        export_stdlib_routed: Also emit events that go through stdlib logging
            (which otelkit's root handler exports already).

    Raises:
        ImportError: structlog is not installed.
    """

    def __init__(self, *, logger_name: str = "structlog", export_stdlib_routed: bool = False) -> None:
        _require("structlog", "StructlogExporter")
        self.logger_name = logger_name
        self.export_stdlib_routed = export_stdlib_routed

    def __repr__(self) -> str:
        return (f"StructlogExporter(logger_name={self.logger_name!r}, "
                f"export_stdlib_routed={self.export_stdlib_routed!r})")

    def __call__(self, logger: object, method_name: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Emit the event; returns ``event_dict`` unchanged."""
        try:
            if self.export_stdlib_routed or not _routed_through_stdlib(logger, event_dict):
                self._export(method_name, event_dict)
        except Exception:
            _internal.debug("otelkit: StructlogExporter failed on an event", exc_info=True)
        return event_dict

    def _export(self, method_name: str, event_dict: Mapping[str, Any]) -> None:
        levelno = _structlog_level(method_name, event_dict)
        if levelno < _export_level():
            return
        attributes: dict[str, Any] = {}
        body = structlog_event(event_dict, attributes)
        if "correlation_id" not in event_dict:
            # Without StructlogFields before it the event has no correlation_id: take the current one.
            correlation = _fields()[2]
            if correlation:
                attributes[CORRELATION_ATTRIBUTE] = correlation
        scope = event_dict.get("logger")
        scope = scope if isinstance(scope, str) and scope else self.logger_name
        # Processors run synchronously in the logging call: the current context is the event's.
        _emit(scope, levelno, body, attributes, _logs._get_current())


# --- loguru ----------------------------------------------------------------------------------------

class _LoguruSink:
    """A loguru sink (called with each formatted ``Message``) that emits the record over OTLP."""

    def __init__(self, threshold: bool) -> None:
        self._threshold = threshold

    def __repr__(self) -> str:
        return "otelkit.LoguruExporter sink"

    def __call__(self, message: Any) -> None:
        try:
            self._emit(message.record)
        except Exception:
            _internal.debug("otelkit: could not export a loguru record", exc_info=True)

    def _emit(self, record: Mapping[str, Any]) -> None:
        levelno = int(record["level"].no)
        if self._threshold and levelno < _export_level():
            return
        thread = record.get("thread")
        same_thread = thread is None or thread.id == _get_ident()
        if same_thread:
            routed = _stdlib_record_in_flight()
            if routed is not None and not _logs.claim_record(routed):
                return  # a stdlib record routed into loguru that otelkit's own handler already exported
        extra = record.get("extra") or {}
        attributes: dict[str, Any] = {
            "code.file.path": _safe_str(record["file"].path),
            "code.function.name": _safe_str(record["function"]),
            "code.line.number": record["line"],
        }
        for key, value in extra.items():
            if key not in _FIELDS:
                _put(attributes, key, value)
        if same_thread:
            # Sinks run synchronously in the logging call unless enqueue=True.
            context = _logs._get_current()
            correlation = _logs._correlation_id(context)
        else:  # enqueue=True: another thread; the patcher's fields are all that is left of the context
            context = _context_from_hex(extra.get("trace_id"), extra.get("span_id"))
            correlation = ""
        correlation = extra.get("correlation_id") or correlation
        if correlation and isinstance(correlation, str):
            attributes[CORRELATION_ATTRIBUTE] = correlation
        exception = record.get("exception")
        if exception is not None:
            _exception_attributes(attributes, exception.type, exception.value, exception.traceback)
        timestamp = None
        when = record.get("time")
        if when is not None:
            timestamp = int(when.timestamp() * 1e9)
        _emit(record.get("name") or "loguru", levelno, _safe_str(record["message"]), attributes, context, timestamp,
              _safe_str(record["level"].name))


_CALL_HANDLERS = logging.Logger.callHandlers.__code__


def _stdlib_record_in_flight() -> logging.LogRecord | None:
    """The stdlib record being handled up the stack (loguru called from a stdlib handler), if any."""
    frame: Any = sys._getframe(1)
    for _ in range(48):
        if frame is None:
            return None
        if frame.f_code is _CALL_HANDLERS:
            found = frame.f_locals.get("record")
            return found if isinstance(found, logging.LogRecord) else None
        frame = frame.f_back
    return None


class LoguruExporter(dict[str, Any]):
    """A loguru handler that sends records over OTLP, trace context on the record itself.

    A handler spec (``{"sink": ..., "level": ..., "format": "{message}"}``): pass it to
    ``logger.configure(handlers=[...])`` or ``logger.add(**...)``::

        from loguru import logger
        logger.configure(handlers=[otelkit.LoguruExporter()], patcher=otelkit.LoguruFields())
        logger.add(**otelkit.LoguruExporter())   # or next to existing handlers

    Each record becomes an OTel log record: body = the formatted message,
    severity from the loguru level (SUCCESS is INFO2, TRACE is TRACE), the
    ``extra`` fields as attributes, ``code.*`` attributes for the call site and
    the exception (``logger.exception``, ``opt(exception=...)``) as
    ``exception.type``, ``exception.message``, ``exception.stacktrace``. With
    ``enqueue=True`` the trace context comes from the fields added by
    :class:`LoguruFields`. Records are scrubbed like every otelkit log record.
    A stdlib record routed into loguru (the "InterceptHandler" recipe) while
    otelkit's root handler is in place too is exported once, not twice (not
    with ``enqueue=True``: there the sink runs on loguru's thread).

    Args:
        level: Minimum loguru level to export. Default: otelkit's ``log_level``
            (``OTELKIT_LOG_LEVEL``, INFO), followed across re-inits.

    Raises:
        ImportError: loguru is not installed.
    """

    def __init__(self, *, level: str | int | None = None) -> None:
        _require("loguru", "LoguruExporter")
        _logs.claiming = True
        super().__init__(sink=_LoguruSink(threshold=level is None), level=0 if level is None else level,
                         format="{message}")

    def __repr__(self) -> str:
        return f"LoguruExporter({dict.__repr__(self)})"


class LoguruFields:
    """A loguru patcher adding ``trace_id``, ``span_id`` and ``correlation_id`` to ``record["extra"]``.

    ``logger.configure(patcher=otelkit.LoguruFields())`` (or ``logger.patch(...)``)
    lets a format string show them: ``"{time} {extra[trace_id]} {message}"``. The
    values are those of stdlib records: lower-case hex and the correlation ID,
    ``""`` when absent (no span, ``log_correlation`` off, telemetry disabled), so
    the format never raises. A non-empty value bound with ``logger.bind`` wins.
    Never raises.

    Raises:
        ImportError: loguru is not installed.
    """

    def __init__(self) -> None:
        _require("loguru", "LoguruFields")

    def __repr__(self) -> str:
        return "LoguruFields()"

    def __call__(self, record: Any) -> None:
        """Add the fields to ``record["extra"]``."""
        try:
            extra = record["extra"]
            for key, value in zip(_FIELDS, _fields(), strict=True):
                if not extra.get(key):
                    extra[key] = value
        except Exception:
            _internal.debug("otelkit: LoguruFields failed on a record", exc_info=True)
