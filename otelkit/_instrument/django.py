"""Django (WSGI and ASGI) through ``opentelemetry-instrumentation-django``, plus correlation at the edge.

The contrib instrumentation adds its middleware to ``settings.MIDDLEWARE``, which Django reads once, when the
handler is built (``get_wsgi_application()`` / ``get_asgi_application()``). otelkit applies it at that moment
(``BaseHandler.load_middleware`` is wrapped when ``django`` is imported; ``init()`` neither imports Django nor
reads its settings). A handler built before ``init()`` cannot be changed: its first request logs one warning
naming the fix (call ``otelkit.init()`` before ``get_wsgi_application()``), and its requests still get the
correlation at the edge.

Handlers built after ``init()`` get one middleware per WSGI and ASGI request, otelkit's subclass of the contrib's
doing the edge as well (:mod:`otelkit._instrument._django_layer`), when it can reproduce the contrib's
configuration; otherwise the contrib middleware with the edge at ``WSGIHandler.__call__`` /
``ASGIHandler.__call__`` and the request hook (:func:`otelkit._instrument._web.adopt`).

SERVER spans named ``GET items/<int:item_id>`` with ``http.route`` (the URL pattern),
``http.request.method``, ``http.response.status_code``; ``http.server.request.duration`` by route, method and
status.
"""

from __future__ import annotations

import threading
from typing import Any

from otelkit._instrument import _common, _web
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "django"
MIN_VERSION = (4, 2)
CONTRIB = "opentelemetry.instrumentation.django"
_KEY = "otelkit.correlation"

LAYER = "one layer"  # a handler's _otelkit_django flag when its middleware is otelkit's (._django_layer)

_lock = threading.Lock()
_state: dict[str, Any] = {}

FIX = ("otelkit: this Django application was built before otelkit.init(), so its requests are not traced. "
       "Fix: call otelkit.init() before get_wsgi_application() / get_asgi_application() (e.g. at the top of "
       "wsgi.py, asgi.py or settings.py)")


def _request_hook(span: Any, request: Any) -> None:
    state = None
    try:
        state = request.META.get(_KEY)
        if state is None:
            scope = getattr(request, "scope", None)
            state = scope.get(_KEY) if isinstance(scope, dict) else None
    except Exception:
        pass
    _web.adopt(span, state)


def _contrib_instrument() -> None:
    """Add the contrib middleware to settings.MIDDLEWARE (once; the settings are configured by now)."""
    with _lock:
        if _state.get("contrib"):
            return
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        instrumentor = DjangoInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=_state.get("tracer_provider"),
                                    meter_provider=_state.get("meter_provider"),
                                    excluded_urls=_web.excluded_urls("django"), request_hook=_request_hook,
                                    is_sql_commentor_enabled=False)
            _state["owned"] = True
        _state["contrib"] = True


def _load_middleware(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _state.get("active"):
        return wrapped(*args, **kwargs)
    try:
        _contrib_instrument()
        instance._otelkit_django = True
    except Exception as exc:
        logger.warning("otelkit: instrumenting Django failed: %s: %s (it runs untraced)", type(exc).__name__, exc)
        return wrapped(*args, **kwargs)
    swap = _layer_middleware()
    if swap is None:
        return wrapped(*args, **kwargs)
    from django.conf import settings

    layer, original, replaced = swap
    before = layer.built[0]
    # For this build only: settings.MIDDLEWARE keeps the contrib's path (its uninstrument() removes that).
    settings.MIDDLEWARE = replaced
    try:
        result = wrapped(*args, **kwargs)
    finally:
        settings.MIDDLEWARE = original
    if layer.built[0] > before:
        instance._otelkit_django = LAYER
    return result


def _layer_middleware() -> tuple[Any, Any, Any] | None:
    """(the layer module, settings.MIDDLEWARE, it with the layer first) if this handler can have one layer.

    Only when otelkit configured the contrib middleware (with its request hook), the layer reproduces that
    configuration (:func:`otelkit._instrument._django_layer.usable`), and the contrib middleware is the
    outermost (``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION`` unset), so the edge still covers every middleware.
    """
    if not _state.get("owned"):
        return None
    try:
        from django.conf import settings
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        from otelkit._instrument import _django_layer as layer

        original = settings.MIDDLEWARE
        path = DjangoInstrumentor._opentelemetry_middleware
        if not isinstance(original, list | tuple) or not original or original[0] != path or \
                list(original).count(path) != 1 or not layer.usable(_request_hook):
            return None
    except Exception:
        logger.debug("otelkit: Django's one-layer middleware is not available", exc_info=True)
        return None
    layer.integration_state = _state
    _state["asgi_layer"] = layer.ASGI  # the layer does the edge of ASGI requests too (else the ASGI wrapper)
    replaced = [layer.PATH, *original[1:]]
    return layer, original, (tuple(replaced) if isinstance(original, tuple) else replaced)


def _check_built_after_init(instance: Any) -> None:
    if not getattr(instance, "_otelkit_django", False):
        instance._otelkit_django = False
        if not _state.get("warned"):
            _state["warned"] = True
            logger.warning(FIX)


def _wsgi_call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if getattr(instance, "_otelkit_django", False) is LAYER or not _state.get("active") or len(args) != 2:
        return wrapped(*args, **kwargs)  # with the layer, its middleware does the edge
    if not getattr(instance, "_otelkit_django", False) and not _state.get("warned"):
        _check_built_after_init(instance)
    wsgi_environ, start_response = args
    state = _web.incoming(wsgi_environ.get(_web.edge().wsgi_key))
    wsgi_environ[_KEY] = state

    def start_with_id(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        try:
            headers.append((_web.RESPONSE_HEADER, state[0]))
        except Exception:
            pass
        return start_response(status, headers, *exc_info)

    token = _web.enter(state)
    try:
        return wrapped(wsgi_environ, start_with_id)
    finally:
        _web.leave(token)


def _asgi_call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Not a coroutine function: wrong arguments raise at once, like the original (see _asgi._call).
    scope = args[0] if args else None
    if _state.get("active") and len(args) == 3 and not kwargs and isinstance(scope, dict) and \
            scope.get("type") == "lifespan":
        return _lifespan(args[1], args[2])
    if not _state.get("active") or len(args) != 3 or kwargs or not isinstance(scope, dict) or \
            scope.get("type") != "http":
        return wrapped(*args, **kwargs)
    if getattr(instance, "_otelkit_django", False) is LAYER and _state.get("asgi_layer"):
        return wrapped(*args, **kwargs)  # its middleware does the edge (._django_layer)
    if not getattr(instance, "_otelkit_django", False) and not _state.get("warned"):
        _check_built_after_init(instance)
    return _asgi_request(wrapped, scope, args[1], args[2])


async def _asgi_request(wrapped: Any, scope: dict[str, Any], receive: Any, send: Any) -> Any:
    state = _web.from_asgi_headers(scope.get("headers"))
    scope[_KEY] = state

    async def send_with_id(message: Any) -> None:
        if message.get("type") == "http.response.start":
            try:
                message = {**message, "headers": [*(message.get("headers") or ()),
                                                  (b"x-correlation-id", state[0].encode("ascii"))]}
            except Exception:
                pass
        await send(message)

    token = _web.enter(state)
    try:
        return await wrapped(scope, receive, send_with_id)
    finally:
        _web.leave(token)


async def _lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol Django does not speak, so the server's shutdown flushes telemetry.

    uvicorn re-raises the SIGTERM it handled after its graceful shutdown, killing the process before ``atexit``
    (see :func:`otelkit._instrument._web.flush_at_server_shutdown`). Django rejects the lifespan scope (uvicorn
    then logs "lifespan unsupported" and goes on); answering it changes nothing else.
    """
    while True:
        message = await receive()
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            _web.flush_at_server_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
        else:
            return


def _apply_base(module: Any) -> None:
    _common.wrap(module.BaseHandler, "load_middleware", _load_middleware)


def _apply_wsgi(module: Any) -> None:
    _common.wrap(module.WSGIHandler, "__call__", _wsgi_call)


def _apply_asgi(module: Any) -> None:
    _common.wrap(module.ASGIHandler, "__call__", _asgi_call)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("django", "Django"), MIN_VERSION, "4.2", "otelkit[django]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    status = plan()
    if status.state != "enabled":
        return status
    _state["tracer_provider"] = ctx.tracer_provider
    _state["meter_provider"] = ctx.meter_provider
    _web.configure(ctx.settings)
    # Each handler module on its own import: an ASGI-only project (asgi.py's get_asgi_application()) never
    # imports the WSGI handler, and each imports base first (a hook there could not import them half-built).
    note = _web.when_imported("django.core.handlers.base", _apply_base, _state)
    _web.when_imported("django.core.handlers.wsgi", _apply_wsgi, _state)
    _web.when_imported("django.core.handlers.asgi", _apply_asgi, _state)
    return IntegrationStatus(NAME, "enabled", f"django {status.version}; applications built after init(){note}",
                             version=status.version)


def uninstrument() -> None:
    _state["active"] = False
    import sys

    base = sys.modules.get("django.core.handlers.base")
    wsgi = sys.modules.get("django.core.handlers.wsgi")
    asgi = sys.modules.get("django.core.handlers.asgi")
    if base is not None:
        _common.unwrap(base.BaseHandler, "load_middleware")
    if wsgi is not None:
        _common.unwrap(wsgi.WSGIHandler, "__call__")
    if asgi is not None:
        _common.unwrap(asgi.ASGIHandler, "__call__")
    if _state.pop("owned", False):
        try:
            from opentelemetry.instrumentation.django import DjangoInstrumentor

            DjangoInstrumentor().uninstrument()
        except Exception:
            logger.debug("otelkit: uninstrumenting django failed", exc_info=True)
    _state.pop("contrib", None)
