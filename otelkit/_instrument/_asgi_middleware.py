"""One ASGI layer per traced request: the contrib ``OpenTelemetryMiddleware``'s work and the edge's together.

Imported only when an app is instrumented (it imports the contrib ASGI instrumentation). A subclass of the
contrib middleware, built with the contrib's own arguments, instruments and helpers (so its telemetry is the
contrib's: span name and attributes, ``http.server.request.duration``, ``http.server.active_requests``, the
body-size histograms, captured and sanitised headers, the response propagator). What it does differently,
per request, under stable HTTP conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http``, otelkit's default) with
``receive``/``send`` spans excluded (otelkit always excludes them):

* the correlation at the edge (:mod:`otelkit._instrument._web`) is done here, not in a second layer: the
  header is read once, the ID is put into the extracted context *before* it is attached, and the response
  header is added in the same ``send`` wrapper that reads the status;
* one context attach (the extracted context with the span and the ID) instead of three (the edge's, the
  extracted context's, ``use_span``'s) and the request hook's fourth;
* the request attributes are given to the span once (the contrib passes them at start and sets each again);
* only the stable-convention duration attributes are built (the contrib also builds the old set, and the
  old ``http.target``, and throws them away in this mode);
* the metric points go through ``_compat.add_point``/``record_point`` with the attribute sets kept by
  :func:`otelkit._instrument._web.kept`, in the contexts the contrib gives them (the active-request count in
  the extracted one, the duration and sizes in the span's).

Anything else (websocket connections, another conventions mode, a contrib version without the pieces used
here) goes through the contrib's own ``__call__`` with the edge around it and the request hook adopting the ID.
"""

from __future__ import annotations

from timeit import default_timer
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as ContribMiddleware
from opentelemetry.instrumentation.asgi import (
    asgi_getter,
    asgi_setter,
    collect_custom_headers_attributes,
    collect_request_attributes,
    get_host_port_url_tuple,
)
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.propagate import extract
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.http import normalise_request_header_name

from otelkit import _compat
from otelkit._instrument import _web
from otelkit._internal_log import logger
from otelkit._names import CORRELATION_ATTRIBUTE

SCOPE_KEY = "otelkit.correlation"
_HEADER = _web.RESPONSE_HEADER.lower().encode("latin-1")

_helpers = _compat.asgi_server_helpers()
_HTTP: Any = _helpers[0] if _helpers else None
_parse_active_request_count_attrs: Any = _helpers[1] if _helpers else None
_parse_duration_attrs: Any = _helpers[2] if _helpers else None

_NEEDS = ("_set_server_span", "duration_histogram_new", "server_response_body_size_histogram",
          "server_request_body_size_histogram", "active_requests_counter", "excluded_urls", "default_span_details",
          "tracer", "_sem_conv_opt_in_mode", "http_capture_headers_server_request",
          "http_capture_headers_sanitize_fields", "exclude_receive_span", "exclude_send_span")


def _lean_capable(middleware: Any) -> bool:
    return (_HTTP is not None and all(hasattr(middleware, name) for name in _NEEDS)
            and middleware._sem_conv_opt_in_mode == _HTTP and middleware.exclude_receive_span
            and middleware.exclude_send_span)


def _with_header(send: Any, state: list[Any]) -> Any:
    """``send`` adding ``X-Correlation-ID`` to the response start (or the websocket accept) message."""

    async def send_with_id(message: Any) -> None:
        if message.get("type") in ("http.response.start", "websocket.accept"):
            _add_header(message, state)
        await send(message)

    return send_with_id


def _add_header(message: Any, state: list[Any]) -> Any:
    try:
        # The message is the sender's, made for this one call (the contrib also adds headers to it): one new
        # header list, no copy of the message.
        headers = [*(message.get("headers") or ()), (_HEADER, state[0].encode("ascii"))]
        try:
            message["headers"] = headers
        except TypeError:  # a read-only mapping: a copy
            message = {**message, "headers": headers}
    except Exception:
        pass
    return message


class OtelkitMiddleware(ContribMiddleware):
    """The contrib ASGI middleware with the correlation at the edge in the same layer (module docstring)."""

    # FastAPI's own telemetry (0.12x+) stands aside when the built stack holds the contrib middleware, which it
    # recognises by the type's module and name only: this subclass is that middleware, so it answers to both
    # (else FastAPI would trace every request a second time).
    __module__ = ContribMiddleware.__module__
    __qualname__ = ContribMiddleware.__qualname__
    _otelkit_lean = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._otelkit_lean = _lean_capable(self)

    @classmethod
    def adopt(cls, middleware: Any) -> bool:
        """Turn a contrib middleware instance (built by ``FastAPIInstrumentor``) into this class; True if done."""
        if type(middleware) is cls:
            return True
        if type(middleware) is not ContribMiddleware:
            return False
        # Same instance layout (no __slots__, no new state but the flag): the contrib's built instance keeps
        # its arguments, tracer, meter and instruments.
        middleware.__class__ = cls
        middleware._otelkit_lean = _lean_capable(middleware)  # type: ignore[attr-defined]
        return True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self._otelkit_lean or scope.get("type") != "http":
            return await self._edge_around_contrib(scope, receive, send)
        start = default_timer()
        state = scope.get(SCOPE_KEY)
        own = state is None
        if own:
            state = _web.from_asgi_headers(scope.get("headers"))
            scope[SCOPE_KEY] = state
        if not is_http_instrumentation_enabled() or (
                self.excluded_urls and self.excluded_urls.url_disabled(get_host_port_url_tuple(scope)[2])):
            # Not traced (an excluded URL): the edge alone.
            token = otel_context.attach(_web._with_id(state[0], otel_context.get_current()))
            try:
                await self.app(scope, receive, _with_header(send, state) if own else send)
            finally:
                _web.leave(token)
            return

        span_name, additional = self.default_span_details(scope)
        attributes = collect_request_attributes(scope, _HTTP)
        attributes.update(additional)
        current = otel_context.get_current()
        if trace.get_current_span(current) is trace.INVALID_SPAN:
            parent = extract(scope, getter=asgi_getter)
            kind = trace.SpanKind.SERVER
        else:  # inside a span already (the contrib's rule): a child, the context it is in
            parent = current
            kind = trace.SpanKind.INTERNAL
        parent = _web.with_request_id(state, parent)
        span = self.tracer.start_span(span_name, parent, kind=kind, attributes=attributes)
        span_ctx = set_span_in_context(span, parent)
        active_attributes = _web.kept(_parse_active_request_count_attrs(attributes, _HTTP))
        # In the context the contrib adds it in (the extracted one: its exemplar, if any, is the remote parent's)
        _compat.add_point(self.active_requests_counter, 1, active_attributes, parent)
        token = otel_context.attach(span_ctx)
        if span.is_recording():
            span.set_attribute(CORRELATION_ATTRIBUTE, state[0])
            if kind is trace.SpanKind.SERVER and self.http_capture_headers_server_request:
                custom = collect_custom_headers_attributes(
                    scope, self.http_capture_headers_sanitize_fields, self.http_capture_headers_server_request,
                    normalise_request_header_name)
                if custom:
                    span.set_attributes(custom)
        sizes: list[int] = []
        set_server_span: Any = self._set_server_span

        async def otel_send(message: Any) -> None:
            kind_of = message["type"]
            status_code = message["status"] if kind_of == "http.response.start" else None
            set_server_span(span, message, status_code, attributes)
            propagator = get_global_response_propagator()
            if propagator:
                propagator.inject(message, context=set_span_in_context(span, Context()), setter=asgi_setter)
            content_length = asgi_getter.get(message, "content-length")
            if content_length:
                try:
                    sizes.append(int(content_length[0]))
                except ValueError:
                    pass
            if own and status_code is not None:
                message = _add_header(message, state)
            await send(message)
            if kind_of == "http.response.body" and not message.get("more_body", False):
                span.end()

        try:
            await self.app(scope, receive, otel_send)
        except Exception as exc:  # as trace.use_span: recorded, the status set, re-raised
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            try:
                self._record(start, attributes, active_attributes, parent, span_ctx, sizes, scope)
            except Exception:  # never the request's failure
                logger.debug("otelkit: recording the request's metrics failed", exc_info=True)
            _web.leave(token)
            if span.is_recording():
                span.end()

    def _record(self, start: float, attributes: dict[str, Any], active_attributes: Any, parent: Context,
                span_ctx: Context, sizes: list[int], scope: Any) -> None:
        """The contrib's points: the duration and sizes in the span's context, the active count in the extracted one."""
        duration_s = default_timer() - start
        duration_attributes = _web.kept(_parse_duration_attrs(attributes, _HTTP))
        if self.duration_histogram_new:
            _compat.record_point(self.duration_histogram_new, max(duration_s, 0), duration_attributes, span_ctx)
        _compat.add_point(self.active_requests_counter, -1, active_attributes, parent)
        if sizes and self.server_response_body_size_histogram:
            _compat.record_point(self.server_response_body_size_histogram, sizes[-1], duration_attributes, span_ctx)
        request_size = asgi_getter.get(scope, "content-length")
        if request_size and self.server_request_body_size_histogram:
            try:
                amount = int(request_size[0])
            except ValueError:
                return
            _compat.record_point(self.server_request_body_size_histogram, amount, duration_attributes, span_ctx)

    async def _edge_around_contrib(self, scope: Any, receive: Any, send: Any) -> None:
        """The contrib's ``__call__`` with the edge around it; the request hook adopts the ID (websockets too)."""
        if scope.get("type") not in ("http", "websocket"):
            return await super().__call__(scope, receive, send)
        state = scope.get(SCOPE_KEY)
        own = state is None
        if own:
            state = _web.from_asgi_headers(scope.get("headers"))
            scope[SCOPE_KEY] = state
        token = _web.enter(state)
        try:
            await super().__call__(scope, receive, _with_header(send, state) if own else send)
        finally:
            _web.leave(token)


OtelkitMiddleware.__name__ = ContribMiddleware.__name__  # see the class's comment
