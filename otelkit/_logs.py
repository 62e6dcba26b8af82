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
* **OTLP handler.** One :class:`OtelkitLogHandler` on the root logger at
  ``settings.log_level``; re-init re-points it, never adds a second one. The
  exported OTel ``LogRecord`` carries the trace context on the record itself
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

If the root logger's level is above ``settings.log_level`` it is lowered to
it (otherwise ``logger.info`` never creates a record to export);
:func:`uninstall` restores it.
"""

from __future__ import annotations

import json
import logging
import math
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

# The "InterceptHandler" recipe routes stdlib logging into loguru; with otelkit.loguru_handler() and
# otelkit's own root handler both in place, one stdlib record would reach OTLP twice. Whichever path
# exports it first claims it (per thread, by identity). Off until loguru_handler() is used: free otherwise.
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
            from otelkit._logs_third_party import structlog_event

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
_root_level_before: int | None = None
_lock = threading.Lock()


def install(settings: Settings, logger_provider: Any) -> None:
    """Install the record factory and the single OTLP handler (idempotent; re-init re-points it).

    Args:
        settings: Reads ``log_level``, ``log_correlation`` and ``disabled``.
        logger_provider: The logger provider records go to (otelkit's proxy or an SDK
            ``LoggerProvider``); ``None`` installs only the record fields.
    """
    global _handler, _root_level_before
    level = int(getattr(settings, "log_level", logging.INFO))
    correlation = bool(getattr(settings, "log_correlation", True))
    disabled = bool(getattr(settings, "disabled", False))
    with _lock:
        install_record_factory(correlation and not disabled)
        root = logging.getLogger()
        if disabled or logger_provider is None:
            _remove_handler(root)
            return
        # Never two: also drop handlers of ours left by an earlier import of this module.
        for existing in list(root.handlers):
            if type(existing).__name__ == "OtelkitLogHandler" and existing is not _handler:
                root.removeHandler(existing)
        if _handler is None:
            _handler = OtelkitLogHandler(logger_provider, level)
        else:
            _handler.set_provider(logger_provider)
            _handler.setLevel(level)
        if _handler not in root.handlers:
            root.addHandler(_handler)
        if root.level > level or root.level == logging.NOTSET and level < logging.WARNING:
            if _root_level_before is None:
                _root_level_before = root.level
            root.setLevel(level)


def _remove_handler(root: logging.Logger) -> None:
    global _handler, _root_level_before
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    if _root_level_before is not None:
        root.setLevel(_root_level_before)
        _root_level_before = None


def uninstall() -> None:
    """Remove the OTLP handler and restore the root level.

    The record factory stays: format strings using ``%(trace_id)s`` keep working
    after ``otelkit.shutdown()``, a disabled re-init or a test reset (with no
    span the fields are ``""``). :func:`remove_record_factory` takes it out.
    """
    with _lock:
        _remove_handler(logging.getLogger())


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
