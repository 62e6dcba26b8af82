"""The Starlette-based servers (FastAPI and Starlette apps): one class-level wrapper, one middleware per app.

``Starlette.__call__`` is wrapped once (when ``starlette.applications`` is imported, so ``init()`` imports
neither framework). At an app's first call -- before Starlette builds its middleware stack -- the app is
instrumented with ``FastAPIInstrumentor.instrument_app`` or the middleware ``StarletteInstrumentor.instrument_app``
adds: apps created before ``init()`` are traced like the others, and the contrib's class swap
(``fastapi.FastAPI`` replaced by a subclass, which misses apps created earlier) is not used.

The contrib middleware in the app is otelkit's subclass of it (:mod:`otelkit._instrument._asgi_middleware`),
which also does the correlation at the edge (:mod:`otelkit._instrument._web`) for HTTP requests and websocket
connections: one layer per request, not the contrib's plus otelkit's; the class-level wrapper then passes
requests straight through. An app the application instrumented itself keeps its own middleware and choices;
the wrapper does the edge around it.

What the contrib middleware is given: the provider-following tracer, the global (otelkit) meter provider,
otelkit's default excluded URLs when no ``OTEL_PYTHON_*EXCLUDED_URLS`` variable is set, the request hook that
adopts the correlation ID, and ``exclude_spans=["receive", "send"]``: no INTERNAL span per ASGI message
(two or three per request, the contrib default), which is most of its cost and none of its information.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from otelkit._instrument import _common, _web
from otelkit._internal_log import logger

_SCOPE_KEY = "otelkit.correlation"  # = _asgi_middleware.SCOPE_KEY (not imported: it imports the contrib)
_LAYER = "layer"
_EDGE = "edge"
_lock = threading.Lock()
_state: dict[str, Any] = {}
enabled: dict[str, bool] = {"fastapi": False, "starlette": False}
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()
_settings: dict[str, Any] = {}


def _kind(app: Any) -> str:
    import sys

    fastapi = sys.modules.get("fastapi")
    if fastapi is not None and isinstance(app, fastapi.FastAPI):
        return "fastapi"
    return "starlette"


def _request_hook(span: Any, scope: Any) -> None:
    _web.adopt(span, scope.get(_SCOPE_KEY) if isinstance(scope, dict) else None)


def _instrument_app(app: Any, kind: str) -> str:
    """Instrument one app (called at its first request, under the lock); returns its mode (see ``_call``)."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return _EDGE  # the application did it itself: its choices are kept, the edge wraps them
    from otelkit._instrument._asgi_middleware import OtelkitMiddleware

    kwargs: dict[str, Any] = {
        "tracer_provider": _settings.get("tracer_provider"),
        "meter_provider": _settings.get("meter_provider"),
        "excluded_urls": _web.excluded_urls(kind),
        "server_request_hook": _request_hook,
    }
    if getattr(app, "middleware_stack", None) is not None:
        # Served before init(): rebuilt with the instrumentation at the next request.
        app.middleware_stack = None
    if kind == "fastapi":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"], **kwargs)
        contrib_build = app.build_middleware_stack

        def build_middleware_stack() -> Any:
            # The contrib builds ServerErrorMiddleware(OpenTelemetryMiddleware(...)): its middleware becomes
            # the one layer that also does the edge (otelkit._instrument._asgi_middleware).
            stack = contrib_build()
            layer, found = stack, False
            for _ in range(4):
                layer = getattr(layer, "app", None)
                if layer is None:
                    break
                if OtelkitMiddleware.adopt(layer):
                    found = True
                    break
            if not found:
                logger.debug("otelkit: no contrib middleware in %r's stack: the edge wraps the app", app)
                app._otelkit_asgi = _EDGE
            return stack

        app.build_middleware_stack = build_middleware_stack
    else:
        # The middleware StarletteInstrumentor.instrument_app adds (as otelkit's one layer), with the options
        # it does not take.
        from opentelemetry.metrics import get_meter
        from opentelemetry.trace import get_tracer

        from otelkit import _compat

        name = "opentelemetry.instrumentation.starlette"
        found = _common.dist_version("opentelemetry-instrumentation-starlette")
        version = found[1] if found else ""
        app.add_middleware(
            OtelkitMiddleware, excluded_urls=kwargs["excluded_urls"],
            default_span_details=_compat.starlette_span_details(), server_request_hook=_request_hook,
            tracer=get_tracer(name, version, kwargs["tracer_provider"]),
            meter=get_meter(name, version, kwargs["meter_provider"]), exclude_spans=["receive", "send"])
        app._is_instrumented_by_opentelemetry = True
    _instrumented.add(app)
    return _LAYER


def _first_call(app: Any) -> Any:
    """Instrument ``app`` if its kind is enabled; its mode (see ``_call``)."""
    with _lock:
        seen = getattr(app, "_otelkit_asgi", None)
        if seen is not None:
            return seen
        kind = _kind(app)
        mode: Any = False
        if enabled.get(kind, False):
            mode = _EDGE
            try:
                mode = _instrument_app(app, kind)
            except Exception as exc:
                logger.warning("otelkit: instrumenting the %s app %r failed: %s: %s (it runs untraced)",
                               kind, app, type(exc).__name__, exc)
        try:
            app._otelkit_asgi = mode
        except Exception:
            return False
        return mode


def _call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Starlette.__call__``: an app's ``_otelkit_asgi`` mode says what this wrapper does per connection.

    ``_LAYER``: otelkit's middleware in the app does the edge (nothing here but the lifespan's flush);
    ``_EDGE``: the app's tracing is not otelkit's (the application instrumented it): the edge is done here;
    ``False``: not instrumented (its kind not enabled, or mounted in an app that does the edge).
    """
    # Not a coroutine function itself: called with the wrong arguments it must raise at once, like the
    # original (uvicorn calls the app with none to tell an app from an app factory).
    if not _state.get("active") or len(args) != 3 or kwargs:
        return wrapped(*args, **kwargs)
    if getattr(instance, "_otelkit_asgi", None) == _LAYER:
        scope = args[0]
        if isinstance(scope, dict) and scope.get("type") != "lifespan":
            return wrapped(*args)
    return _handle(wrapped, instance, *args)


async def _handle(wrapped: Any, instance: Any, scope: Any, receive: Any, send: Any) -> Any:
    on = getattr(instance, "_otelkit_asgi", None)
    if on is None:
        if isinstance(scope, dict) and _SCOPE_KEY in scope:
            # First seen inside a request another app already handles (a mounted sub-app): one span, not two.
            try:
                instance._otelkit_asgi = False
            except Exception:
                pass
            on = False
        else:
            on = _first_call(instance)
    kind = scope.get("type") if isinstance(scope, dict) else None
    if kind == "lifespan":
        return await wrapped(scope, receive, _flushing_send(send))
    if on != _EDGE or kind not in ("http", "websocket") or _SCOPE_KEY in scope:
        # Not ours, not a connection, the app's own layer does the edge, or an app mounted in an app that did it.
        return await wrapped(scope, receive, send)
    from otelkit._instrument._asgi_middleware import _with_header

    state = _web.from_asgi_headers(scope.get("headers"))
    scope[_SCOPE_KEY] = state
    token = _web.enter(state)
    try:
        return await wrapped(scope, receive, _with_header(send, state))
    finally:
        _web.leave(token)


def _flushing_send(send: Any) -> Any:
    async def flushing_send(message: Any) -> None:
        await send(message)
        if isinstance(message, dict) and message.get("type") in ("lifespan.shutdown.complete",
                                                                 "lifespan.shutdown.failed"):
            # On the loop, blocking: the server stopped serving, and uvicorn kills the process right after this
            # message (a flush on another thread would race that).
            _web.flush_at_server_shutdown()

    return flushing_send


def _fastapi_call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``FastAPI.__call__`` (FastAPI with its own telemetry): the app is instrumented before its first request.

    FastAPI's ``__call__`` runs before ``Starlette.__call__``: at an app's first request it builds the middleware
    stack and starts its own telemetry (a SERVER span, ``fastapi.*`` operation spans, its own duration metric)
    unless the stack holds the contrib middleware. Instrumenting only in ``Starlette.__call__`` came too late for
    that first request, which was traced twice (FastAPI's spans and otelkit's). Afterwards one attribute test.
    """
    if getattr(instance, "_otelkit_asgi", None) is None and _state.get("active") and len(args) == 3:
        scope = args[0]
        if (isinstance(scope, dict) and scope.get("type") in ("http", "websocket") and _SCOPE_KEY not in scope
                and "fastapi.telemetry" not in scope):  # not an app mounted in one that handles the request
            _first_call(instance)
    return wrapped(*args, **kwargs)


def _apply(module: Any) -> None:
    _common.wrap(module.Starlette, "__call__", _call)


def _apply_fastapi(module: Any) -> None:
    if hasattr(module, "_legacy_otel"):  # FastAPI with its own telemetry (it checks the stack for contrib's)
        _common.wrap(module.FastAPI, "__call__", _fastapi_call)
        _state["fastapi_call"] = True


def start(name: str, ctx: _common.Context) -> str:
    """Enable integration ``name`` ("fastapi" or "starlette"); returns a note for its status."""
    _settings["tracer_provider"] = ctx.tracer_provider
    _settings["meter_provider"] = ctx.meter_provider
    _web.configure(ctx.settings)
    enabled[name] = True
    if name == "fastapi":
        _web.when_imported("fastapi.applications", _apply_fastapi, _state)
    return _web.when_imported("starlette.applications", _apply, _state)


def stop(name: str) -> None:
    enabled[name] = False
    if any(enabled.values()):
        return
    _state["active"] = False
    import sys

    module = sys.modules.get("starlette.applications")
    if module is not None:
        _common.unwrap(module.Starlette, "__call__")
    fastapi_module = sys.modules.get("fastapi.applications")
    if _state.pop("fastapi_call", False) and fastapi_module is not None:
        _common.unwrap(fastapi_module.FastAPI, "__call__")
    for app in list(_instrumented):
        try:
            if _kind(app) == "fastapi":
                from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

                FastAPIInstrumentor.uninstrument_app(app)
            else:
                from otelkit._instrument._asgi_middleware import OtelkitMiddleware

                app.user_middleware = [m for m in app.user_middleware if m.cls is not OtelkitMiddleware]
                app.middleware_stack = None
                app._is_instrumented_by_opentelemetry = False
            app.__dict__.pop("_otelkit_asgi", None)
        except Exception:
            logger.debug("otelkit: uninstrumenting %r failed", app, exc_info=True)
    _instrumented.clear()
