"""The one place an exception passing through otelkit is reported.

An exception usually crosses several layers on its way up: the span of an
instrumented library (httpx, psycopg2...) records it, then one or more
``otelkit.span`` scopes, then a pipeline ``receive``, and finally Sentry's own
hooks (``sys.excepthook``, ``logging``, threads) may see it again. Each layer
calling its own "report" would give several span events and several Sentry
events for one failure. Instead every otelkit layer calls
:func:`report_exception`, which keeps a small record on the exception object
itself and guarantees:

- it is recorded as a span event only if no span recorded it yet (an
  instrumented library's span counts, through the hook installed by
  :func:`install_record_hook`); the span always gets the ERROR status;
- it is sent to Sentry once (when Sentry is on), whichever layer or Sentry
  integration sees it first; the Sentry event carries the trace and span IDs
  of the span it was reported through;
- every span ``report_exception`` is called with carries the Sentry event ID
  (:data:`SENTRY_EVENT_ID_ATTRIBUTE`), so the trace leads to the Sentry event.

Callers call ``report_exception(exc, span)`` while the span is still open.
They may record the exception on that span themselves first (``otelkit.span``
and the pipeline scopes do, under their own flags): the SDK hook notes it and
it is not recorded twice.

Job context: an exception inside a pipeline ``receive`` is usually reported
first by an inner ``otelkit.span``. The first (and only) Sentry event must
still carry the job, so :func:`current_error_context` reads the innermost
``receive`` scope (``otelkit._pipeline.scopes.current_message()``) and any
:func:`error_context` the application entered.

Sentry is plugged in by :mod:`otelkit._sentry` through :func:`set_sender`;
without it, reporting only touches the span (no Sentry import, no cost).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otelkit._internal_log import logger

SENTRY_EVENT_ID_ATTRIBUTE = "sentry.event_id"
"""Span attribute holding the ID of the Sentry event sent for the exception the span saw."""

_MARK_ATTRIBUTE = "_otelkit_report"

Sender = Callable[[BaseException, "SpanContext | None", Mapping[str, object]], "str | None"]
"""Sends one exception to Sentry: (exception, span context to link, job context) -> event ID or None."""


@dataclass
class ExceptionReport:
    """What otelkit already did with one exception object (stored on the exception)."""

    origin: SpanContext | None = None
    """The first (innermost) span the exception was recorded on."""
    recorded_on: set[int] = field(default_factory=set)
    """IDs of the spans that have an ``exception`` event for it."""
    sent: bool = False
    """True once a Sentry event exists for it (sent by otelkit or by a Sentry integration)."""
    event_id: str | None = None
    """The Sentry event ID, when known."""


_sender: Sender | None = None
_context: ContextVar[Mapping[str, object] | None] = ContextVar("otelkit_error_context", default=None)
# Set while report_exception itself records on a span, so the record hook does not send a second time.
_in_report: ContextVar[bool] = ContextVar("otelkit_in_report", default=False)
_original_record_exception: Callable[..., None] | None = None


def set_sender(sender: Sender | None) -> None:
    """Install (or remove, with None) the function that sends exceptions to Sentry."""
    global _sender
    _sender = sender


def sentry_enabled() -> bool:
    """True while a Sentry sender is installed."""
    return _sender is not None


def get_report(exc: BaseException, *, create: bool = False) -> ExceptionReport | None:
    """The report record stored on ``exc`` (created on demand when ``create``)."""
    report = exc.__dict__.get(_MARK_ATTRIBUTE) if hasattr(exc, "__dict__") else None
    if isinstance(report, ExceptionReport) or not create:
        return report if isinstance(report, ExceptionReport) else None
    report = ExceptionReport()
    try:
        # Straight into __dict__: exception classes with a strict __setattr__
        # (frozen dataclasses, attrs) still get marked.
        exc.__dict__[_MARK_ATTRIBUTE] = report
    except (AttributeError, TypeError):
        logger.debug("otelkit: cannot mark %s as reported; dedup is best effort", type(exc).__name__)
    return report


def already_recorded(exc: BaseException) -> bool:
    """True when some span already has an ``exception`` event for ``exc``.

    Span helpers use it to record an exception once, on the innermost span,
    instead of once per nesting level.
    """
    report = get_report(exc)
    return report is not None and bool(report.recorded_on)


def current_error_context() -> Mapping[str, object]:
    """The job context of the current code: the innermost pipeline ``receive`` scope, then :func:`error_context`."""
    entered = _context.get()
    job = _pipeline_context()
    if not job:
        return entered or {}
    return {**job, **entered} if entered else job


def _pipeline_context() -> Mapping[str, object]:
    # An exception inside ``receive`` is usually reported first by an inner
    # ``otelkit.span``; the job context must still reach that first (and only)
    # Sentry event. Read it from the pipeline's current scope, without importing
    # the pipeline when the application does not use it.
    scopes = sys.modules.get("otelkit._pipeline.scopes")
    if scopes is None:
        return {}
    try:
        message = scopes.current_message()
        if message is None:
            return {}
        context = message._report_context()
        return {k: v for k, v in context.items() if v is not None}
    except Exception:
        logger.debug("otelkit: could not read the pipeline job context", exc_info=True)
        return {}


@contextlib.contextmanager
def error_context(**context: object) -> Iterator[None]:
    """Attach job context (destination, message ID, attempt...) to exceptions reported inside.

    Nested contexts merge, inner keys win. Used by ``pipeline.receive`` so that
    the Sentry event of a failed job carries the job, even when an inner
    ``otelkit.span`` reports the exception first.
    """
    merged = {**current_error_context(), **context}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def report_exception(
    exc: BaseException, span: Any = None, *, context: Mapping[str, object] | None = None
) -> str | None:
    """Report an exception passing through an otelkit scope; return the Sentry event ID, if any.

    Args:
        exc: the exception.
        span: the span the exception passes through (default: the current span). Must still be open.
        context: extra job context for the Sentry event (merged over :func:`error_context`).

    Records ``exc`` on ``span`` unless a span already recorded it, sets the span
    status to ERROR, sends one Sentry event per exception object (when Sentry is
    on) and puts the event ID on the span. Never raises.
    """
    try:
        return _report(exc, span, context)
    except Exception:
        logger.debug("otelkit: reporting %s failed", type(exc).__name__, exc_info=True)
        return None


def _report(exc: BaseException, span: Any, context: Mapping[str, object] | None) -> str | None:
    install_record_hook()
    if span is None:
        span = trace.get_current_span()
    report = get_report(exc, create=True) or ExceptionReport()
    span_context: SpanContext | None = span.get_span_context()
    if span_context is not None and not span_context.is_valid:
        span_context = None
    recording = bool(span.is_recording())
    if recording:
        if not report.recorded_on:
            token = _in_report.set(True)
            try:
                span.record_exception(exc, escaped=True)
            except Exception:  # the SDK calls str(exc); an exception whose __str__ raises still gets its event
                record_unprintable(span, exc)
            finally:
                _in_report.reset(token)
            if span_context is not None:
                # Without the SDK hook (a non-SDK span) the recording is not noted: do it here.
                report.recorded_on.add(span_context.span_id)
                if report.origin is None:
                    report.origin = span_context
        _set_error_status(span, exc)
    if not report.sent and _sender is not None:
        report.sent = True
        merged = {**current_error_context(), **(context or {})}
        report.event_id = _sender(exc, span_context, merged)
    if report.event_id and recording:
        span.set_attribute(SENTRY_EVENT_ID_ATTRIBUTE, report.event_id)
    return report.event_id


def _set_error_status(span: Any, exc: BaseException) -> None:
    status = getattr(span, "status", None)
    if status is not None and status.status_code is StatusCode.ERROR:
        return
    # The description is scrubbed with the rest of the span by the export-side scrubber.
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exception_text(exc)}"))


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``<unprintable TYPE>`` when the exception's own ``__str__`` raises. Never raises."""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def record_unprintable(span: Any, exc: BaseException) -> None:
    """The ``exception`` event the SDK could not build (semantic-convention attributes, safe text)."""
    import traceback

    try:
        stacktrace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        stacktrace = ""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
    span.add_event("exception", {"exception.type": name, "exception.message": exception_text(exc),
                                 "exception.stacktrace": stacktrace, "exception.escaped": "True"})


def install_record_hook() -> None:
    """Wrap the SDK ``Span.record_exception`` once, so library spans mark the exceptions they record.

    The mark lets otelkit (a) skip recording the same exception again on outer
    spans, (b) link a Sentry event to the library span when the exception
    reaches ``sys.excepthook`` outside any span, and (c) report exceptions that
    a server or consumer instrumentation records and then turns into an error
    response (nothing else would ever see them). The wrapper costs nothing on
    spans without exceptions.
    """
    global _original_record_exception
    if _original_record_exception is not None:
        return
    from opentelemetry.sdk.trace import Span as SdkSpan

    original = SdkSpan.record_exception
    _original_record_exception = original

    @functools.wraps(original)
    def record_exception(
        self: SdkSpan,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        original(self, exception, attributes, timestamp, escaped)
        try:
            _on_recorded(self, exception)
        except Exception:
            logger.debug("otelkit: exception record hook failed", exc_info=True)

    SdkSpan.record_exception = record_exception  # type: ignore[method-assign]


def uninstall_record_hook() -> None:
    """Undo :func:`install_record_hook` (tests)."""
    global _original_record_exception
    if _original_record_exception is None:
        return
    from opentelemetry.sdk.trace import Span as SdkSpan

    SdkSpan.record_exception = _original_record_exception  # type: ignore[method-assign]
    _original_record_exception = None


def _on_recorded(span: Any, exc: BaseException) -> None:
    if not isinstance(exc, BaseException):
        return
    report = get_report(exc, create=True)
    if report is None:
        return
    span_context: SpanContext = span.get_span_context()
    if span_context.is_valid:
        report.recorded_on.add(span_context.span_id)
        if report.origin is None:
            report.origin = span_context
    if _in_report.get() or report.sent or _sender is None:
        return
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and (scope.name == "otelkit" or scope.name.startswith("otelkit.")):
        return  # otelkit's own spans report through report_exception, with their job context
    # A server/consumer span is the edge of a unit of work: the framework or
    # consumer loop is about to turn the exception into an error response or a
    # nack, so nothing else will report it. Client spans (httpx, redis...) are
    # left alone: the exception either propagates to a reporting layer or is
    # handled by the application, and a handled error is not an alert.
    if getattr(span, "kind", None) not in (SpanKind.SERVER, SpanKind.CONSUMER):
        return
    report.sent = True
    report.event_id = _sender(exc, span_context if span_context.is_valid else None, current_error_context())
    if report.event_id and span.is_recording():
        span.set_attribute(SENTRY_EVENT_ID_ATTRIBUTE, report.event_id)
