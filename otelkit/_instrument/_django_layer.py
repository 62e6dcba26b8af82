"""One middleware per traced Django request (WSGI and ASGI): the contrib ``_DjangoMiddleware``'s work and the edge's.

Imported only when a Django handler loads its middleware (it imports the contrib Django instrumentation).
``DjangoInstrumentor().instrument()`` configures the contrib middleware class (its tracer, instruments, excluded
URLs, conventions mode, hooks) and puts its dotted path first in ``settings.MIDDLEWARE``; when the handler is
built (:func:`otelkit._instrument.django._load_middleware`), that entry is swapped, for the build only, for
:class:`OtelkitDjangoMiddleware`, a subclass using the same class-level objects. Only when :func:`usable`
(stable HTTP conventions, otelkit's request hook, no response hook, the contrib's expected shape) and the
contrib middleware is the outermost; otherwise the contrib middleware and otelkit's second layer (the
``WSGIHandler.__call__`` / ``ASGIHandler.__call__`` wrapper and the request hook) stay, as before.

For a request, its ``__call__`` does, in one place, what the handler wrapper, the contrib middleware and the
request hook did in three:

* the edge (:mod:`otelkit._instrument._web`): the correlation header read once, ``X-Correlation-ID`` set on the
  response (unless the application set that header itself);
* the SERVER span started from the extracted context with the correlation ID already in it, and one context
  attach (the extracted context with the span and the ID) instead of four (the edge's, the extracted
  context's, ``use_span``'s, the request hook's); the request attributes given to the span once (the contrib
  passes them at start and sets each again);
* the excluded-URL decision made once per request (the contrib makes it in ``process_request``,
  ``process_view`` and ``process_response``, building the absolute URI each time);
* the rest as the contrib's ``process_response``: response attributes, captured response headers, the
  response propagator, ``http.server.request.duration`` (recorded inside the span's context, as before),
  ``http.server.active_requests``, the exception from ``process_exception`` on the span.

An ASGI request (``ASGIRequest``, under uvicorn / daphne) takes the contrib's ASGI branch: attributes and
``traceparent`` from the ASGI scope, ``set_status_code``, header capture from the scope's headers. The contrib
middleware is sync only, so Django's ASGI handler runs it in a thread (``sync_to_async``), the rest of the
chain back on the event loop (``async_to_sync``) and its ``process_view`` in a thread again: three thread hops
per request. This one is sync and async capable: before an async middleware (or none) it is a coroutine
function, awaited on the event loop with its ``process_view``; before a sync-only one it is sync (Django runs
it in a thread, as the contrib's). Its context is attached in the request's task, so the views, the threads
``sync_to_async`` runs them in, and the tasks they create see the span and the correlation ID.

Same telemetry: span name, kind, attributes, status and events, the two metric streams. Differences, none in
what is recorded: Django's ``request_started`` signal runs before the correlation scope is entered (the handler
wrapper entered it before), and under ASGI the response's ``close()`` (``request_finished``) runs after it is
left; an application's own ``X-Correlation-ID`` response header is kept instead of being followed by a second
one; under ASGI the header is spelled ``X-Correlation-ID`` (the wrapper appended ``x-correlation-id``); when the
client disconnects before the response (Django cancels the request's task), the span ends at the cancellation
with no status and no duration point, where the contrib's middleware, in its thread, went on to the response;
a request Django rejects before its middleware (an unreadable body: 400) gets no ``X-Correlation-ID``.
"""

from __future__ import annotations

from time import time
from timeit import default_timer
from types import SimpleNamespace
from typing import Any

import opentelemetry.instrumentation.django.middleware.otel_middleware as contrib
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from otelkit import _compat
from otelkit._instrument import _web
from otelkit._internal_log import logger
from otelkit._names import CORRELATION_ATTRIBUTE

PATH = f"{__name__}.OtelkitDjangoMiddleware"
KEY = "otelkit.correlation"  # request.META / ASGI scope: the request's [correlation ID, trusted]
_LAYER_KEY = "otelkit.django_layer"  # request.META: this request's _Request, or False if its URL is excluded
_STARTTIME_KEY = "opentelemetry-instrumentor-django.starttime_key"  # read by the contrib as a span start time
_HTTP = _compat.http_stability_mode()
_NEEDS = ("_DjangoMiddleware", "_is_asgi_request", "wsgi_collect_request_attributes", "wsgi_getter",
          "add_response_attributes", "wsgi_collect_custom_request_headers_attributes",
          "wsgi_collect_custom_response_headers_attributes", "_parse_active_request_count_attrs",
          "_parse_duration_attrs", "get_global_response_propagator", "extract_attributes_from_object", "HTTP_ROUTE",
          "get_custom_headers", "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
          "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE")
_CLASS_NEEDS = ("_tracer", "_excluded_urls", "_traced_request_attrs", "_active_request_counter",
                "_duration_histogram_old", "_duration_histogram_new", "_sem_conv_opt_in_mode", "_otel_request_hook",
                "_otel_response_hook", "_environ_span_key", "_get_span_name", "process_request", "process_view",
                "process_exception", "process_response")
_MISSING = object()

Base: Any = getattr(contrib, "_DjangoMiddleware", None)
is_asgi_request: Any = getattr(contrib, "_is_asgi_request", None)
collect: Any = getattr(contrib, "wsgi_collect_request_attributes", None)
wsgi_getter: Any = getattr(contrib, "wsgi_getter", None)
add_response_attributes: Any = getattr(contrib, "add_response_attributes", None)
custom_request: Any = getattr(contrib, "wsgi_collect_custom_request_headers_attributes", None)
custom_response: Any = getattr(contrib, "wsgi_collect_custom_response_headers_attributes", None)
active_attrs_of: Any = getattr(contrib, "_parse_active_request_count_attrs", None)
duration_attrs_of: Any = getattr(contrib, "_parse_duration_attrs", None)
response_propagator: Any = getattr(contrib, "get_global_response_propagator", None)
extract_attributes: Any = getattr(contrib, "extract_attributes_from_object", None)
HTTP_ROUTE: Any = getattr(contrib, "HTTP_ROUTE", None)
# Header capture is configured by these variables, read by the contrib per request (as here): with none set,
# the contrib's collection (every request header into a dict, then matched against no pattern) gives nothing.
captured: Any = getattr(contrib, "get_custom_headers", None)
CAPTURE_REQUEST = getattr(contrib, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", None)
CAPTURE_RESPONSE = getattr(contrib, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", None)
SERVER, INTERNAL, INVALID_SPAN = trace.SpanKind.SERVER, trace.SpanKind.INTERNAL, trace.INVALID_SPAN
# What the contrib's ASGI-request branch uses (``asgi_*`` from opentelemetry.instrumentation.asgi, imported by it
# only when that is installed): without all of them ASGI requests take the contrib's own path, in sync mode.
_ASGI_NEEDS = ("asgi_getter", "asgi_setter", "asgi_collect_request_attributes",
               "asgi_collect_custom_headers_attributes", "set_status_code", "SanitizeValue",
               "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "normalise_request_header_name",
               "normalise_response_header_name")
ASGI = bool(getattr(contrib, "_is_asgi_supported", False)) and all(getattr(contrib, name, None) is not None
                                                                   for name in _ASGI_NEEDS)
asgi_getter: Any = getattr(contrib, "asgi_getter", None)
asgi_setter: Any = getattr(contrib, "asgi_setter", None)
asgi_collect: Any = getattr(contrib, "asgi_collect_request_attributes", None)
asgi_custom: Any = getattr(contrib, "asgi_collect_custom_headers_attributes", None)
set_status_code: Any = getattr(contrib, "set_status_code", None)
SanitizeValue: Any = getattr(contrib, "SanitizeValue", None)
CAPTURE_SANITIZE = getattr(contrib, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", None)
normalise_request: Any = getattr(contrib, "normalise_request_header_name", None)
normalise_response: Any = getattr(contrib, "normalise_response_header_name", None)

# Set by otelkit._instrument.django: its state (``active``: instrumented), so that a handler built while
# instrumented stops doing the edge after uninstrument() (the contrib's middleware itself stays, as before).
integration_state: dict[str, Any] = {}
built = [0]  # middleware instances made: how load_middleware's caller knows the layer is in a handler


def usable(request_hook: Any) -> bool:
    """True if the contrib middleware class is configured as this layer reproduces it (module docstring)."""
    if _HTTP is None or not all(hasattr(contrib, name) for name in _NEEDS):
        return False
    if not all(hasattr(Base, name) for name in _CLASS_NEEDS):
        return False
    return (Base._sem_conv_opt_in_mode == _HTTP and Base._duration_histogram_old is None
            and Base._duration_histogram_new is not None and Base._active_request_counter is not None
            and Base._tracer is not None and Base._otel_request_hook is request_hook
            and Base._otel_response_hook is None)


class _Request:
    """What ``process_view`` / ``process_exception`` / the response need of a traced request."""

    __slots__ = ("span", "duration_attributes", "exception", "counter", "active_attributes", "token", "start", "asgi")

    def __init__(self, span: Any, duration_attributes: dict[str, Any], counter: Any,
                 active_attributes: dict[str, Any], asgi: bool) -> None:
        self.span = span
        self.duration_attributes = duration_attributes
        self.exception: BaseException | None = None
        self.counter = counter
        self.active_attributes = active_attributes
        self.token: Any = None
        self.start = 0.0
        self.asgi = asgi


def _end(span: Any, exception: BaseException | None) -> None:
    """``use_span(span, end_on_exit=True)``'s exit, as the contrib calls it (with ``process_exception``'s error)."""
    try:
        if isinstance(exception, Exception) and span.is_recording():  # as use_span: Exception only
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
    finally:
        span.end()


def _with_header(response: Any, state: list[Any]) -> Any:
    try:
        if _web.RESPONSE_HEADER not in response:
            response[_web.RESPONSE_HEADER] = state[0]
    except Exception:
        pass
    return response


# How _open says a request goes (its first item).
_CONTRIB = 0  # the contrib's own path (uninstrumented since, or an ASGI request without the ASGI names)
_DONE = 1  # answered already (Django's response to the error building the URI raised): the response
_SCOPED = 2  # not traced (an excluded URL, or the span could not start): run it in the correlation scope (token)
_TRACED = 3  # traced: the _Request (with its token)


class OtelkitDjangoMiddleware(Base):  # type: ignore[misc]
    """The contrib Django middleware with the edge, one layer for WSGI and ASGI requests (module docstring).

    Sync and async capable: under an ASGI handler whose next middleware is async (or none) it is a coroutine
    function, so neither it nor its ``process_view`` runs in a thread of its own, as the sync-only contrib
    middleware does; under WSGI (or before a sync-only middleware) it is sync.
    """

    sync_capable = True
    async_capable = ASGI

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self._async = ASGI and iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)  # what Django's convert_exception_to_response and the handler look at
            # Django adapts a sync process_view to async (sync_to_async: a thread hop per request) otherwise.
            self.process_view = self._process_view_async  # type: ignore[method-assign]
        built[0] += 1

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        what, value, state, own = self._open(request)
        if what == _CONTRIB:
            return super().__call__(request)
        if what == _DONE:
            return value
        if what == _SCOPED:
            try:
                response = self.get_response(request)
            finally:
                _web.leave(value)
            return _with_header(response, state) if own else response
        try:
            response = self.get_response(request)
        except BaseException as exc:  # Django turns errors into responses first: this is rare (the contrib leaked)
            self._abort(value, exc)
            raise
        self._close(request, response, value)
        return _with_header(response, state) if own else response

    async def _acall(self, request: Any) -> Any:
        what, value, state, own = self._open(request)
        if what == _CONTRIB:  # the contrib's __call__ with the next handler awaited; its methods are quick, sync
            self.process_request(request)
            return self.process_response(request, await self.get_response(request))
        if what == _DONE:
            return await value
        if what == _SCOPED:
            try:
                response = await self.get_response(request)
            finally:
                _web.leave(value)
            return _with_header(response, state) if own else response
        try:
            response = await self.get_response(request)
        except BaseException as exc:  # also the client's disconnect: Django cancels the request's task
            self._abort(value, exc)
            raise
        self._close(request, response, value)
        return _with_header(response, state) if own else response

    def _open(self, request: Any) -> tuple[int, Any, Any, bool]:
        """(how the request goes, its value, the edge's [correlation ID, trusted], whether this layer did the edge)."""
        asgi = is_asgi_request(request)
        if not integration_state.get("active") or (asgi and not ASGI):
            return _CONTRIB, None, None, False
        meta = request.META
        carrier = request.scope if asgi else meta
        state = carrier.get(KEY)
        own = state is None  # else the handler's wrapper did the edge (a handler built without the layer)
        if own:
            state = _web.from_asgi_headers(carrier.get("headers")) if asgi else \
                _web.incoming(meta.get(_web.edge().wsgi_key))
            carrier[KEY] = state
        try:
            excluded = self._excluded_urls.url_disabled(request.build_absolute_uri("?"))
        except Exception as exc:  # e.g. DisallowedHost: Django's own error response, as when the contrib raises it
            return _DONE, self._error_response(request, exc, state, own), state, own
        if not excluded:
            record = self._start(request, meta, carrier, state, asgi)
            if record is not None:
                return _TRACED, record, state, own
        meta[_LAYER_KEY] = False
        return _SCOPED, _web.enter(state), state, own

    def _error_response(self, request: Any, exc: Exception, state: list[Any], own: bool) -> Any:
        from django.core.handlers.exception import response_for_exception

        if self._async:  # as Django's convert_exception_to_response: the handler400 view is sync code
            from asgiref.sync import sync_to_async

            async def respond() -> Any:
                token = _web.enter(state)
                try:
                    response = await sync_to_async(response_for_exception, thread_sensitive=False)(request, exc)
                finally:
                    _web.leave(token)
                return _with_header(response, state) if own else response

            return respond()
        token = _web.enter(state)
        try:
            response = response_for_exception(request, exc)
        finally:
            _web.leave(token)
        return _with_header(response, state) if own else response

    def _start(self, request: Any, meta: dict[str, Any], carrier: Any, state: list[Any], asgi: bool) -> Any:
        """The contrib's ``process_request`` and the edge's attach: the span started and its context attached (the
        :class:`_Request`), or None (the request runs untraced; never raises)."""
        span: Any = None
        counter: Any = None
        active_attributes: dict[str, Any] = {}
        try:
            request._otel_start_time = time()
            attributes = asgi_collect(carrier, _HTTP) if asgi else collect(meta, _HTTP)
            current = otel_context.get_current()
            if trace.get_current_span(current) is INVALID_SPAN:
                parent = extract(carrier, getter=asgi_getter if asgi else wsgi_getter)
                kind = SERVER
            else:  # inside a span already (the contrib's rule): a child, in the context it is in
                parent = current
                kind = INTERNAL
            parent = _web.with_request_id(state, parent)
            # Given at start, not set after it as the request hook did (one attribute write less); the metrics'
            # attributes are filtered from this dict to their own keys, so they do not get it.
            attributes[CORRELATION_ATTRIBUTE] = state[0]
            span = self._tracer.start_span(self._get_span_name(request), parent, kind=kind,
                                           start_time=meta.get(_STARTTIME_KEY), attributes=attributes)
            active_attributes = active_attrs_of(attributes, _HTTP)
            self._active_request_counter.add(1, active_attributes)
            counter = self._active_request_counter
            if span.is_recording():
                if self._traced_request_attrs:
                    traced = extract_attributes(request, self._traced_request_attrs)
                    if asgi:  # as the contrib: the request's headers are looked up too
                        headers = SimpleNamespace(**{name.decode("latin1"): value.decode("latin1")
                                                     for name, value in carrier.get("headers", [])})
                        traced = extract_attributes(headers, self._traced_request_attrs, traced)
                    if traced:
                        span.set_attributes(traced)
                if kind is SERVER:
                    custom = None
                    if asgi:
                        patterns = captured(CAPTURE_REQUEST)
                        if patterns:
                            custom = asgi_custom(carrier, SanitizeValue(captured(CAPTURE_SANITIZE)), patterns,
                                                 normalise_request)
                    elif captured(CAPTURE_REQUEST):
                        custom = custom_request(meta)
                    if custom:
                        span.set_attributes(custom)
            record = _Request(span, attributes, counter, active_attributes, asgi)
            meta[self._environ_span_key] = span  # as the contrib, for code that reads it
            meta[_LAYER_KEY] = record
            record.token = otel_context.attach(set_span_in_context(span, parent))
            record.start = default_timer()
            return record
        except Exception:  # telemetry never fails the request: it runs untraced, in the correlation scope
            logger.debug("otelkit: starting the Django request's span failed", exc_info=True)
            if counter is not None:
                counter.add(-1, active_attributes)
            if span is not None:
                span.end()
            meta.pop(self._environ_span_key, None)
            return None

    @staticmethod
    def _abort(record: _Request, exc: BaseException) -> None:
        try:
            record.counter.add(-1, record.active_attributes)
            _end(record.span, exc)
        finally:
            _web.leave(record.token)

    def _close(self, request: Any, response: Any, record: _Request) -> None:
        try:
            self._respond(record.span, response, record)
        except Exception:
            logger.debug("otelkit: ending the Django request's span failed", exc_info=True)
        finally:
            _web.leave(record.token)
            request.META.pop(self._environ_span_key, None)  # as the contrib's process_response

    def _respond(self, span: Any, response: Any, record: _Request) -> None:
        """The contrib's ``process_response`` under stable HTTP conventions."""
        duration_attributes = record.duration_attributes
        try:
            if record.asgi:
                set_status_code(span, response.status_code, metric_attributes=duration_attributes,
                                sem_conv_opt_in_mode=_HTTP)
                if span.is_recording() and span.kind == SERVER:
                    patterns = captured(CAPTURE_RESPONSE)
                    if patterns:
                        headers: dict[str, Any] = {}
                        for key, value in response.items():
                            asgi_setter.set(headers, key, value)
                        custom = asgi_custom(headers, SanitizeValue(captured(CAPTURE_SANITIZE)), patterns,
                                             normalise_response)
                        if custom:
                            span.set_attributes(custom)
            else:
                add_response_attributes(span, f"{response.status_code} {response.reason_phrase}", response.items(),
                                        duration_attrs=duration_attributes, sem_conv_opt_in_mode=_HTTP)
                if span.is_recording() and span.kind == SERVER and captured(CAPTURE_RESPONSE):
                    custom = custom_response(response.items())
                    if custom:
                        span.set_attributes(custom)
            propagator = response_propagator()
            if propagator:
                propagator.inject(response)
            duration_s = default_timer() - record.start
            self._duration_histogram_new.record(max(duration_s, 0), duration_attrs_of(duration_attributes, _HTTP))
        finally:
            record.counter.add(-1, record.active_attributes)
            _end(span, record.exception)

    def process_view(self, request: Any, view_func: Any, *args: Any, **kwargs: Any) -> Any:
        record = request.META.get(_LAYER_KEY, _MISSING)
        if record is _MISSING:  # the contrib's path
            return super().process_view(request, view_func, *args, **kwargs)
        if record:
            match = getattr(request, "resolver_match", None)
            route = getattr(match, "route", None) if match else None
            if route:
                span = record.span
                if span.is_recording():
                    span.set_attribute(HTTP_ROUTE, route)
                record.duration_attributes[HTTP_ROUTE] = route
        return None

    async def _process_view_async(self, request: Any, view_func: Any, *args: Any, **kwargs: Any) -> Any:
        # The class's process_view: the instance's is this one (__init__).
        return OtelkitDjangoMiddleware.process_view(self, request, view_func, *args, **kwargs)

    def process_exception(self, request: Any, exception: Any) -> Any:
        record = request.META.get(_LAYER_KEY, _MISSING)
        if record is _MISSING:
            return super().process_exception(request, exception)
        if record:
            record.exception = exception
        return None
