"""The Starlette-based servers (FastAPI and Starlette apps): one class-level wrapper, contrib middleware per app.

``Starlette.__call__`` is wrapped once (when ``starlette.applications`` is imported, so ``init()`` imports
neither framework). At an app's first call -- before Starlette builds its middleware stack -- the app is
instrumented with ``FastAPIInstrumentor.instrument_app`` or ``StarletteInstrumentor.instrument_app``: apps
created before ``init()`` are traced like the others, and the contrib's class swap (``fastapi.FastAPI``
replaced by a subclass, which misses apps created earlier) is not used. Then, per request, the same wrapper
does the correlation at the edge (:mod:`otelkit._instrument._web`).

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

_SCOPE_KEY = "otelkit.correlation"
_HEADER = _web.RESPONSE_HEADER.lower().encode("latin-1")
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


def _instrument_app(app: Any, kind: str) -> None:
    """Instrument one app with its contrib instrumentor (called at its first request, under the lock)."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return  # the application did it itself: its choices are kept
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
    else:
        # The same middleware StarletteInstrumentor.instrument_app adds, with the options it does not take.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.metrics import get_meter
        from opentelemetry.trace import get_tracer

        from otelkit import _compat

        name = "opentelemetry.instrumentation.starlette"
        found = _common.dist_version("opentelemetry-instrumentation-starlette")
        version = found[1] if found else ""
        app.add_middleware(
            OpenTelemetryMiddleware, excluded_urls=kwargs["excluded_urls"],
            default_span_details=_compat.starlette_span_details(), server_request_hook=_request_hook,
            tracer=get_tracer(name, version, kwargs["tracer_provider"]),
            meter=get_meter(name, version, kwargs["meter_provider"]), exclude_spans=["receive", "send"])
        app._is_instrumented_by_opentelemetry = True
    _instrumented.add(app)


def _first_call(app: Any) -> bool:
    """Instrument ``app`` if its kind is enabled; True when its requests get the edge."""
    with _lock:
        seen = getattr(app, "_otelkit_asgi", None)
        if seen is not None:
            return bool(seen)
        kind = _kind(app)
        wanted = enabled.get(kind, False)
        if wanted:
            try:
                _instrument_app(app, kind)
            except Exception as exc:
                logger.warning("otelkit: instrumenting the %s app %r failed: %s: %s (it runs untraced)",
                               kind, app, type(exc).__name__, exc)
        try:
            app._otelkit_asgi = wanted
        except Exception:
            return False
        return wanted


def _call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Not a coroutine function itself: called with the wrong arguments it must raise at once, like the
    # original (uvicorn calls the app with none to tell an app from an app factory).
    if not _state.get("active") or len(args) != 3 or kwargs:
        return wrapped(*args, **kwargs)
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
    if not on or kind != "http" or _SCOPE_KEY in scope:
        # Not ours, not a request (websocket), or an app mounted in an app that already did the edge.
        return await wrapped(scope, receive, send)
    state = _web.from_asgi_headers(scope.get("headers"))
    scope[_SCOPE_KEY] = state

    async def send_with_id(message: Any) -> None:
        if message.get("type") == "http.response.start":
            try:
                # The message is the sender's, made for this one call (as the contrib middleware, which
                # also adds headers to it): one new header list, no copy of the message.
                headers = [*(message.get("headers") or ()), (_HEADER, state[0].encode("ascii"))]
                try:
                    message["headers"] = headers
                except TypeError:  # a read-only mapping: a copy, as before
                    message = {**message, "headers": headers}
            except Exception:
                pass
        await send(message)

    token = _web.enter(state)
    try:
        return await wrapped(scope, receive, send_with_id)
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


def _apply(module: Any) -> None:
    _common.wrap(module.Starlette, "__call__", _call)


def start(name: str, ctx: _common.Context) -> str:
    """Enable integration ``name`` ("fastapi" or "starlette"); returns a note for its status."""
    _settings["tracer_provider"] = ctx.tracer_provider
    _settings["meter_provider"] = ctx.meter_provider
    _web.configure(ctx.settings)
    enabled[name] = True
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
    for app in list(_instrumented):
        try:
            if _kind(app) == "fastapi":
                from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

                FastAPIInstrumentor.uninstrument_app(app)
            else:
                from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

                app.user_middleware = [m for m in app.user_middleware if m.cls is not OpenTelemetryMiddleware]
                app.middleware_stack = None
                app._is_instrumented_by_opentelemetry = False
            app.__dict__.pop("_otelkit_asgi", None)
        except Exception:
            logger.debug("otelkit: uninstrumenting %r failed", app, exc_info=True)
    _instrumented.clear()
