"""The pipeline scopes: :class:`Emission`, :class:`Reception`, :class:`BatchReception`, :class:`Stage`.

Each is a context manager (sync and async) and a decorator (sync and async
functions). Telemetry failures inside a scope are logged to the ``otelkit``
logger and never reach the application; the application's own exceptions pass
through unchanged.

Hot-path notes (issue 8 wants emit/receive within 1.1x of hand-written SDK
code): spans are started with ``tracer.start_span`` and attached by hand
(no generator-based context manager), metric attribute dicts are cached per
destination, and instruments are cached per provider.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, MutableSequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode

from otelkit import _compat, _names

# the context key the baggage API stores its dict under; used to build a context in one step
from otelkit._compat import BAGGAGE_KEY as _BAGGAGE_KEY
from otelkit._correlation import get_correlation_id, is_valid_correlation_id, new_correlation_id
from otelkit._errors import exception_text, record_unprintable
from otelkit._internal_log import logger, warn_once
from otelkit._pipeline import carriers, carrying, propagation
from otelkit._pipeline.correlation import carried_correlation_id, property_value
from otelkit._pipeline.failures import classify_failure
from otelkit._pipeline.instruments import Instruments, instruments, tracer

F = TypeVar("F", bound=Callable[..., Any])
Parent = Literal["none", "producer", "current"]
Outcome = Literal["ack", "retry", "dead_letter", "drop"]

DEFAULT_MAX_LINKS = 128
"""Links per batch span (the SDK's default ``OTEL_SPAN_LINK_COUNT_LIMIT``)."""

_new_object = object.__new__
_EMPTY_CONTEXT = Context()  # what extracting from no carrier gives (a Context is never mutated in place)
_current: contextvars.ContextVar[_Consumption | None] = contextvars.ContextVar("otelkit_pipeline_message",
                                                                               default=None)
_SENT_AT = _names.SENT_AT_HEADER
_CORRELATION_HEADER = _names.CORRELATION_HEADER
_ATTEMPT = _names.ATTEMPT_HEADER
MESSAGE_ID_HEADER = "otelkit-message-id"
"""``emit(message_id=...)`` travels in this header, so the consumer span gets ``messaging.message.id`` too."""
ENQUEUED_AT_HEADER = "otelkit-enqueued-at"
"""Epoch ms of *this* publication when it differs from ``otelkit-sent-at`` (a retry keeps the first send time)."""
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RABBITMQ_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
RABBITMQ_DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
_MAX_ATTEMPT = 1_000_000

# Metric attribute dicts, cached per (system, destination, operation, group); bounded so a
# high-cardinality destination cannot grow memory without limit (it still costs the backend).
_attr_cache: dict[tuple[str, str, str, str | None], dict[str, str]] = {}
_ATTR_CACHE_MAX = 4096


def _metric_attrs(system: str, destination: str, operation: str, group: str | None) -> dict[str, str]:
    key = (system, destination, operation, group)
    attrs = _attr_cache.get(key)
    if attrs is None:
        attrs = {
            _names.MESSAGING_SYSTEM: system,
            _names.MESSAGING_DESTINATION: destination,
            _names.MESSAGING_OPERATION_NAME: operation,
            _names.MESSAGING_OPERATION_TYPE: operation,
        }
        if group is not None:
            attrs[_names.MESSAGING_CONSUMER_GROUP] = group
        if len(_attr_cache) < _ATTR_CACHE_MAX:
            _attr_cache[key] = attrs
    return attrs


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _report(exc: BaseException, span: Span, context: Mapping[str, object]) -> None:
    """Hand ``exc`` to ``otelkit._errors.report_exception`` once for this scope's span.

    ``report_exception`` records it on the span unless an inner span already did,
    sets the ERROR status and sends one Sentry event per exception object however
    many scopes it passes through. ``BaseException`` that is not an ``Exception``
    (cancellation, KeyboardInterrupt) is not a failure to report: it is only noted
    on the span.
    """
    if not isinstance(exc, Exception):
        _record(span, exc)
        return
    try:
        from otelkit._errors import report_exception

        report_exception(exc, span, context=context)
    except Exception as error:
        logger.debug("otelkit: report_exception failed: %s", type(error).__name__)


def _mark_failed(span: Span, exc: BaseException, error_type: str) -> None:
    # exception_text: an exception whose __str__ raises must not abort _finish before span.end()
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exception_text(exc)}"[:256]))
    span.set_attribute(_names.ERROR_TYPE, error_type)


def _record(span: Span, exc: BaseException) -> None:
    """``span.record_exception`` that survives an exception whose ``__str__`` raises (the SDK calls it)."""
    try:
        span.record_exception(exc, escaped=True)
    except Exception:
        record_unprintable(span, exc)


def _extract(carrier: Any) -> Context:
    """Extract into a fresh context; any failure (foreign propagator, odd carrier) gives an empty one."""
    if carrier is None or (type(carrier) is dict and not carrier):
        return Context()  # nothing to extract (a message without headers): skip every propagator's lookups
    try:
        return propagation.extract(carrier)
    except Exception as error:
        logger.debug("otelkit: could not extract trace context (%s); starting a fresh trace",
                     type(error).__name__)
        return Context()


def _parse_number(raw: object) -> float | None:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    else:
        text = carriers._decode(raw)
        if text is None or len(text) > 32:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    return value if math.isfinite(value) and value > 0 else None


# Emission times outside this window around now are junk (a bad header, an explicit stream ID such
# as "1-0", a producer with a broken clock): one of them would put ~1.8e9 s into the latency histograms.
_MAX_AGE = 30 * 86_400.0
_MAX_AHEAD = 7_200.0


def _sent_at(carrier: Any, message_id: str | None, system: str, header: str = _SENT_AT) -> float | None:
    """Emission time in epoch seconds: the otelkit header, else a Redis stream ID's millisecond part.

    None when absent or implausible (older than 30 days or more than 2 hours ahead).
    """
    sent: float | None = None
    if carrier is not None:
        try:
            raw = carriers.get_raw(carrier, header)
            # an absent header (a first send has no enqueued-at) is None without the parse and decode calls
            ms = _parse_number(raw) if raw is not None else None
        except Exception:
            ms = None
        if ms is not None:
            sent = ms / 1000.0
    if sent is None and header == _SENT_AT and system == "redis" and message_id is not None:
        head, sep, tail = message_id.partition("-")
        if sep and head.isascii() and head.isdigit() and tail.isdigit() and len(head) <= 16:
            sent = int(head) / 1000.0
    if sent is not None:
        now = time.time()
        if not now - _MAX_AGE <= sent <= now + _MAX_AHEAD:
            logger.debug("otelkit: ignoring an implausible emission time (%.0f s from now)", sent - now)
            return None
    return sent


def _header_attempt(carrier: Any) -> int | None:
    if carrier is None:
        return None
    try:
        raw = carriers.get_raw(carrier, _ATTEMPT)
        if raw is None:
            return None
        value = _parse_number(raw)
    except Exception:
        return None
    if value is None or value != int(value) or value > _MAX_ATTEMPT:
        return None
    return int(value)


def _as_str(value: object) -> str | None:
    """``value`` as text for span attributes and names; never raises (a hostile ``__str__`` gives a placeholder)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8", "replace")
        text = str(value)
        if isinstance(text, str):
            return text
    except Exception as error:
        logger.debug("otelkit: cannot turn a %s into text (%s)", type(value).__name__, type(error).__name__)
    return f"<unprintable {type(value).__name__}>"


def _shown(value: object) -> str:
    """A short repr for a debug log about a bad argument; never raises (the value may be hostile)."""
    try:
        return repr(value)[:40]
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _name(value: object, what: str) -> str:
    """A destination/system/group given as a non-str (an int queue id, bytes, None): its text form."""
    if type(value) is str:
        return value
    logger.debug("otelkit: pipeline %s=%s is not a str; using its text form", what, _shown(value))
    return _as_str(value) or ""


def _count(value: object, what: str) -> int | None:
    """An attempt / max_attempts as int or None: integral numbers and digit strings pass, anything else is None."""
    if value is None or (type(value) is int):
        return value
    result: int | None = None
    if not isinstance(value, bool):
        try:
            number = _parse_number(value)
            if number is not None and number == int(number) and number <= _MAX_ATTEMPT:
                result = int(number)
        except Exception:
            result = None
    if result is None:
        logger.debug("otelkit: pipeline %s=%s is not a positive integer; ignoring it", what, _shown(value))
    return result


def _reason_text(reason: object) -> str | None:
    if reason is None or type(reason) is str:
        return reason
    return _as_str(reason)


def _message_context(extracted: Context, carrier: Any,
                     properties: object = None) -> tuple[trace.SpanContext | None, str | None]:
    """(valid remote span context or None, valid correlation ID or None) from an extracted context.

    The correlation ID is otelkit's own (baggage, header), else a foreign one (AMQP property, the
    ``OTELKIT_CORRELATION_HEADERS`` headers): see :mod:`otelkit._pipeline.correlation`.
    """
    span_context = trace.get_current_span(extracted).get_span_context()
    remote = span_context if span_context.is_valid else None
    cid = get_correlation_id(extracted)  # only ever a valid ID or None
    if cid is None and (properties is not None or not (carrier is None or (type(carrier) is dict and not carrier))):
        cid = carried_correlation_id(carrier, properties)
    return remote, cid


def _property_time(properties: object) -> float | None:
    """A foreign message's emission time from the AMQP ``timestamp`` property (epoch seconds, or a datetime)."""
    raw = property_value(properties, "timestamp")
    if raw is None:
        return None
    try:
        value = raw.timestamp() if hasattr(raw, "timestamp") else _parse_number(raw)
    except Exception:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    now = time.time()
    return float(value) if now - _MAX_AGE <= value <= now + _MAX_AHEAD else None


def _explicit_cid(value: object, where: str) -> str | None:
    """An explicit ``correlation_id=`` argument when valid; otherwise None (a debug log), never raised."""
    if value is None:
        return None
    if is_valid_correlation_id(value):
        return value  # type: ignore[return-value]
    logger.debug("otelkit: %s(correlation_id=%s) is not a valid ID; not used", where, _shown(value))
    return None


def _server_attrs(attrs: dict[str, Any], address: object, port: object) -> None:
    if address is not None:
        attrs[SERVER_ADDRESS] = _as_str(address)
    if port is not None:
        number = _count(port, "server_port")
        if number is not None and 0 < number < 65536:
            attrs[SERVER_PORT] = number


def _rabbitmq_attrs(attrs: dict[str, Any], system: str, routing_key: object, delivery_tag: object = None) -> None:
    if routing_key is None and delivery_tag is None:
        return
    if system != "rabbitmq":
        logger.debug("otelkit: routing_key/delivery_tag are RabbitMQ attributes; ignored for system=%s", system)
        return
    if routing_key is not None:
        attrs[RABBITMQ_ROUTING_KEY] = _as_str(routing_key)
    if delivery_tag is not None:
        tag = delivery_tag if type(delivery_tag) is int else _count(delivery_tag, "delivery_tag")
        if tag is not None:
            attrs[RABBITMQ_DELIVERY_TAG] = tag


def _with_baggage(base: Context, extracted: Context, correlation_id: str) -> Context:
    """``base`` with the message's baggage laid over the ambient baggage, and the correlation ID set."""
    if _BAGGAGE_KEY is not None:  # one dict and one context copy instead of one per entry
        ambient: Any = base.get(_BAGGAGE_KEY)
        incoming: Any = extracted.get(_BAGGAGE_KEY)
        entries = dict(ambient) if ambient else {}
        if incoming:
            entries.update(incoming)
        entries[_names.CORRELATION_BAGGAGE_KEY] = correlation_id
        return otel_context.set_value(_BAGGAGE_KEY, entries, base)
    ctx = base  # pragma: no cover - an API without the private key
    for key, value in baggage.get_all(extracted).items():
        ctx = baggage.set_baggage(key, value, ctx)
    return baggage.set_baggage(_names.CORRELATION_BAGGAGE_KEY, correlation_id, ctx)


def _set_correlation_id(base: Context, correlation_id: str) -> Context:
    """``base`` with the correlation ID in its baggage: ``baggage.set_baggage`` in one dict and one context copy."""
    if _BAGGAGE_KEY is None:  # pragma: no cover - an API without the private key
        return baggage.set_baggage(_names.CORRELATION_BAGGAGE_KEY, correlation_id, base)
    ambient: Any = base.get(_BAGGAGE_KEY)
    entries = dict(ambient) if ambient else {}
    entries[_names.CORRELATION_BAGGAGE_KEY] = correlation_id
    return otel_context.set_value(_BAGGAGE_KEY, entries, base)


# --- decorator support ----------------------------------------------------------------------------

class _ArgSpec:
    """Resolve a scope parameter from the decorated function's arguments: a callable or a parameter name."""

    __slots__ = ("default", "fn", "name", "position")

    def __init__(self, spec: object, fn: Callable[..., Any], what: str) -> None:
        self.fn: Callable[..., Any] | None = None
        self.name: str | None = None
        self.position = -1
        self.default: Any = None
        if callable(spec):
            self.fn = spec
        elif isinstance(spec, str):
            parameters = list(inspect.signature(fn).parameters.values())
            names = [p.name for p in parameters]
            if spec not in names:
                raise TypeError(f"otelkit.pipeline: {what}={spec!r} is not a parameter of {fn.__qualname__} "
                                f"(parameters: {', '.join(names)})")
            self.name = spec
            index = names.index(spec)
            param = parameters[index]
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self.position = index
            if param.default is not param.empty:
                self.default = param.default

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        if self.name is None:
            return None
        if self.name in kwargs:
            return kwargs[self.name]
        if 0 <= self.position < len(args):
            return args[self.position]
        return self.default


def _decorate(fn: F, make_scope: Callable[[tuple[Any, ...], dict[str, Any]], Any]) -> F:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"otelkit.pipeline cannot decorate the generator {fn.__qualname__}: a scope would "
                        "stay attached across yields; use the context manager inside the loop instead")
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with make_scope(args, kwargs):
                return await fn(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make_scope(args, kwargs):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class UsageError(TypeError):
    """A programming error in a pipeline call. No longer raised by ``emit`` (a wrong carrier is warned about once);
    kept for callers that catch it."""


class _Scope:
    """Context-manager plumbing shared by every scope: sync, async, telemetry errors contained."""

    __slots__ = ()

    def _start(self) -> None:
        raise NotImplementedError

    def _finish(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            self._start()
        except UsageError:
            raise
        except Exception as error:
            logger.debug("otelkit: pipeline scope failed to start: %r", error, exc_info=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._finish(exc)
        except Exception as error:
            logger.debug("otelkit: pipeline scope failed to finish: %r", error, exc_info=True)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


# --- emission -------------------------------------------------------------------------------------

class Emission(_Scope):
    """One message being emitted: a PRODUCER span ``send {destination}`` with context injected.

    Attributes available inside the block:

    * ``headers`` -- the carrier that received the context (the one you passed, or a new dict);
    * ``correlation_id`` -- the message's correlation ID;
    * ``span`` -- the producer span;
    * ``message_id`` -- settable after the broker assigns one (``msg.message_id = r.xadd(...)``);
      an ID given up front (or set before ``msg.wrap``) also travels to the consumer.

    With ``retry_of=msg`` (a received message, also after its ``receive`` block ended) the
    emission re-publishes that message for another attempt: same correlation ID, attempt + 1,
    the first emission time kept (so end-to-end latency covers every attempt), a link to the
    failed attempt's span.
    """

    __slots__ = ("_attributes", "_carry", "_explicit_cid", "_retry_of", "_server", "_started_id", "_t0", "_token",
                 "attempt", "correlation_id", "destination", "headers", "message_id", "routing_key", "span", "system")
    # Whether a message ID given up front also travels in otelkit's message-ID header. An integration whose
    # broker message already carries the ID, and whose consumer hands it to Reception (Celery's task id), sets
    # False in a subclass: the span attribute is the same, the header would be a duplicate.
    _id_header = True

    def __init__(self, destination: str, carrier: Any = None, *, system: str, message_id: object = None,
                 correlation_id: str | None = None, attempt: int | None = None,
                 attributes: Mapping[str, Any] | None = None, retry_of: object = None,
                 server_address: str | None = None, server_port: int | None = None,
                 routing_key: str | None = None) -> None:
        self.destination = destination if type(destination) is str else _name(destination, "destination")
        self.system = system if type(system) is str else _name(system, "system")
        self.headers: Any = carrier
        self.message_id: Any = message_id
        self._explicit_cid = correlation_id
        self.correlation_id: str | None = correlation_id
        self.attempt = attempt if attempt is None or type(attempt) is int else _count(attempt, "attempt")
        self._attributes = attributes
        self._retry_of = retry_of
        self._server = (server_address, server_port)
        self.routing_key = routing_key
        self._token: object = None
        self._carry: Any = None
        self.span: Span = INVALID_SPAN
        self._t0 = 0.0
        self._started_id: str | None = None

    def _start(self) -> None:
        headers = self.headers
        if headers is not None and type(headers) is not dict and not isinstance(headers, (MutableMapping,
                                                                                         MutableSequence)):
            # A telemetry call never raises into the application: the span is recorded, the context goes into
            # a fresh dict (msg.headers / msg.wrap(payload)), and the mistake is said once.
            warn_once(f"emit-carrier-{type(headers).__name__}",
                      "otelkit.pipeline.emit: carrier must be a dict (headers, stream fields), a list of "
                      "(key, bytes) tuples, or None (then send msg.wrap(payload)); got %s. Sending the trace "
                      "context in msg.headers instead (your %s carries none)", type(headers).__name__,
                      type(headers).__name__)
            headers = self.headers = None
        tr = tracer()
        parent = otel_context.get_current()
        cid = self._explicit_cid
        if cid is not None and not is_valid_correlation_id(cid):
            logger.debug("otelkit: emit(correlation_id=%.40r) is not a valid ID; using a fresh one", cid)
            cid = None
        retry_of = self._retry_of
        first_sent: float | None = None
        retry_link: Link | None = None
        if retry_of is not None:
            cid, first_sent, retry_link, parent = self._retry_from(retry_of, cid, parent)
        if cid is None:
            cid = get_correlation_id(parent)
        ctx = parent
        if cid is None:
            cid = new_correlation_id()
            ctx = _set_correlation_id(parent, cid)
        elif cid != get_correlation_id(parent):
            ctx = _set_correlation_id(parent, cid)
        self.correlation_id = cid
        attrs: dict[str, Any] = {
            _names.MESSAGING_SYSTEM: self.system,
            _names.MESSAGING_DESTINATION: self.destination,
            _names.MESSAGING_OPERATION_TYPE: "send",
            _names.MESSAGING_OPERATION_NAME: "send",
            _names.MESSAGING_CONVERSATION_ID: cid,
        }
        message_id = _as_str(self.message_id) if self.message_id is not None else None
        if message_id is not None:
            attrs[_names.MESSAGING_MESSAGE_ID] = message_id
            if message_id is self.message_id:  # a str already on the span: _finish does not set it again
                self._started_id = message_id
        if self.attempt is not None:
            attrs[_names.ATTR_ATTEMPT] = self.attempt
        if self._server[0] is not None or self._server[1] is not None:
            _server_attrs(attrs, *self._server)
        if self.routing_key is not None:
            _rabbitmq_attrs(attrs, self.system, self.routing_key)
        if self._attributes:
            attrs.update(self._attributes)
        span = tr.start_span("send " + self.destination, ctx, kind=SpanKind.PRODUCER, attributes=attrs,
                             links=(retry_link,) if retry_link is not None else None)
        self.span = span
        ctx = trace.set_span_in_context(span, ctx)
        self._token = otel_context.attach(ctx)
        # The LPUSH/XADD that sends this message is this operation: no redis span of its own.
        self._carry = carrying.enter_emit(self)
        if headers is None:
            headers = self.headers = {}
        # An empty dict (a message without headers of its own: pika/aio-pika copy theirs into a new one) can
        # hold no bytes twin of otelkit's keys (the propagators write str keys): plain item assignment below.
        fresh = type(headers) is dict and not headers
        self._t0 = time.perf_counter()
        try:
            propagation.inject(headers, ctx, fresh)
        except Exception as error:  # a broken propagator: the message goes out without trace context
            logger.debug("otelkit: could not inject trace context: %r", error)
        now_ms = f"{time.time() * 1000.0:.3f}"
        if first_sent is not None:
            carriers.set_header(headers, _SENT_AT, f"{first_sent * 1000.0:.3f}")
            carriers.set_header(headers, ENQUEUED_AT_HEADER, now_ms)
        elif fresh:
            headers[_SENT_AT] = now_ms
        else:
            carriers.set_header(headers, _SENT_AT, now_ms)
        if fresh:
            headers[_CORRELATION_HEADER] = cid
        else:
            carriers.set_header(headers, _CORRELATION_HEADER, cid)
        if self.attempt is not None:
            carriers.set_header(headers, _ATTEMPT, str(int(self.attempt)))
        if message_id is not None and self._id_header:
            carriers.set_header(headers, MESSAGE_ID_HEADER, message_id[:256])

    def _retry_from(self, retry_of: object, cid: str | None,
                    parent: Context) -> tuple[str | None, float | None, Link | None, Context]:
        """(correlation ID, first emission time, link to the failed attempt, parent context) for a retry."""
        if cid is None:
            carried = getattr(retry_of, "correlation_id", None)
            cid = carried if is_valid_correlation_id(carried) else None
        if self.attempt is None:
            previous = _count(getattr(retry_of, "attempt", None), "retry_of.attempt") or 1
            self.attempt = previous + 1 if previous < _MAX_ATTEMPT else previous
        first_sent = getattr(retry_of, "sent_at", None)
        if not isinstance(first_sent, float) or not math.isfinite(first_sent):
            first_sent = None
        failed = getattr(retry_of, "span", None)
        link: Link | None = None
        if isinstance(failed, Span):
            failed_context = failed.get_span_context()
            if failed_context.is_valid:
                if trace.get_current_span(parent).get_span_context().is_valid:
                    link = Link(failed_context)
                else:  # re-published after the receive block: continue the failed attempt's trace
                    parent = trace.set_span_in_context(NonRecordingSpan(failed_context), parent)
        return cid, first_sent, link, parent
    def _finish(self, exc: BaseException | None) -> None:
        carry, self._carry = self._carry, None
        if carry is not None:
            carrying.exit_emit(carry)
        span = self.span
        if span is INVALID_SPAN:
            # No-op tracer before init(): still detach what __enter__ attached (baggage, correlation ID).
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            return
        duration = time.perf_counter() - self._t0
        error_type: str | None = None
        try:  # whatever goes wrong while annotating, the span is still ended (never lost)
            message_id = self.message_id
            # an ID the broker assigned inside the block (msg.message_id = r.xadd(...)); the one given up front is
            # on the span already (its own set_attribute would cost a span lock and an attribute clean per message)
            if message_id is not None and message_id is not self._started_id:
                span.set_attribute(_names.MESSAGING_MESSAGE_ID, _as_str(message_id) or "")
            if exc is not None:
                error_type = _error_type(exc)
                _mark_failed(span, exc, error_type)
                _record(span, exc)  # noted, not reported: the caller's scope reports it
        finally:
            span.end()
        try:  # recorded while the span is still current, so histogram exemplars point at this trace
            ins = instruments()
            if ins.live:  # the attribute set only when a point is recorded (no meter provider: none)
                attrs = _metric_attrs(self.system, self.destination, "send", None)
                if error_type is not None:
                    attrs = {**attrs, _names.ERROR_TYPE: error_type}
                _compat.add_point(ins.sent, 1, attrs)
                _compat.record_point(ins.operation_duration, duration, attrs)
        finally:
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]

    def wrap(self, payload: Any) -> str:
        """``payload`` inside a JSON envelope with this message's headers, for Redis lists, pub/sub, sets.

        The receiver passes the raw message to ``receive(...)`` and reads ``msg.payload``.
        """
        if self.message_id is not None and self.headers is not None:
            try:  # an ID set inside the block (msg.message_id = ...) still reaches the consumer
                carriers.set_header(self.headers, MESSAGE_ID_HEADER, (_as_str(self.message_id) or "")[:256])
            except Exception as error:
                logger.debug("otelkit: could not add the message ID to the envelope: %r", error)
        return carriers.wrap(payload, self.headers)

    def __call__(self, fn: F) -> F:
        """Decorate a function that sends one message; ``carrier`` names the parameter holding its headers."""
        carrier_spec = _ArgSpec(self.headers, fn, "carrier") if self.headers is not None else None
        message_id_spec = _ArgSpec(self.message_id, fn, "message_id") if callable(self.message_id) else None
        destination, system, cid, attempt, attributes = (self.destination, self.system, self._explicit_cid,
                                                         self.attempt, self._attributes)
        (server_address, server_port), routing_key = self._server, self.routing_key

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Emission:
            return Emission(destination, carrier_spec(args, kwargs) if carrier_spec else None, system=system,
                            message_id=message_id_spec(args, kwargs) if message_id_spec else None,
                            correlation_id=cid, attempt=attempt, attributes=attributes,
                            server_address=server_address, server_port=server_port, routing_key=routing_key)

        return _decorate(fn, make)


# --- reception ------------------------------------------------------------------------------------

class _Consumption(_Scope):
    """Outcome handling shared by single and batch reception."""

    __slots__ = ("_base", "_cv_token", "_outcome", "_reason", "_t0", "_token", "attempt", "correlation_id",
                 "destination", "group", "max_attempts", "span", "system")

    def __init__(self, destination: str, system: str, group: str | None, attempt: int | None,
                 max_attempts: int | None) -> None:
        # Coerced once here: a non-str name or non-int attempt would otherwise fail in _start/_settle,
        # leaving the message without a span.
        self.destination = destination if type(destination) is str else _name(destination, "destination")
        self.system = system if type(system) is str else _name(system, "system")
        self.group = group if group is None or type(group) is str else _name(group, "group")
        # A callable attempt is the decorator form (resolved per call by Reception.__call__).
        self.attempt = (attempt if attempt is None or type(attempt) is int or callable(attempt)
                        else _count(attempt, "attempt"))
        self.max_attempts = (max_attempts if max_attempts is None or type(max_attempts) is int
                             else _count(max_attempts, "max_attempts"))
        self.span: Span = INVALID_SPAN
        self.correlation_id: str | None = None
        self._outcome: Outcome | None = None
        self._reason: str | None = None
        self._token: object = None
        self._cv_token: contextvars.Token[_Consumption | None] | None = None
        self._t0 = 0.0
        self._base: dict[str, str] = {}

    # -- explicit outcomes
    def ack(self) -> None:
        """Record the message as acknowledged (the default when the block ends without an exception)."""
        self._outcome, self._reason = "ack", None

    def retry(self, reason: str | None = None) -> None:
        """Record that the message goes back for another attempt (not a span error by itself)."""
        self._outcome, self._reason = "retry", _reason_text(reason)

    def dead_letter(self, reason: str | None = None) -> None:
        """Record that the message goes to the dead-letter destination (the span is marked as an error)."""
        self._outcome, self._reason = "dead_letter", _reason_text(reason)

    def drop(self, reason: str | None = None) -> None:
        """Record that the message is discarded on purpose (a duplicate, filtered out): not an error."""
        self._outcome, self._reason = "drop", _reason_text(reason)

    def _set_outcome(self, outcome: str | None, reason: str | None = None) -> None:
        """An integration's settle: ``ack``, ``retry`` or ``dead_letter`` (None keeps the default)."""
        if outcome == "ack":
            self.ack()
        elif outcome == "retry":
            self.retry(reason)
        elif outcome == "dead_letter":
            self.dead_letter(reason)

    @property
    def outcome(self) -> Outcome | None:
        """The outcome recorded so far (None until set or until the block ends)."""
        return self._outcome

    def _default_outcome(self, failure_class: str) -> Outcome:
        if failure_class == "transient":
            attempt = self.attempt or 1
            if self.max_attempts is None or attempt < self.max_attempts:
                return "retry"
        return "dead_letter"

    def _settle(self, exc: BaseException | None, count: int) -> tuple[dict[str, str], str]:
        """End the span with its outcome; returns (metric attributes with error info, outcome).

        The caller records its metrics, then calls :meth:`_detach`: recorded while the span is
        still current, the latency histograms get exemplars that open this message's trace.
        """
        span = self.span
        try:  # whatever goes wrong while annotating, the span is still ended (never lost)
            attrs = self._base
            failure_class: str | None = None
            if exc is not None:
                error_type = _error_type(exc)
                failure_class = classify_failure(exc) if isinstance(exc, Exception) else "transient"
                _mark_failed(span, exc, error_type)
                span.set_attribute(_names.ATTR_ERROR_CLASS, failure_class)
                attrs = {**attrs, _names.ERROR_TYPE: error_type, _names.ATTR_ERROR_CLASS: failure_class}
                _report(exc, span, self._report_context())
            outcome = self._outcome
            if outcome is None:
                outcome = "ack" if failure_class is None else self._default_outcome(failure_class)
                self._outcome = outcome
            elif outcome == "dead_letter" and exc is None:
                span.set_status(Status(StatusCode.ERROR,
                                       f"dead-lettered: {self._reason or 'no reason given'}"[:256]))
            span.set_attribute(_names.ATTR_OUTCOME, outcome)
            if self._reason:
                span.set_attribute(_names.ATTR_OUTCOME_REASON, self._reason[:256])
        finally:
            span.end()
        return attrs, outcome

    def _detach(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        cv_token, self._cv_token = self._cv_token, None
        if cv_token is not None:
            _current.reset(cv_token)

    def _report_context(self) -> dict[str, object]:
        return {"destination": self.destination, "system": self.system, "attempt": self.attempt,
                "correlation_id": self.correlation_id}


class Reception(_Consumption):
    """One message being processed: a CONSUMER span ``process {destination}`` linked to the producer.

    Attributes available inside the block:

    * ``correlation_id`` -- the emitter's ID, or a fresh one when the message carried none;
    * ``payload`` -- the message body when the carrier was an otelkit envelope (or a legacy raw payload);
    * ``message_id``, ``attempt``, ``sent_at`` (epoch seconds or None), ``span``;
    * ``producer`` -- the producer's ``SpanContext`` when the message carried a valid one;
    * ``ack()``, ``retry(reason)``, ``dead_letter(reason)``, ``drop(reason)`` -- the outcome (default: ack,
      or on an exception retry/dead_letter by the failure classifier and ``max_attempts``).
    """

    __slots__ = ("_adopted", "_adoptive", "_attributes", "_carrier", "_explicit_cid", "_extra", "_instruments",
                 "_parent", "_properties", "_queued_at", "_release", "enqueued_at", "message_id", "payload",
                 "producer", "sent_at")

    def __init__(self, destination: str, carrier: Any = None, *, system: str, message_id: object = None,
                 attempt: int | None = None, group: str | None = None, parent: Parent = "none",
                 max_attempts: int | None = None, attributes: Mapping[str, Any] | None = None,
                 correlation_id: str | None = None, properties: object = None,
                 server_address: str | None = None, server_port: int | None = None,
                 routing_key: str | None = None, delivery_tag: int | None = None,
                 queued_at: float | None = None) -> None:
        super().__init__(destination, system, group, attempt, max_attempts)
        # When the broker knows when this delivery entered the queue (a retry re-queued later than the
        # emission): time in queue is measured from it, end-to-end latency still from the emission.
        self._queued_at = queued_at
        self._carrier = carrier
        self.message_id: Any = message_id
        self._parent = parent
        self._attributes = attributes
        self._explicit_cid = correlation_id
        self._properties = properties
        # server.*, routing key, delivery tag: a tuple only when one is given (the common call pays nothing)
        self._extra = ((server_address, server_port, routing_key, delivery_tag)
                       if server_address is not None or server_port is not None or routing_key is not None
                       or delivery_tag is not None else None)
        self.payload: Any = None
        self.sent_at: float | None = None
        self.enqueued_at: float | None = None
        self.producer: trace.SpanContext | None = None
        self._instruments: Instruments | None = None
        # Set by an integration on a message it pulled (pika basic_get, aio-pika get/iterator, NATS fetch):
        # the scope stays current until the application settles the message, and a pipeline.receive()
        # of the application inside it adopts it (see _adopt) instead of making a second span.
        self._release: Callable[[Reception, BaseException | None], None] | None = None
        self._adopted: Reception | None = None
        # Only the application's receive() adopts (pipeline.receive sets it): a scope an integration makes (a
        # message pulled while another is current: a second queue, a batch settled out of order; a callback or a
        # job run while a pulled message is current) is that message's own operation.
        self._adoptive = False

    @classmethod
    def _of_delivery(cls, destination: str, carrier: Any, system: str, message_id: object, attempt: int,
                     attributes: Mapping[str, Any]) -> Reception:
        """``Reception(destination, carrier, system=system, message_id=message_id, attempt=attempt,
        attributes=attributes)`` for a broker delivery an integration wraps (pika, aio-pika: once per message),
        without the keyword call through two ``__init__`` and their coercion: the caller passes a str
        ``destination`` and ``system`` and an int ``attempt``. The same instance attributes, with the same values
        (``tests/unit/test_pipeline_scopes.py`` compares every slot with the constructor's)."""
        self = _new_object(cls)
        self.destination = destination
        self.system = system
        self.group = None
        self.attempt = attempt
        self.max_attempts = None
        self.span = INVALID_SPAN
        self.correlation_id = None
        self._outcome = None
        self._reason = None
        self._token = None
        self._cv_token = None
        self._t0 = 0.0
        self._base = {}
        self._queued_at = None
        self._carrier = carrier
        self.message_id = message_id
        self._parent = "none"
        self._attributes = attributes
        self._explicit_cid = None
        self._properties = None
        self._extra = None
        self.payload = None
        self.sent_at = None
        self.enqueued_at = None
        self.producer = None
        self._instruments = None
        self._release = None
        self._adopted = None
        self._adoptive = False
        return self

    def _start(self) -> None:
        outer = _current.get()
        if (outer is not None and self._adoptive and type(outer) is Reception and outer._release is not None
                and outer._cv_token is not None and self._is_message_of(outer)):
            self._adopt(outer)
            return
        tr = tracer()
        carrier = self._carrier
        if isinstance(carrier, (str, bytes, bytearray, memoryview)):
            self.payload, carrier = carriers.unwrap(carrier)
        message_id = self.message_id
        properties = self._properties
        if type(carrier) is dict and not carrier:
            carrier = None  # a message without headers: no header look-ups below
        if message_id is None:
            # the producer's emit(message_id=...), else the AMQP message_id property
            message_id = carriers.get_str(carrier, MESSAGE_ID_HEADER) if carrier is not None else None
            if message_id is None and properties is not None:
                message_id = property_value(properties, "message_id")
            if message_id is not None:
                message_id = self.message_id = _as_str(message_id)
        elif type(message_id) is not str:
            message_id = self.message_id = _as_str(message_id)
        if carrier is None and properties is None:  # nothing carried: no propagator, baggage or header look-ups
            extracted, remote, cid = _EMPTY_CONTEXT, None, None
        else:
            extracted = _extract(carrier)
            remote, cid = _message_context(extracted, carrier, properties)
        self.producer = remote
        if self._explicit_cid is not None:
            cid = _explicit_cid(self._explicit_cid, "receive") or cid
        base = otel_context.get_current()
        if cid is None:  # nothing carried: the enclosing correlate() scope, else a fresh ID
            cid = get_correlation_id(base) or new_correlation_id()
        self.correlation_id = cid
        if self.attempt is None:
            self.attempt = _header_attempt(carrier)
        elif type(self.attempt) is not int:  # a callable meant for the decorator form, used as a scope
            self.attempt = _count(self.attempt, "attempt")
        ctx = _with_baggage(base, extracted, cid)
        parent = self._parent
        if parent == "producer" and remote is not None:
            span_parent = trace.set_span_in_context(NonRecordingSpan(remote), ctx)
        elif parent == "current":
            span_parent = ctx
        else:  # "none": a root span, whatever long-lived span the consumer loop runs in
            span_parent = trace.set_span_in_context(INVALID_SPAN, ctx)
        attrs: dict[str, Any] = {
            _names.MESSAGING_SYSTEM: self.system,
            _names.MESSAGING_DESTINATION: self.destination,
            _names.MESSAGING_OPERATION_TYPE: "process",
            _names.MESSAGING_OPERATION_NAME: "process",
            _names.MESSAGING_CONVERSATION_ID: cid,
        }
        if message_id is not None:
            attrs[_names.MESSAGING_MESSAGE_ID] = message_id
        if self.attempt is not None:
            attrs[_names.ATTR_ATTEMPT] = self.attempt
        if self.group is not None:
            attrs[_names.MESSAGING_CONSUMER_GROUP] = self.group
        extra = self._extra
        if extra is not None:
            _server_attrs(attrs, extra[0], extra[1])
            _rabbitmq_attrs(attrs, self.system, extra[2], extra[3])
        if self._attributes:
            attrs.update(self._attributes)
        # The pop that carried this message (BRPOP...) is this operation: folded in, not traced twice. Its
        # attributes go in with the span's own (one attribute pass, not a set_attributes after the start).
        popped = (carrying.take_receive(self.system, self._carrier) if carrying.active or self.system == "redis"
                  else None)
        if popped is not None:
            attrs.update(popped.attributes)
            attrs[carrying.ATTR_DURATION] = popped.duration
        span = tr.start_span("process " + self.destination, span_parent, kind=SpanKind.CONSUMER, attributes=attrs,
                             links=(Link(remote),) if remote is not None else None)
        self.span = span
        self._token = otel_context.attach(trace.set_span_in_context(span, ctx))
        self._cv_token = _current.set(self)
        metric_attrs = self._base = _metric_attrs(self.system, self.destination, "process", self.group)
        ins = self._instruments = instruments()
        if popped is not None:  # recorded while the span is current: the histogram's exemplar points at it
            _compat.record_point(ins.operation_duration, popped.duration,
                                 _metric_attrs(self.system, self.destination, "receive", self.group))
        sent_at = self.sent_at = (_sent_at(carrier, message_id, self.system)
                                  if carrier is not None or self.system == "redis" else None)
        if sent_at is None and properties is not None:
            sent_at = self.sent_at = _property_time(properties)
        # A retry's queue time starts at its re-publication (the broker's re-queue time when the integration
        # knows it, else otelkit's enqueued-at header), not at the first emission.
        enqueued = self._queued_at
        if enqueued is None and sent_at is not None:
            enqueued = _sent_at(carrier, None, self.system, ENQUEUED_AT_HEADER) or sent_at
        if enqueued is not None:
            self.enqueued_at = enqueued
            if ins.live:
                wait = time.time() - enqueued
                _compat.record_point(ins.time_in_queue, wait if wait > 0.0 else 0.0, metric_attrs)
        self._t0 = time.perf_counter()

    def _is_message_of(self, outer: Reception) -> bool:
        """Whether this application receive() is about the message the integration pulled (then it adopts it).

        Another system is another message. The pulled message's own headers (the same or an equal mapping) or
        its message ID (``message_id=``, or in ``properties=``) are this message; headers with a ``traceparent``
        other than the pulled message's are another one. Without such evidence the destination decides (the
        application may name the queue where the integration names the routing key: passing the message's
        headers adopts it).
        """
        if outer.system != self.system:
            return False
        try:
            message_id = self.message_id
            if (message_id is not None and outer.message_id is not None and not callable(message_id)
                    and _as_str(message_id) == _as_str(outer.message_id)):
                return True
            if (self._properties is not None and outer.message_id is not None
                    and _as_str(property_value(self._properties, "message_id")) == _as_str(outer.message_id)):
                return True
            carrier, own = self._carrier, outer._carrier
            if carrier is not None and not isinstance(carrier, (str, bytes, bytearray, memoryview)):
                if carrier is own or (own is not None and carrier == own):
                    return True
                parent = carriers.get_str(carrier, "traceparent")
                if parent is not None:
                    return own is not None and parent == carriers.get_str(own, "traceparent")
        except Exception:  # an odd carrier or ID: not evidence either way
            logger.debug("otelkit: could not compare a receive with the pulled message", exc_info=True)
        return self.destination == outer.destination

    def _adopt(self, outer: Reception) -> None:
        """One message, one span: the application's receive() of a message an integration pulled.

        The integration's scope is this message's operation (its span, link, correlation ID and metrics); this
        scope shares them and, when it ends first, settles it with the application's outcome. Nothing is
        attached here: the pulled message's context is already current, and it is detached when it is settled.
        """
        self._adopted = outer
        self.span = outer.span
        self.correlation_id = outer.correlation_id
        self.producer = outer.producer
        self.sent_at, self.enqueued_at = outer.sent_at, outer.enqueued_at
        if self.message_id is None:
            self.message_id = outer.message_id
        carrier = self._carrier
        if isinstance(carrier, (str, bytes, bytearray, memoryview)):
            self.payload, carrier = carriers.unwrap(carrier)
        if self.attempt is None:
            self.attempt = _header_attempt(carrier)
        elif type(self.attempt) is not int:
            self.attempt = _count(self.attempt, "attempt")
        if self.attempt is not None and self.attempt != outer.attempt:
            # the application knows better (its own attempt header across a re-publication)
            outer.attempt = self.attempt
            outer.span.set_attribute(_names.ATTR_ATTEMPT, self.attempt)
        if self.max_attempts is not None:
            outer.max_attempts = self.max_attempts
        if outer.sent_at is None:  # what the application passed may date the message (AMQP timestamp property)
            sent_at = _sent_at(carrier, self.message_id, self.system) if carrier is not None else None
            if sent_at is None and self._properties is not None:
                sent_at = _property_time(self._properties)
            if sent_at is not None:
                outer.sent_at = self.sent_at = sent_at
                if outer.enqueued_at is None:
                    enqueued = (self._queued_at or (_sent_at(carrier, None, self.system, ENQUEUED_AT_HEADER)
                                                    if carrier is not None else None) or sent_at)
                    outer.enqueued_at = self.enqueued_at = enqueued
                    wait = time.time() - enqueued
                    _compat.record_point((outer._instruments or instruments()).time_in_queue,
                                         wait if wait > 0.0 else 0.0, outer._base)
        if self._attributes:
            outer.span.set_attributes(self._attributes)

    def _finish_adopted(self, outer: Reception, exc: BaseException | None) -> None:
        release = outer._release
        settled = release is None or outer._cv_token is None
        if settled and outer._outcome is not None:
            # The application settled the message inside the block (the integration saw its ack/nack/reject):
            # that outcome stands, and it is the one this scope reports (not the block's own default).
            self._outcome, self._reason = outer._outcome, outer._reason
            return
        if self._outcome is None:
            if exc is None:
                self._outcome = "ack"
            else:
                self._outcome = self._default_outcome(
                    classify_failure(exc) if isinstance(exc, Exception) else "transient")
        if release is None or settled:
            return
        outer._outcome, outer._reason = self._outcome, self._reason
        release(outer, exc)

    def _finish(self, exc: BaseException | None) -> None:
        outer = self._adopted
        if outer is not None:
            self._finish_adopted(outer, exc)
            return
        if self.span is INVALID_SPAN:
            # Not started, or the no-op tracer before init(): the baggage attached on entry
            # must still be detached, or the correlation ID leaks into whatever runs next.
            self._detach()
            return
        duration = time.perf_counter() - self._t0
        base = self._base
        try:
            attrs, outcome = self._settle(exc, 1)
            ins = self._instruments
            if ins is None or not ins.live:  # a provider set while this message was handled records it
                ins = instruments()
                if not ins.live:
                    return  # no meter provider: every point would be dropped (the finally still detaches)
            _compat.add_point(ins.consumed, 1, base)
            _compat.record_point(ins.process_duration, duration, attrs)
            _compat.add_point(ins.settled, 1, _outcome_attrs(base, outcome))
            if self.sent_at is not None:
                latency = time.time() - self.sent_at
                _compat.record_point(ins.end_to_end, latency if latency > 0.0 else 0.0, base)
        finally:
            self._detach()

    def _report_context(self) -> dict[str, object]:
        context = super()._report_context()
        context["message_id"] = self.message_id
        return context

    def __call__(self, fn: F) -> F:
        """Decorate a handler; ``carrier`` names its parameter (or is a callable of its arguments)."""
        carrier_spec = _ArgSpec(self._carrier, fn, "carrier") if self._carrier is not None else None
        message_id_spec = _ArgSpec(self.message_id, fn, "message_id") if callable(self.message_id) else None
        attempt_spec = _ArgSpec(self.attempt, fn, "attempt") if callable(self.attempt) else None
        destination, system, group, parent, max_attempts, attributes = (
            self.destination, self.system, self.group, self._parent, self.max_attempts, self._attributes)
        static_attempt = None if attempt_spec else self.attempt
        cid, extra = self._explicit_cid, self._extra or (None, None, None, None)
        adoptive = self._adoptive

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Reception:
            scope = Reception(destination, carrier_spec(args, kwargs) if carrier_spec else None, system=system,
                              message_id=message_id_spec(args, kwargs) if message_id_spec else None,
                              attempt=attempt_spec(args, kwargs) if attempt_spec else static_attempt,
                              group=group, parent=parent, max_attempts=max_attempts, attributes=attributes,
                              correlation_id=cid, server_address=extra[0], server_port=extra[1],
                              routing_key=extra[2], delivery_tag=extra[3])
            scope._adoptive = adoptive
            return scope

        return _decorate(fn, make)


_outcome_cache: dict[tuple[str, str, str | None, str], dict[str, str]] = {}


def _outcome_attrs(base: dict[str, str], outcome: str) -> dict[str, str]:
    key = (base[_names.MESSAGING_SYSTEM], base[_names.MESSAGING_DESTINATION],
           base.get(_names.MESSAGING_CONSUMER_GROUP), outcome)
    attrs = _outcome_cache.get(key)
    if attrs is None:
        attrs = {**base, _names.ATTR_OUTCOME: outcome}
        if len(_outcome_cache) < _ATTR_CACHE_MAX:
            _outcome_cache[key] = attrs
    return attrs


class Message:
    """One message of a batch, as extracted: payload, IDs, emission time, producer context."""

    __slots__ = ("attempt", "carrier", "correlation_id", "enqueued_at", "message_id", "payload", "producer",
                 "sent_at")

    def __init__(self, carrier: Any, payload: Any, message_id: str | None, correlation_id: str | None,
                 producer: trace.SpanContext | None, sent_at: float | None, attempt: int | None,
                 enqueued_at: float | None = None) -> None:
        self.enqueued_at = enqueued_at if enqueued_at is not None else sent_at
        self.carrier = carrier
        self.payload = payload
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.producer = producer
        self.sent_at = sent_at
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Message(id={self.message_id!r}, correlation_id={self.correlation_id!r})"


class BatchReception(_Consumption):
    """A batch processed as one unit: one CONSUMER span linked to every message's producer (capped).

    ``messages`` lists each :class:`Message`. When every message carries the same
    correlation ID the batch runs under it; otherwise the batch gets a fresh ID
    and each link carries its message's ID as ``messaging.message.conversation_id``.
    The outcome (``ack``/``retry``/``dead_letter``) applies to the whole batch.
    """

    __slots__ = ("_attributes", "_carriers", "_explicit_cid", "_message_ids", "_parent", "max_links", "messages")

    def __init__(self, destination: str, carriers: Iterable[Any], *, system: str,
                 message_ids: Iterable[object] | None = None, group: str | None = None,
                 parent: Literal["none", "current"] = "none", max_links: int = DEFAULT_MAX_LINKS,
                 attributes: Mapping[str, Any] | None = None, correlation_id: str | None = None) -> None:
        super().__init__(destination, system, group, None, None)
        self._explicit_cid = correlation_id
        self._carriers = carriers
        self._message_ids = message_ids
        self._parent = parent
        if type(max_links) is not int or max_links < 0:
            # A non-int would fail the `len(links) < max_links` test in _start: no batch span at all.
            logger.debug("otelkit: receive_batch(max_links=%s) is not a non-negative int; using %d",
                         _shown(max_links), DEFAULT_MAX_LINKS)
            max_links = DEFAULT_MAX_LINKS
        self.max_links = max_links
        self._attributes = attributes
        self.messages: list[Message] = []

    def _start(self) -> None:
        tr = tracer()
        ids = list(self._message_ids) if self._message_ids is not None else []
        links: list[Link] = []
        dropped = 0
        correlation_ids: set[str | None] = set()
        first_extracted: Context | None = None
        for index, carrier in enumerate(self._carriers):
            payload = None
            if isinstance(carrier, (str, bytes, bytearray, memoryview)):
                payload, carrier = carriers.unwrap(carrier)
            message_id = _as_str(ids[index]) if index < len(ids) else None
            if message_id is None and carrier is not None:
                message_id = carriers.get_str(carrier, MESSAGE_ID_HEADER)
            extracted = _extract(carrier)
            remote, cid = _message_context(extracted, carrier)
            if first_extracted is None:
                first_extracted = extracted
            correlation_ids.add(cid)
            sent = _sent_at(carrier, message_id, self.system)
            self.messages.append(Message(carrier, payload, message_id, cid, remote, sent, _header_attempt(carrier),
                                         _sent_at(carrier, None, self.system, ENQUEUED_AT_HEADER)
                                         if sent is not None else None))
            if remote is not None:
                if len(links) < self.max_links:
                    link_attrs: dict[str, Any] = {}
                    if message_id is not None:
                        link_attrs[_names.MESSAGING_MESSAGE_ID] = message_id
                    if cid is not None:
                        link_attrs[_names.MESSAGING_CONVERSATION_ID] = cid
                    links.append(Link(remote, link_attrs))
                else:
                    dropped += 1
        count = len(self.messages)
        shared = next(iter(correlation_ids)) if len(correlation_ids) == 1 else None
        base = otel_context.get_current()
        explicit = _explicit_cid(self._explicit_cid, "receive_batch")
        if explicit is not None and explicit != shared:
            shared = None
        # explicit ID, else the one every message shares, else the enclosing correlate() scope, else fresh
        cid = explicit or shared or get_correlation_id(base) or new_correlation_id()
        self.correlation_id = cid
        ctx = _with_baggage(base, first_extracted if shared and first_extracted is not None else Context(), cid)
        span_parent = ctx if self._parent == "current" else trace.set_span_in_context(INVALID_SPAN, ctx)
        attrs: dict[str, Any] = {
            _names.MESSAGING_SYSTEM: self.system,
            _names.MESSAGING_DESTINATION: self.destination,
            _names.MESSAGING_OPERATION_TYPE: "process",
            _names.MESSAGING_OPERATION_NAME: "process",
            _names.MESSAGING_BATCH_COUNT: count,
            _names.MESSAGING_CONVERSATION_ID: cid,
        }
        if self.group is not None:
            attrs[_names.MESSAGING_CONSUMER_GROUP] = self.group
        if dropped:
            attrs[_names.ATTR_LINKS_DROPPED] = dropped
        if self._attributes:
            attrs.update(self._attributes)
        span = tr.start_span("process " + self.destination, span_parent, kind=SpanKind.CONSUMER, attributes=attrs,
                             links=links or None)
        self.span = span
        self._token = otel_context.attach(trace.set_span_in_context(span, ctx))
        self._cv_token = _current.set(self)
        ins = instruments()
        metric_attrs = self._base = _metric_attrs(self.system, self.destination, "process", self.group)
        _compat.record_point(ins.batch_size, count, metric_attrs)
        now = time.time()
        for message in self.messages:
            if message.enqueued_at is not None:
                wait = now - message.enqueued_at
                _compat.record_point(ins.time_in_queue, wait if wait > 0.0 else 0.0, metric_attrs)
        self._t0 = time.perf_counter()

    def _finish(self, exc: BaseException | None) -> None:
        if self.span is INVALID_SPAN:
            # Not started, or the no-op tracer before init(): the baggage attached on entry
            # must still be detached, or the correlation ID leaks into whatever runs next.
            self._detach()
            return
        duration = time.perf_counter() - self._t0
        base = self._base
        count = len(self.messages)
        try:
            attrs, outcome = self._settle(exc, count)
            ins = instruments()
            _compat.add_point(ins.consumed, count, base)
            _compat.record_point(ins.process_duration, duration, attrs)
            _compat.add_point(ins.settled, count, _outcome_attrs(base, outcome))
            now = time.time()
            for message in self.messages:
                if message.sent_at is not None:
                    latency = now - message.sent_at
                    _compat.record_point(ins.end_to_end, latency if latency > 0.0 else 0.0, base)
        finally:
            self._detach()

    def _report_context(self) -> dict[str, object]:
        context = super()._report_context()
        context["message_ids"] = [m.message_id for m in self.messages[:20]]
        context["batch_size"] = len(self.messages)
        return context


def current_message() -> Reception | BatchReception | None:
    """The innermost ``receive``/``receive_batch`` scope active in this context, or None."""
    value = _current.get()
    return value if isinstance(value, (Reception, BatchReception)) else None


# --- stages ---------------------------------------------------------------------------------------

class Stage(_Scope):
    """A non-messaging pipeline step (discover, enrich, persist): an INTERNAL span and per-stage metrics.

    Metrics: ``otelkit.pipeline.stage.duration`` and ``otelkit.pipeline.processed.items``
    labelled by stage, source, variant and outcome (``success``/``failure``). By default the
    stage counts one item, as a failure when an exception escapes; call :meth:`count` to
    record how many items a batch step handled instead.
    """

    __slots__ = ("_attrs", "_counted", "_t0", "_token", "name", "source", "span", "variant")

    def __init__(self, name: str, *, source: str | None = None, variant: str | None = None,
                 attributes: Mapping[str, Any] | None = None) -> None:
        self.name = name if type(name) is str else _name(name, "stage name")
        self.source = source
        self.variant = variant
        self._attrs = attributes
        self.span: Span = INVALID_SPAN
        self._token: object = None
        self._counted = False
        self._t0 = 0.0

    def _labels(self) -> dict[str, str]:
        labels = {_names.ATTR_STAGE: self.name}
        if self.source is not None:
            labels[_names.ATTR_SOURCE] = self.source
        if self.variant is not None:
            labels[_names.ATTR_VARIANT] = self.variant
        return labels

    def count(self, n: int = 1, *, outcome: Literal["success", "failure"] = "success") -> None:
        """Record ``n`` items handled by this stage with ``outcome`` (replaces the automatic count of one)."""
        self._counted = True
        try:  # a bad n (a str, None, NaN) is dropped with a debug log, never raised into the stage
            if type(n) is not int:
                number = _parse_number(n)
                if number is None or number != int(number):
                    logger.debug("otelkit: stage count n=%s is not a positive integer; ignored", _shown(n))
                    return
                n = int(number)
            if n > 0:
                instruments().stage_items.add(n, {**self._labels(), _names.ATTR_OUTCOME: outcome})
        except Exception as error:
            logger.debug("otelkit: stage count failed: %r", error)

    def _start(self) -> None:
        attrs: dict[str, Any] = self._labels()
        if self._attrs:
            attrs.update(self._attrs)
        span = tracer().start_span(self.name, kind=SpanKind.INTERNAL, attributes=attrs)
        self.span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self._t0 = time.perf_counter()

    def _finish(self, exc: BaseException | None) -> None:
        span = self.span
        if span is INVALID_SPAN:
            # No-op tracer before init(): still detach what __enter__ attached (baggage, correlation ID).
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            return
        duration = time.perf_counter() - self._t0
        labels = self._labels()
        outcome = "success"
        try:  # whatever goes wrong while annotating, the span is still ended (never lost)
            if exc is not None:
                outcome = "failure"
                error_type = _error_type(exc)
                failure_class = classify_failure(exc) if isinstance(exc, Exception) else "transient"
                _mark_failed(span, exc, error_type)
                span.set_attribute(_names.ATTR_ERROR_CLASS, failure_class)
                labels[_names.ATTR_ERROR_CLASS] = failure_class
                _report(exc, span, self._report_context())
            span.set_attribute(_names.ATTR_OUTCOME, outcome)
        finally:
            span.end()
        labels[_names.ATTR_OUTCOME] = outcome
        try:  # recorded while the span is current: exemplars open this stage's trace
            ins = instruments()
            ins.stage_duration.record(duration, labels)
            if not self._counted:
                ins.stage_items.add(1, labels)
        finally:
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]

    def _report_context(self) -> dict[str, object]:
        context: dict[str, object] = {"stage": self.name, "source": self.source, "variant": self.variant,
                                      "correlation_id": get_correlation_id()}
        message = _current.get()
        if message is not None:
            context.update(message._report_context())
            context["stage"] = self.name
        return context

    def __call__(self, fn: F) -> F:
        """Decorate a function: every call runs as one execution of this stage."""
        name, source, variant, attributes = self.name, self.source, self.variant, self._attrs
        return _decorate(fn, lambda args, kwargs: Stage(name, source=source, variant=variant, attributes=attributes))


def discovered(n: int = 1, *, source: str | None = None, variant: str | None = None) -> None:
    """Count ``n`` items entering the pipeline (``otelkit.pipeline.discovered.items``), by source."""
    labels: dict[str, str] = {}
    if source is not None:
        labels[_names.ATTR_SOURCE] = source
    if variant is not None:
        labels[_names.ATTR_VARIANT] = variant
    try:
        instruments().discovered.add(n, labels)
    except Exception as error:
        logger.debug("otelkit: discovered() failed: %r", error)
