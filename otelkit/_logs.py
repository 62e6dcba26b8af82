"""Log correlation, the one OTLP logging handler, and :class:`JsonFormatter`.

Three pieces, all installed by :func:`install` (called by ``init()``):

* **Record fields.** A record factory (``logging.setLogRecordFactory``,
  wrapping whatever factory was there) puts ``trace_id``, ``span_id`` and
  ``correlation_id`` on *every* ``logging.LogRecord``, so any handler's format
  string can use ``%(trace_id)s``. Values are lower-case hex (32 and 16
  characters) and the correlation ID string, or ``""`` when there is no valid
  span / no correlation ID. The fields exist even when telemetry is disabled
  or ``log_correlation`` is off (then they are ``""``), so a format string
  never raises ``KeyError``. ``extra={"correlation_id": ...}`` (or
  ``trace_id``/``span_id``) overrides the computed value instead of raising
  the stdlib's "Attempt to overwrite" ``KeyError``.
* **OTLP handler.** One :class:`OtelkitLogHandler` at ``settings.log_level``;
  re-init re-points it, never adds a second one. It is *not* in
  ``logging.root.handlers``: a wrapper around ``logging.Logger.callHandlers``
  (the hook Sentry's logging integration uses too) hands it every record that
  reaches the root logger, after the application's own handlers. So
  ``logging.basicConfig()`` after ``init()`` still configures the console (it
  only acts when the root logger has no handlers), ``basicConfig(force=True)``
  and ``dictConfig`` cannot remove it, and a record logged where no handler
  is configured still reaches Python's last-resort stderr handler as it would
  without otelkit. The exported OTel ``LogRecord`` carries the trace context on the record itself
  (``trace_id``/``span_id``/``trace_flags``), from the context current when
  the stdlib record was created. Records of the ``otelkit`` and
  ``opentelemetry`` loggers, of the exporters' transports (``grpc``,
  ``urllib3``, ``requests``, ``httpcore`` internals) and anything logged on
  an export thread (``OtelBatch*``, ``OtelPeriodic*``, ``otelkit-*``) are
  never exported, so an export failure cannot feed back into the pipeline. A re-entrancy guard drops records
  logged while the handler itself is emitting.
* **JsonFormatter** for stdout: one JSON object per line.

The record factory is installed when this module is first imported and stays
(see :func:`uninstall`).

Levels. Only when log records are exported (an exporter or a log processor
is configured) and the root logger's level is above ``settings.log_level`` is
the root logger lowered to it: otherwise ``logger.info`` never creates a record
to export. The application's handlers still see only what its own level lets
through: a record below the level the application gave the root logger, from a
logger whose level comes from the root, is exported and handed to no other
handler. The root logger's ``setLevel`` is watched (``basicConfig(level=...)``
and ``dictConfig`` after ``init()`` call it): the new level becomes the
application's level and the root stays low enough to export. With logs not
exported, no level is touched. :func:`uninstall` restores all of it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from threading import get_ident as _get_ident
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace

from otelkit._compat import ApiLogRecord as OTelLogRecord
from otelkit._compat import NoOpLogger, SeverityNumber
from otelkit._names import CORRELATION_ATTRIBUTE

if TYPE_CHECKING:
    from otelkit._config import Settings

__all__ = ["JsonFormatter", "OtelkitLogHandler", "install", "install_record_factory", "uninstall"]

_FIELDS = ("trace_id", "span_id", "correlation_id")
_get_current = context_api.get_current
_get_current_span = trace.get_current_span

# Loggers whose records never go to OTLP: otelkit's own diagnostics, the SDK's,
# and the transports the exporters use (a failing export logs through them).
# Threads that export telemetry (the SDK's batch processors and periodic metric reader, otelkit's
# export and shutdown workers): whatever is logged on them is about exporting, never exported.
_EXPORT_THREADS = ("OtelBatch", "OtelPeriodic", "otelkit-")
_NEVER_EXPORTED = ("otelkit", "opentelemetry", "grpc", "urllib3", "requests", "httpcore", "hpack", "h2")

# Standard LogRecord attributes: everything else in record.__dict__ came from
# ``extra=`` (or another library's factory) and is exported / printed as a field.
_STANDARD_ATTRS = frozenset((
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
    "lineno", "message", "module", "msecs", "msg", "name", "pathname", "process", "processName",
    "relativeCreated", "stack_info", "thread", "threadName", "taskName",
    *_FIELDS,
    # contrib logging instrumentation's injected fields duplicate ours
    "otelSpanID", "otelTraceID", "otelTraceSampled", "otelServiceName",
))

_SEVERITY = {
    logging.DEBUG: SeverityNumber.DEBUG,
    logging.INFO: SeverityNumber.INFO,
    logging.WARNING: SeverityNumber.WARN,
    logging.ERROR: SeverityNumber.ERROR,
    logging.CRITICAL: SeverityNumber.FATAL,
}
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def _severity(levelno: int) -> SeverityNumber:
    number = _SEVERITY.get(levelno)
    if number is not None:
        return number
    if levelno < logging.DEBUG:
        return SeverityNumber.TRACE
    # Between two named levels: OTel has 4 steps per level (DEBUG=5..8, INFO=9..12, ...).
    base = min(max(levelno // 10, 1), 5)
    return SeverityNumber(min(1 + base * 4 + min((levelno % 10) // 3, 3), 24))


# --- record fields ---------------------------------------------------------------------------------

# The last span seen and its hex forms: consecutive records usually share a span.
_hex_cache: tuple[int, int, str, str] = (0, 0, "", "")
_correlation_enabled = True
_factory_installed = False
_factory_active = False
_previous_factory: Callable[..., logging.LogRecord] | None = None
_original_make_record: Callable[..., logging.LogRecord] | None = None


_get_correlation: Callable[[Any], str | None] | None = None


def _correlation_id(ctx: Any) -> str:
    global _get_correlation
    try:
        getter = _get_correlation
        if getter is None:
            from otelkit._correlation import get_correlation_id

            getter = _get_correlation = get_correlation_id
        value = getter(ctx)
    except Exception:
        return ""
    return value if isinstance(value, str) else ""


def current_fields() -> tuple[str, str, str]:
    """``(trace_id, span_id, correlation_id)`` of the current context; ``""`` for what is absent."""
    global _hex_cache
    ctx = _get_current()
    span_context = _get_current_span(ctx).get_span_context()
    trace_id = span_context.trace_id
    span_id = span_context.span_id
    if trace_id and span_id:
        cached = _hex_cache
        if cached[0] == span_id and cached[1] == trace_id:
            trace_hex, span_hex = cached[2], cached[3]
        else:
            trace_hex, span_hex = format(trace_id, "032x"), format(span_id, "016x")
            _hex_cache = (span_id, trace_id, trace_hex, span_hex)
    else:
        trace_hex = span_hex = ""
    return trace_hex, span_hex, _correlation_id(ctx)


def _make_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def otelkit_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        fields = record.__dict__
        if _factory_active and _correlation_enabled:
            try:
                fields["trace_id"], fields["span_id"], fields["correlation_id"] = current_fields()
                return record
            except Exception:  # never let a log call fail because of us
                pass
        fields["trace_id"] = fields["span_id"] = fields["correlation_id"] = ""
        return record

    otelkit_record_factory._otelkit = True  # type: ignore[attr-defined]
    return otelkit_record_factory


def _make_record_allowing_overrides(make_record: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    # The stdlib refuses ``extra`` keys already on the record ("Attempt to
    # overwrite"); since our factory adds the three fields, a user passing
    # ``extra={"correlation_id": ...}`` would crash. Let ``extra`` win instead.
    def makeRecord(self: logging.Logger, name: str, level: int, fn: str, lno: int, msg: object, args: Any,
                   exc_info: Any, func: str | None = None, extra: Mapping[str, object] | None = None,
                   sinfo: str | None = None) -> logging.LogRecord:
        if extra and not _FIELD_SET.isdisjoint(extra):
            overrides = {k: extra[k] for k in _FIELDS if k in extra}
            extra = {k: v for k, v in extra.items() if k not in overrides}
            record = make_record(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
            record.__dict__.update(overrides)
            return record
        return make_record(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)

    makeRecord._otelkit = True  # type: ignore[attr-defined]
    return makeRecord


_FIELD_SET = frozenset(_FIELDS)


def install_record_factory(correlation: bool = True) -> None:
    """Make every ``LogRecord`` carry ``trace_id``, ``span_id`` and ``correlation_id``. Idempotent.

    Args:
        correlation: Fill the fields from the current context (``False``: always ``""``).
    """
    global _factory_installed, _factory_active, _previous_factory, _correlation_enabled, _original_make_record
    _correlation_enabled = correlation
    _factory_active = True
    current = logging.getLogRecordFactory()
    if not getattr(current, "_otelkit", False) and not _factory_installed:
        _previous_factory = current
        logging.setLogRecordFactory(_make_factory(current))
        _factory_installed = True
    if not getattr(logging.Logger.makeRecord, "_otelkit", False):
        _original_make_record = logging.Logger.makeRecord
        logging.Logger.makeRecord = _make_record_allowing_overrides(logging.Logger.makeRecord)  # type: ignore[method-assign]


def _uninstall_record_factory() -> None:
    global _factory_installed, _factory_active, _original_make_record
    _factory_active = False
    current = logging.getLogRecordFactory()
    if getattr(current, "_otelkit", False) and _previous_factory is not None:
        logging.setLogRecordFactory(_previous_factory)
        _factory_installed = False
    # Otherwise someone wrapped our factory: leave the chain alone; with
    # _factory_active False it only writes empty fields, so formats stay safe.
    if getattr(logging.Logger.makeRecord, "_otelkit", False) and _original_make_record is not None:
        logging.Logger.makeRecord = _original_make_record  # type: ignore[method-assign]
        _original_make_record = None


# --- OTLP handler ----------------------------------------------------------------------------------

_emitting = threading.local()

# The "InterceptHandler" recipe routes stdlib logging into loguru; with otelkit.LoguruExporter() and
# otelkit's own root handler both in place, one stdlib record would reach OTLP twice. Whichever path
# exports it first claims it (per thread, by identity). Off until LoguruExporter() is used: free otherwise.
_claims = threading.local()
claiming = False


def claim_record(record: logging.LogRecord) -> bool:
    """True if this thread has not exported ``record`` yet; marks it exported."""
    ref = getattr(_claims, "record", None)
    if ref is not None and ref() is record:
        return False
    _claims.record = weakref.ref(record)
    return True


def _never_exported(name: str) -> bool:
    for prefix in _NEVER_EXPORTED:
        if name == prefix or (name.startswith(prefix) and name[len(prefix)] == "."):
            return True
    return False


def _attribute_value(value: object) -> Any:
    if value is None or isinstance(value, (str, bool, int, float, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return [_attribute_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _attribute_value(v) for k, v in value.items()}
    return str(value)


class OtelkitLogHandler(logging.Handler):
    """Sends stdlib log records to the OTel logs pipeline, trace context on the record itself.

    Installed once on the root logger by :func:`install`; users do not create it.
    """

    def __init__(self, logger_provider: Any, level: int = logging.INFO) -> None:
        super().__init__(level=level)
        self._provider = logger_provider
        self._loggers: dict[str, Any] = {}
        self._excluded: dict[str, bool] = {}

    def set_provider(self, logger_provider: Any) -> None:
        """Point the handler at another logger provider (re-init)."""
        if logger_provider is not self._provider:
            self._provider = logger_provider
            self._loggers = {}

    def _logger(self, name: str) -> Any:
        # SDK get_logger takes a lock and updates a set on every call: cache per name.
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._provider.get_logger(name)
            self._loggers[name] = logger
        return logger

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the OTel processors are thread-safe, and serialising
        # every log call of every thread on one lock is what we want to avoid.
        if record.levelno < self.level:
            return False
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Translate and emit one record; never raises, never recurses."""
        name = record.name
        excluded = self._excluded.get(name)
        if excluded is None:
            excluded = self._excluded[name] = _never_exported(name)
        if excluded or (record.threadName or "").startswith(_EXPORT_THREADS):
            return
        if getattr(_emitting, "active", False):
            return
        if claiming and not claim_record(record):
            return
        _emitting.active = True
        try:
            logger = self._logger(name)
            if isinstance(logger, NoOpLogger):
                return
            logger.emit(self._translate(record))
        except Exception:
            # Our own logger is never exported (see _NEVER_EXPORTED), so this cannot loop.
            logging.getLogger("otelkit").debug("otelkit: could not export a log record", exc_info=True)
        finally:
            _emitting.active = False

    def _context(self, record: logging.LogRecord) -> Any:
        if record.thread == _get_ident():
            # Handlers run synchronously in the logging call, in the context the record was made in.
            return _get_current()
        span_hex = record.__dict__.get("span_id")
        if span_hex is None:  # no otelkit factory in the chain: the current context is all we have
            return _get_current()
        if not span_hex or not isinstance(span_hex, str):
            return None  # no span when the record was made: do not borrow the listener thread's
        # Made in another context (QueueHandler, a thread pool): rebuild it from the record.
        trace_hex = record.__dict__.get("trace_id")
        try:
            rebuilt = trace.SpanContext(int(str(trace_hex), 16), int(span_hex, 16), is_remote=False,
                                        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        except ValueError:
            return None
        return trace.set_span_in_context(trace.NonRecordingSpan(rebuilt))

    def _translate(self, record: logging.LogRecord) -> OTelLogRecord:
        attributes: dict[str, Any] = {
            "code.file.path": record.pathname,
            "code.function.name": record.funcName,
            "code.line.number": record.lineno,
        }
        fields = record.__dict__
        # Standard keys plus our three and nothing else: no ``extra`` fields to copy.
        plain = len(fields) == _PLAIN_RECORD_LEN and "trace_id" in fields and "span_id" in fields \
            and "correlation_id" in fields
        # structlog's ProcessorFormatter.wrap_for_formatter: msg is the event dict, plus two private extras.
        structlog_dict = not plain and type(record.msg) is dict and "_logger" in fields and "_name" in fields
        if not plain:
            for key, value in fields.items():
                if key not in _STANDARD_ATTRS and not (structlog_dict and key in ("_logger", "_name")):
                    try:
                        attributes[key] = _attribute_value(value)
                    except Exception:  # an extra whose __iter__/__str__ raises: keep the record, not the value
                        attributes[key] = _unprintable(value)
        correlation = fields.get("correlation_id")
        if correlation:
            attributes[CORRELATION_ATTRIBUTE] = correlation
        if record.exc_info:
            exc_type, exc, tb = record.exc_info
            if exc_type is not None:
                attributes["exception.type"] = exc_type.__name__
            if exc is not None:
                attributes["exception.message"] = str(exc)
            if tb is not None:
                attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc_type, exc, tb))
        body: Any
        if structlog_dict:
            body = structlog_event(record.msg, attributes)  # type: ignore[arg-type]  # a dict, tested above
        else:
            body = _message(record)
        context = self._context(record)
        if context is None:
            context = _EMPTY_CONTEXT
        return OTelLogRecord(
            timestamp=int(record.created * 1e9),
            context=context,
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            severity_number=_severity(record.levelno),
            body=body,
            attributes=attributes,
        )

    def flush(self) -> None:
        """Nothing to do: flushing the pipeline is ``otelkit.shutdown()``'s job, under its deadline."""

    def close(self) -> None:
        """Detach from the provider; the provider itself is shut down by ``otelkit.shutdown()``."""
        super().close()


# A context without a span: LogRecord(context=None) would fall back to the
# *current* context, which is wrong for a record made outside any span.
_EMPTY_CONTEXT = trace.set_span_in_context(trace.INVALID_SPAN, context_api.Context())

_handler: OtelkitLogHandler | None = None
_lock = threading.Lock()
# Only ever taken on its own (never while calling into logging): callHandlers may run under logging's lock.
_changed_lock = threading.Lock()
_root = logging.root

# Root level split (see the module docstring): the level the application gave the root logger and the
# lower one otelkit set so records at ``log_level`` exist. None while otelkit has not lowered it.
_app_root_level: int | None = None
_our_root_level: int | None = None
_console_logs = False  # records also print on the console: Python's last-resort handler would print them twice


def _reaches_root(logger: logging.Logger) -> tuple[bool, bool]:
    """``(reaches, level_from_root)``: does a record of ``logger`` propagate to the root logger, and does
    ``logger``'s effective level come from the root's (no logger on the way has a level of its own)?"""
    node: logging.Logger | None = logger
    from_root = True
    while node is not _root:
        if node is None or not node.propagate:
            return False, False
        if node.level:
            from_root = False
        node = node.parent
    return True, from_root


def _make_call_handlers(original: Callable[[logging.Logger, logging.LogRecord], None]
                        ) -> Callable[[logging.Logger, logging.LogRecord], None]:
    def callHandlers(self: logging.Logger, record: logging.LogRecord) -> None:
        handler = _handler
        if handler is None or record.levelno < handler.level:
            original(self, record)
            return
        try:
            reaches, from_root = _reaches_root(self)
        except Exception:  # a broken logger hierarchy: behave as the stdlib would
            reaches = from_root = False
        if not reaches:
            original(self, record)
            return
        app_level = _app_root_level
        if app_level is not None and _root.level != _our_root_level:
            _root_level_changed()
            app_level = None
        # A record that exists only because otelkit lowered the root level: exported, shown to no one else.
        if app_level is None or record.levelno >= app_level or not from_root:
            original(self, record)
        try:
            handler.handle(record)
        except Exception:
            pass  # emit() already never raises; a broken filter of the user's must not break logging

    callHandlers._otelkit = True  # type: ignore[attr-defined]
    callHandlers._otelkit_original = original  # type: ignore[attr-defined]
    return callHandlers


def _root_level_changed() -> None:
    """The application assigned ``root.level`` directly: its level rules from then on."""
    global _app_root_level, _our_root_level
    with _changed_lock:  # two threads may notice at once: one warning
        if _app_root_level is None or _root.level == _our_root_level:
            return
        _app_root_level = _our_root_level = None
    handler = _handler
    if handler is not None and _root.level > handler.level:
        from otelkit._internal_log import logger

        logger.warning("otelkit: the root logger's level was assigned directly (logging.root.level = %s) after "
                       "otelkit.init(); %s records are no longer created, so they are not exported. Use "
                       "logging.getLogger().setLevel(...) (otelkit then keeps exporting them and your handlers "
                       "still show only your level), or set OTELKIT_LOG_LEVEL=%s to export only what you keep",
                       logging.getLevelName(_root.level), logging.getLevelName(handler.level),
                       logging.getLevelName(_root.level))


_wrapper: Callable[..., Any] | None = None  # our Logger.callHandlers wrapper, while it is in the chain


def _chain_contains(fn: Any, target: Any, depth: int = 6) -> bool:
    """Is ``target`` ``fn`` or a function ``fn`` wraps (``__wrapped__``, or a closure cell: Sentry's wrapper)?"""
    if fn is target:
        return True
    if depth == 0:
        return False
    inner = getattr(fn, "__wrapped__", None)
    if inner is not None and _chain_contains(inner, target, depth - 1):
        return True
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(content) and _chain_contains(content, target, depth - 1):
            return True
    return False


def _install_call_handlers() -> None:
    global _wrapper
    current = logging.Logger.callHandlers
    # Sentry's logging integration wraps callHandlers too; ours may sit inside its wrapper: never add a second.
    if _wrapper is not None and _chain_contains(current, _wrapper):
        return
    _wrapper = _make_call_handlers(current)
    logging.Logger.callHandlers = _wrapper  # type: ignore[method-assign,assignment]


def _remove_call_handlers() -> None:
    # Only when ours is the outermost wrapper: someone (Sentry) may have wrapped it since; then it stays and,
    # with no handler, only forwards (and the next install finds it and does not add another).
    global _wrapper
    original = getattr(_wrapper, "_otelkit_original", None)
    if _wrapper is not None and logging.Logger.callHandlers is _wrapper and original is not None:
        logging.Logger.callHandlers = original  # type: ignore[method-assign]
        _wrapper = None


class _LastResort(logging.Handler):
    """Python's last-resort handler, silent for a record otelkit prints on the console anyway.

    Only installed while logs go to the console: a warning of an application that configured no
    logging would otherwise print twice (once plain, once as otelkit's log line).
    """

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> bool:
        handler = _handler
        if _console_logs and handler is not None and record.levelno >= handler.level \
                and not _never_exported(record.name):
            logger = _root if record.name == "root" else logging.Logger.manager.loggerDict.get(record.name)
            if isinstance(logger, logging.Logger) and _reaches_root(logger)[0]:
                return False
        return bool(self.inner.handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        self.inner.emit(record)


def _set_console(console: bool) -> None:
    global _console_logs
    _console_logs = console
    current = logging.lastResort
    if console and current is not None and not isinstance(current, _LastResort):
        logging.lastResort = _LastResort(current)
    elif not console and isinstance(current, _LastResort):
        logging.lastResort = current.inner


def _watched_set_level(level: int | str) -> None:
    """``logging.root.setLevel`` while otelkit keeps the root low enough to export: the application's
    level is remembered (its handlers keep seeing only that) and the root stays at ``log_level``."""
    global _app_root_level, _our_root_level
    # No otelkit lock here: basicConfig/dictConfig call this holding logging's module lock, and install()
    # takes otelkit's lock before logging's; taking it here would invert that order (a deadlock).
    logging.Logger.setLevel(_root, level)
    _app_root_level = _our_root_level = None
    _lower_root()


def _lower_root() -> None:
    global _app_root_level, _our_root_level
    handler = _handler
    current = _root.level
    if handler is not None and current and current > handler.level:  # NOTSET (0) lets everything through
        _app_root_level = current
        logging.Logger.setLevel(_root, handler.level)
        _our_root_level = _root.level


def _watch_root_level(on: bool) -> None:
    if on:
        if _root.__dict__.get("setLevel") is not _watched_set_level:
            _root.setLevel = _watched_set_level  # type: ignore[method-assign]
    elif _root.__dict__.get("setLevel") is _watched_set_level:
        del _root.setLevel


def install(settings: Settings, logger_provider: Any, *, export: bool = True, console: bool = False) -> None:
    """Install the record factory and the single OTLP handler (idempotent; re-init re-points it).

    Args:
        settings: Reads ``log_level``, ``log_correlation`` and ``disabled``.
        logger_provider: The logger provider records go to (otelkit's proxy or an SDK
            ``LoggerProvider``); ``None`` installs only the record fields.
        export: Log records are exported somewhere (an exporter or a processor is configured). Only
            then may the root logger's level be lowered to ``log_level``.
        console: Log records are printed on the console by otelkit.
    """
    global _handler
    level = settings.log_level
    correlation = settings.log_correlation
    disabled = settings.disabled
    with _lock:
        install_record_factory(correlation and not disabled)
        root = logging.getLogger()
        # Never two: drop handlers of ours left on the root logger by an earlier version or import.
        for existing in list(root.handlers):
            if type(existing).__name__ == "OtelkitLogHandler":
                root.removeHandler(existing)
        if disabled or logger_provider is None:
            _remove_handler()
            return
        if _handler is None:
            _handler = OtelkitLogHandler(logger_provider, level)
        else:
            _handler.set_provider(logger_provider)
            _handler.setLevel(level)
        _install_call_handlers()
        _set_console(console)
        _restore_root_level()
        if export:
            _lower_root()
        _watch_root_level(export)


def _restore_root_level() -> None:
    global _app_root_level, _our_root_level
    if _app_root_level is not None and _root.level == _our_root_level:
        logging.Logger.setLevel(_root, _app_root_level)
    _app_root_level = _our_root_level = None


def _remove_handler() -> None:
    global _handler
    _handler = None
    _watch_root_level(False)
    _restore_root_level()
    _set_console(False)
    _remove_call_handlers()


def uninstall() -> None:
    """Remove the OTLP handler and restore the root level and the last-resort handler.

    The record factory stays: format strings using ``%(trace_id)s`` keep working
    after ``otelkit.shutdown()``, a disabled re-init or a test reset (with no
    span the fields are ``""``). :func:`remove_record_factory` takes it out.
    """
    with _lock:
        _remove_handler()


def remove_record_factory() -> None:
    """Restore the record factory and ``Logger.makeRecord`` found at install (tests only)."""
    with _lock:
        _uninstall_record_factory()


def otlp_handler() -> OtelkitLogHandler | None:
    """The installed handler, or None (for tests and ``otelkit doctor``)."""
    return _handler


# Keys of a record made by the stdlib factory plus our three fields (a record
# with exactly this many keys has no ``extra`` fields: keys are only ever added).
_PLAIN_RECORD_LEN = len(logging.LogRecord("x", logging.INFO, "", 0, "", (), None).__dict__) + len(_FIELDS)

# --- structlog events (also reached by the stdlib handler: ProcessorFormatter records carry the event dict) ---

_FIELDS = ("trace_id", "span_id", "correlation_id")
# Keys that are the record itself (body, level, time, scope, trace context, exception) or structlog internals.
_STRUCTLOG_RESERVED = frozenset(("event", "level", "timestamp", "logger", "exc_info", "exception", "_record",
                                 "_from_structlog", "positional_args", *_FIELDS))


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a __str__ that raises
        return _unprintable(value)


def _put(attributes: dict[str, Any], key: object, value: object) -> None:
    try:
        attributes[key if isinstance(key, str) else _safe_str(key)] = _attribute_value(value)
    except Exception:  # an __iter__/__str__ that raises, a circular container: keep the record
        attributes[_safe_str(key)] = _unprintable(value)


def _exception_attributes(attributes: dict[str, Any], exc_type: Any, exc: Any, tb: Any) -> None:
    if exc_type is not None:
        attributes["exception.type"] = getattr(exc_type, "__name__", None) or _safe_str(exc_type)
    if exc is not None:
        attributes["exception.message"] = _safe_str(exc)
    try:
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc_type, exc, tb))
    except Exception:
        pass


def structlog_event(event_dict: Mapping[str, Any], attributes: dict[str, Any]) -> Any:
    """Put a structlog event dict's keys and exception into ``attributes``; return the body. Never raises.

    Also used by the stdlib handler for records made by ``ProcessorFormatter.wrap_for_formatter``
    (their ``msg`` is the event dict).
    """
    try:
        for key, value in event_dict.items():
            if key not in _STRUCTLOG_RESERVED:
                _put(attributes, key, value)
        correlation = event_dict.get("correlation_id")
        if correlation and isinstance(correlation, str):
            attributes[CORRELATION_ATTRIBUTE] = correlation
        _structlog_exception(attributes, event_dict)
        event = event_dict.get("event")
        return event if isinstance(event, str) or event is None else _safe_str(event)
    except Exception:
        return _safe_str(event_dict)


def _structlog_exception(attributes: dict[str, Any], event_dict: Mapping[str, Any]) -> None:
    exc_info = event_dict.get("exc_info")
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):  # True: the exception being handled
            exc_info = sys.exc_info()
        if len(exc_info) == 3 and exc_info[0] is not None:
            _exception_attributes(attributes, *exc_info)
        return
    # format_exc_info / dict_tracebacks already turned exc_info into ``exception``.
    rendered = event_dict.get("exception")
    if isinstance(rendered, str) and rendered:
        attributes["exception.stacktrace"] = rendered
        last = rendered.rstrip().rsplit("\n", 1)[-1]
        name, sep, message = last.partition(": ")
        if name and " " not in name:
            attributes["exception.type"] = name.rsplit(".", 1)[-1]
            attributes["exception.message"] = message if sep else ""
    elif isinstance(rendered, list) and rendered and isinstance(rendered[0], Mapping):
        first = rendered[0]  # dict_tracebacks: the exception raised comes first
        attributes["exception.type"] = _safe_str(first.get("exc_type", ""))
        attributes["exception.message"] = _safe_str(first.get("exc_value", ""))
        attributes["exception.stacktrace"] = _safe_str(rendered)


# Installed on import, not only by install(): otelkit's own modules import this one
# on every init() path (enabled, disabled, reset), so the fields exist from then on.
install_record_factory()


# --- JSON formatter --------------------------------------------------------------------------------


_CORE_KEYS = frozenset(("time", "level", "logger", "message", "trace_id", "span_id", "correlation_id", "exception",
                        "stack"))


def _unprintable(value: object) -> str:
    return f"<unprintable {type(value).__name__}>"


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or the best text available when user input breaks it. Never raises."""
    try:
        return record.getMessage()
    except Exception:  # a bad %-format, or an argument whose __str__ raises
        pass
    try:
        return f"{record.msg!r} % {record.args!r}"
    except Exception:
        pass
    try:
        return str(record.msg)
    except Exception:
        return _unprintable(record.msg)


def _json_default(value: object) -> Any:
    if isinstance(value, float):  # only non-finite floats get here (see _dumps)
        return str(value)
    try:
        return str(value)
    except Exception:
        return _unprintable(value)


def _finite(value: Any, depth: int = 0) -> Any:
    """``value`` with NaN/Infinity floats (not valid JSON) replaced by their names.

    Containers deeper than 20 levels (or circular) become their ``str()``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list, tuple)):
        if depth > 20:
            return _json_default(value)
        if isinstance(value, dict):
            return {k: _finite(v, depth + 1) for k, v in value.items()}
        return [_finite(v, depth + 1) for v in value]
    return value


def _dumps(out: dict[str, Any], ensure_ascii: bool) -> str:
    try:
        text = json.dumps(out, default=_json_default, ensure_ascii=ensure_ascii, allow_nan=False)
    except ValueError:  # NaN/Infinity somewhere: strict JSON has no spelling for them
        text = json.dumps(_finite(out), default=_json_default, ensure_ascii=ensure_ascii, allow_nan=False)
    if not ensure_ascii:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (undecodable bytes, filenames): escape them
            text = json.dumps(_finite(out), default=_json_default, ensure_ascii=True, allow_nan=False)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for stdout and log shippers.

    Keys: ``time`` (ISO 8601 UTC, milliseconds, ``Z``), ``level``, ``logger``,
    ``message``, ``trace_id``, ``span_id``, ``correlation_id`` (``""`` when
    absent), ``exception`` (formatted traceback, only with ``exc_info``),
    ``stack`` (only with ``stack_info``), then every field passed with
    ``extra=``, and ``static_fields`` (e.g. ``{"service": "api"}``). Values
    JSON cannot hold are written with ``str()`` (NaN and infinities as ``"nan"``,
    ``"inf"``: strict JSON has no spelling for them); lone surrogates are escaped
    so the line is always valid UTF-8. Formatting never raises.

    Example::

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(otelkit.JsonFormatter(static_fields={"service": "worker"}))
        logging.getLogger().addHandler(handler)
    """

    def __init__(self, *, static_fields: Mapping[str, object] | None = None, ensure_ascii: bool = False) -> None:
        """Create the formatter.

        Args:
            static_fields: Fields added to every line (extra fields of the record win).
            ensure_ascii: Escape non-ASCII characters (default: write UTF-8 as is).
        """
        super().__init__()
        self._static = dict(static_fields or {})
        self._ensure_ascii = ensure_ascii

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 UTC with milliseconds, e.g. ``2026-01-31T12:00:00.123Z``."""
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields = record.__dict__
        if "trace_id" in fields:
            trace_id, span_id, correlation = fields.get("trace_id"), fields.get("span_id"), fields.get("correlation_id")
        else:  # no otelkit factory installed: read the current context
            try:
                trace_id, span_id, correlation = current_fields()
            except Exception:
                trace_id = span_id = correlation = ""
        message = _message(record)
        out: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "trace_id": trace_id or "",
            "span_id": span_id or "",
            "correlation_id": correlation or "",
        }
        try:
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                out["exception"] = record.exc_text
            if record.stack_info:
                out["stack"] = self.formatStack(record.stack_info)
        except Exception:  # a junk exc_info tuple from user code
            out["exception"] = _unprintable(record.exc_info)
        for key, value in self._static.items():
            out.setdefault(key, value)
        for key, value in fields.items():
            # extra fields win over static ones, never over the core keys above
            if key not in _STANDARD_ATTRS and key not in _CORE_KEYS and key[:1] != "_":
                out[key] = value
        try:
            return _dumps(out, self._ensure_ascii)
        except Exception:
            # e.g. non-string dict keys or a circular reference in an extra field: flatten to text
            safe = {str(k): v if isinstance(v, (str, int, bool)) or v is None else _json_default(_finite(v))
                    for k, v in out.items()}
            return _dumps(safe, self._ensure_ascii)
