"""One WSGI layer per traced Flask request: the contrib ``FlaskInstrumentor`` work and the edge's together.

Imported only when an app is instrumented (it imports the contrib Flask and WSGI instrumentations). The app is
first instrumented by ``FlaskInstrumentor.instrument_app`` (its instruments, tracer, excluded URLs and
conventions mode), then, under stable HTTP conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http``, otelkit's
default), two of the contrib's per-request pieces are replaced by equivalents built from the same objects
(read from the contrib's closures; anything unexpected leaves the contrib's pieces and otelkit's second layer
in place):

* ``app.wsgi_app`` (the contrib's wrapper: active requests, the response attributes, the duration histogram)
  also does the edge (:mod:`otelkit._instrument._web`): the header read once, ``X-Correlation-ID`` added in
  the same ``start_response`` wrapper that reads the status; the class-level ``Flask.__call__`` wrapper then
  passes the app's requests straight through;
* the ``before_request`` function that starts the SERVER span: the correlation ID is put into the extracted
  context *before* it is attached, one context attach (the extracted context with the span and the ID)
  instead of three (the extracted context's, ``use_span``'s, the request hook's) plus the edge's; the
  request attributes are given to the span once (the contrib passes them at start and sets each again). It
  runs first among the app's ``before_request`` functions, so the application's own ones run inside the
  span and the correlation scope.

* the ``teardown_request`` function that ends the span and detaches the context: the contrib's, reading
  ``before_request``'s decisions instead of making them again.

Per request, work the contrib does more than once is done once: the request attributes are collected once (by
the ``wsgi_app`` layer, for the metrics and the span), the excluded-URL decision and the URL rule are taken
once (by ``before_request``; the contrib builds and matches the URL there, in ``start_response`` and in
teardown), the request context is read from Flask's context variable rather than through ``flask.request``'s
proxy per attribute. Request and response header capture is skipped when its variable is not set (the
contrib's collection then gives nothing). The metric points go through ``_compat.add_point``/``record_point``
with the attribute sets kept by :func:`otelkit._instrument._web.kept`, in the contexts the contrib gives them.

Same telemetry: span name, kind, attributes, status, events, ``http.server.request.duration`` and
``http.server.active_requests`` (tests/integration/test_server_layers.py compares them with the contrib's).
"""

from __future__ import annotations

import weakref
from time import time_ns
from timeit import default_timer
from typing import Any

import opentelemetry.instrumentation.flask as contrib
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.propagate import extract
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from otelkit import _compat
from otelkit._instrument import _web
from otelkit._internal_log import logger
from otelkit._names import CORRELATION_ATTRIBUTE

ENVIRON_KEY = "otelkit.correlation"
_EDGE_TOKEN = "otelkit.edge_token"  # the edge's own attach, for a request the span does not cover (excluded)
_TRACED_KEY = "otelkit.flask_traced"  # _before_request's decision: False for an excluded URL
_RULE_KEY = "otelkit.flask_rule"  # the URL rule _before_request found (None: no route matched), for start_response
_ATTRIBUTES_KEY = "otelkit.flask_attributes"  # the request attributes collected once, by the wsgi_app layer
# The contrib's own module objects (flask, its WSGI helpers), so this module names no further distribution.
flask: Any = getattr(contrib, "flask")  # noqa: B009 - not re-exported by the contrib module
otel_wsgi: Any = getattr(contrib, "otel_wsgi")  # noqa: B009 - as above
_HTTP = _compat.http_stability_mode()
_NEEDS = ("_ENVIRON_STARTTIME_KEY", "_ENVIRON_SPAN_KEY", "_ENVIRON_ACTIVATION_KEY", "_ENVIRON_REQCTX_REF_KEY",
          "_ENVIRON_TOKEN", "sanitize_method")
# flask.request's own context variable (Flask 2.2+): the request context, read directly, not through two proxies
request_context: Any = getattr(getattr(flask, "globals", None), "_cv_request", None)
# Header capture is configured by these variables, read by the contrib per request (as here): with none set, its
# collection (every request header into a dict, then matched against no pattern) gives nothing.
captured: Any = getattr(otel_wsgi, "get_custom_headers", None)
CAPTURE_REQUEST = getattr(otel_wsgi, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", None)
CAPTURE_RESPONSE = getattr(otel_wsgi, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", None)
_APP_CELLS = ("wsgi_app", "active_requests_counter", "duration_histogram_old", "duration_histogram_new",
              "excluded_urls", "sem_conv_opt_in_mode", "response_hook")
_BEFORE_CELLS = ("tracer", "excluded_urls", "enable_commenter", "request_hook", "sem_conv_opt_in_mode")
_WSGI_NEEDS = ("get_custom_headers", "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
               "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "get_default_span_name",
               "collect_request_attributes", "_parse_active_request_count_attrs", "_parse_duration_attrs",
               "add_response_attributes", "collect_custom_response_headers_attributes",
               "collect_custom_request_headers_attributes", "default_response_propagation_setter", "wsgi_getter")


def _cells(function: Any, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of ``function``'s closure variables ``names``, or None if it does not have them all."""
    code, closure = getattr(function, "__code__", None), getattr(function, "__closure__", None)
    if code is None or closure is None:
        return None
    found = {}
    for name, cell in zip(code.co_freevars, closure, strict=True):
        if name in names:
            try:
                found[name] = cell.cell_contents
            except ValueError:  # an empty cell
                return None
    return found if len(found) == len(names) else None


class _Activation:
    """What the contrib's teardown calls ``__exit__`` on: as ``trace.use_span(span, end_on_exit=True)``'s exit.

    The context was attached once by :func:`_before_request` (its token is the contrib's ``_ENVIRON_TOKEN``,
    which the teardown detaches), so there is no second attach to undo here.
    """

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        span = self.span
        try:
            if isinstance(exc, Exception) and span.is_recording():  # as use_span: Exception, not BaseException
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


def install(app: Any, request_hook: Any) -> bool:
    """Replace the contrib's per-request pieces on ``app`` (just instrumented by it); True if done.

    ``request_hook`` is the one otelkit gave the contrib (the edge's adoption, which the new ``before_request``
    does itself); an app with another hook keeps the contrib's pieces.
    """
    wrapped_app, before = app.__dict__.get("wsgi_app"), getattr(app, "_before_request", None)
    teardown = getattr(app, "_teardown_request", None)
    if (not all(hasattr(contrib, name) for name in _NEEDS) or not all(hasattr(otel_wsgi, n) for n in _WSGI_NEEDS)
            or request_context is None):
        return False
    app_cells, before_cells = _cells(wrapped_app, _APP_CELLS), _cells(before, _BEFORE_CELLS)
    teardown_cells = _cells(teardown, ("excluded_urls",))
    if app_cells is None or before_cells is None or teardown_cells is None:
        return False
    if (app_cells["sem_conv_opt_in_mode"] != _HTTP or app_cells["duration_histogram_old"] is not None
            or app_cells["response_hook"] is not None or before_cells["sem_conv_opt_in_mode"] != _HTTP
            or before_cells["request_hook"] is not request_hook
            or before_cells["enable_commenter"] or before_cells["excluded_urls"] is not app_cells["excluded_urls"]
            or teardown_cells["excluded_urls"] is not app_cells["excluded_urls"]):
        return False
    funcs, teardowns = app.before_request_funcs.get(None), app.teardown_request_funcs.get(None)
    if not funcs or before not in funcs or not teardowns or teardown not in teardowns:
        return False
    new_before = _before_request_for(before_cells["tracer"], before_cells["excluded_urls"])
    new_teardown = _teardown_request_for(teardown)
    funcs.remove(before)
    funcs.insert(0, new_before)
    teardowns[teardowns.index(teardown)] = new_teardown
    app._before_request = new_before  # what FlaskInstrumentor.uninstrument_app removes
    app._teardown_request = new_teardown  # likewise
    app.wsgi_app = _wsgi_app_for(app_cells["wsgi_app"], app_cells["active_requests_counter"],
                                 app_cells["duration_histogram_new"], app_cells["excluded_urls"])
    return True


def _wsgi_app_for(wsgi_app: Any, active_requests_counter: Any, duration_histogram: Any, excluded_urls: Any) -> Any:
    """The contrib's ``_rewrapped_app`` under HTTP conventions, with the edge (module docstring)."""
    start_key, span_key = contrib._ENVIRON_STARTTIME_KEY, contrib._ENVIRON_SPAN_KEY
    collect, active_attrs_of = otel_wsgi.collect_request_attributes, otel_wsgi._parse_active_request_count_attrs
    duration_attrs_of, add_response_attributes = otel_wsgi._parse_duration_attrs, otel_wsgi.add_response_attributes
    custom_response = otel_wsgi.collect_custom_response_headers_attributes
    response_setter = otel_wsgi.default_response_propagation_setter
    header_name, server, kept = _web.RESPONSE_HEADER, trace.SpanKind.SERVER, _web.kept

    def should_trace() -> bool:
        return bool(flask.request and (excluded_urls is None or not excluded_urls.url_disabled(flask.request.url)))

    def otelkit_wsgi_app(env: Any, start_response: Any) -> Any:
        env[start_key] = time_ns()
        start = default_timer()
        state = env.get(ENVIRON_KEY)
        own = state is None  # else an app dispatched to by another Flask app: the outer one did the edge
        if own:
            state = _web.incoming(env.get(_web.edge().wsgi_key))
            env[ENVIRON_KEY] = state
        attributes = collect(env, _HTTP)
        env[_ATTRIBUTES_KEY] = attributes  # the span's too (_before_request): one collection per request
        active_attributes = kept(active_attrs_of(attributes, _HTTP))
        _compat.add_point(active_requests_counter, 1, active_attributes)
        traced = True
        route = None

        def _start_response(status: str, response_headers: list[tuple[str, str]], *args: Any, **kwargs: Any) -> Any:
            nonlocal traced, route
            decided = env.get(_TRACED_KEY)  # _before_request's decision; None if it did not run
            if decided is None:
                traced = should_trace()
                if traced:
                    route = flask.request.url_rule
            else:
                traced = decided
                route = env.get(_RULE_KEY)
            if traced:
                span = env.get(span_key)
                propagator = get_global_response_propagator()
                if propagator:
                    propagator.inject(response_headers, setter=response_setter)
                if span:
                    add_response_attributes(span, status, response_headers, attributes, _HTTP)
                    # Without the capture variable the contrib's collection gives nothing (read per response,
                    # as the contrib does)
                    if span.is_recording() and span.kind == server and captured(CAPTURE_RESPONSE):
                        custom = custom_response(response_headers)
                        if custom:
                            span.set_attributes(custom)
                else:
                    logger.debug("otelkit: the Flask request's span is missing at start_response(%s)", status)
            if own:
                try:
                    response_headers.append((header_name, state[0]))
                except Exception:
                    pass
            return start_response(status, response_headers, *args, **kwargs)

        try:
            result = wsgi_app(env, _start_response)
            if traced:
                duration_s = default_timer() - start
                span = env.get(span_key)
                duration_attributes = duration_attrs_of(attributes, _HTTP)
                if route:
                    # Last, as the contrib adds it (_before_request put it into the request's attributes, before
                    # the status code): the same attribute order in the exported point
                    duration_attributes.pop("http.route", None)
                    duration_attributes["http.route"] = str(route)
                _compat.record_point(duration_histogram, max(duration_s, 0), kept(duration_attributes),
                                     set_span_in_context(span))
            return result
        finally:
            _compat.add_point(active_requests_counter, -1, active_attributes)
            token = env.pop(_EDGE_TOKEN, None)
            if token is not None:
                _web.leave(token)

    otelkit_wsgi_app._otelkit_layer = True  # type: ignore[attr-defined]
    return otelkit_wsgi_app


def _before_request_for(tracer: Any, excluded_urls: Any) -> Any:
    """The contrib's ``_before_request`` (start the SERVER span), with the edge's context in one attach."""
    start_key, span_key = contrib._ENVIRON_STARTTIME_KEY, contrib._ENVIRON_SPAN_KEY
    activation_key, reqctx_key, token_key = (contrib._ENVIRON_ACTIVATION_KEY, contrib._ENVIRON_REQCTX_REF_KEY,
                                             contrib._ENVIRON_TOKEN)
    span_name_of: Any = otel_wsgi.get_default_span_name
    sanitize: Any = getattr(contrib, "sanitize_method")  # noqa: B009 - not re-exported by the contrib module
    collect, custom_request = otel_wsgi.collect_request_attributes, otel_wsgi.collect_custom_request_headers_attributes
    getter, server, invalid = otel_wsgi.wsgi_getter, trace.SpanKind.SERVER, trace.INVALID_SPAN
    current_context = request_context

    def _before_request() -> None:
        try:
            ctx = current_context.get()  # flask.request's own lookup, without the proxy per attribute
            request = ctx.request
            env = request.environ
            state = env.get(ENVIRON_KEY)
            # The URL decided once per request (the contrib builds and matches it here, in start_response and
            # in teardown): they read the decision
            traced = not (excluded_urls and excluded_urls.url_disabled(request.url))
            env[_TRACED_KEY] = traced
            rule = request.url_rule  # none for a 404 that matched no route
            env[_RULE_KEY] = rule
            if not traced:
                if state is not None and _EDGE_TOKEN not in env:  # no span: the edge's scope alone
                    env[_EDGE_TOKEN] = otel_context.attach(_web._with_id(state[0], otel_context.get_current()))
                return
            attributes = env.get(_ATTRIBUTES_KEY)
            if attributes is None:  # not through this layer's wsgi_app (a test request context)
                attributes = collect(env, sem_conv_opt_in_mode=_HTTP)
            # get_default_span_name: the method and the rule, else the WSGI default
            method = sanitize(env.get("REQUEST_METHOD", "").strip())
            if method == "_OTHER":
                method = "HTTP"
            if rule:
                attributes["http.route"] = rule.rule
                name = f"{method} {rule.rule}"
            else:
                name = span_name_of(env)
            current = otel_context.get_current()
            if trace.get_current_span(current) is invalid:
                parent = extract(env, getter=getter)
                kind = server
            else:  # inside a span already (the contrib's rule): a child, in the context it is in
                parent = current
                kind = trace.SpanKind.INTERNAL
            if state is not None:
                parent = _web.with_request_id(state, parent)
                # Given at start, not set after it (one attribute write less); the metrics' attributes are
                # filtered from this dict to their own keys, so they do not get it.
                attributes[CORRELATION_ATTRIBUTE] = state[0]
            span = tracer.start_span(name, parent, kind=kind, start_time=env.get(start_key), attributes=attributes)
            if span.is_recording() and kind is server and captured(CAPTURE_REQUEST):
                custom = custom_request(env)
                if custom:
                    span.set_attributes(custom)
            env[token_key] = otel_context.attach(set_span_in_context(span, parent))
            env[activation_key] = _Activation(span)
            env[reqctx_key] = weakref.ref(ctx)
            env[span_key] = span
        except Exception:  # telemetry never fails the request: it runs untraced
            logger.debug("otelkit: starting the Flask request's span failed", exc_info=True)

    return _before_request


def _teardown_request_for(contrib_teardown: Any) -> Any:
    """The contrib's ``_teardown_request`` (end the span, detach the context) with ``_before_request``'s decision."""
    activation_key, reqctx_key, token_key = (contrib._ENVIRON_ACTIVATION_KEY, contrib._ENVIRON_REQCTX_REF_KEY,
                                             contrib._ENVIRON_TOKEN)
    flask_31 = bool(getattr(contrib, "_IS_FLASK_31_PLUS", False))
    current_context = request_context

    def _teardown_request(exc: BaseException | None) -> None:
        ctx = current_context.get(None)
        if ctx is None:  # not in a request (the contrib's flask.request would raise): nothing started here
            return
        env = ctx.request.environ
        traced = env.get(_TRACED_KEY)
        if traced is None:  # _before_request did not run for this request: the contrib's own checks
            contrib_teardown(exc)
            return
        if not traced:
            return
        activation = env.get(activation_key)
        original = env.get(reqctx_key)
        # As the contrib: a request context other than the one that started the span (pushed by the application,
        # e.g. copy_current_request_context) does not end it
        if not activation or original is None or original() is not ctx:
            return
        token = env.get(token_key)
        try:
            if flask_31 and _streaming(ctx.request):
                # As the contrib for a streamed response (Flask 3.1+): detached first, then ended, marked done
                try:
                    otel_context.detach(token)
                    activation.__exit__(None, None, None)
                    env[activation_key] = None
                    env[token_key] = None
                except (RuntimeError, ValueError, TypeError, AttributeError):
                    logger.debug("otelkit: the Flask streamed response's teardown failed", exc_info=True)
                return
            if exc is None:
                activation.__exit__(None, None, None)
            else:
                activation.__exit__(type(exc), exc, getattr(exc, "__traceback__", None))
            if token:
                otel_context.detach(token)
                env.pop(activation_key, None)
                env.pop(token_key, None)
        except (RuntimeError, AttributeError, ValueError):
            logger.debug("otelkit: the Flask request's teardown failed", exc_info=True)

    return _teardown_request


def _streaming(request: Any) -> bool:
    """The contrib's test (Flask 3.1+) for a streamed response: ``request.response.stream`` set."""
    try:
        response = getattr(request, "response", None)
        return bool(response and getattr(response, "stream", None))
    except (RuntimeError, AttributeError):
        return False
