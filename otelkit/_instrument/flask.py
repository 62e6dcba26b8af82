"""Flask apps through ``opentelemetry-instrumentation-flask``, plus correlation at the edge.

``Flask.__call__`` (the WSGI entry point) is wrapped once, when ``flask`` is imported (``init()`` does not
import it). At an app's first request the app is instrumented with ``FlaskInstrumentor.instrument_app``, so
apps created before ``init()`` are traced too and the contrib's class swap (``flask.Flask`` replaced by a
subclass, which misses apps created earlier) is not used. Per request the wrapper does the correlation at the
edge (:mod:`otelkit._instrument._web`) and adds ``X-Correlation-ID`` to the response.

Under stable HTTP conventions (otelkit's default) the app's contrib pieces are then replaced by one layer
doing both the contrib's work and the edge (:mod:`otelkit._instrument._flask_layer`), and the class-level
wrapper passes its requests straight through.

SERVER spans named ``GET /items/<int:item_id>`` with ``http.route`` (the URL rule), ``http.request.method``,
``http.response.status_code``; ``http.server.request.duration`` by route, method and status.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from otelkit._instrument import _common, _web
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "flask"
MIN_VERSION = (2, 2)
CONTRIB = "opentelemetry.instrumentation.flask"
_ENVIRON_KEY = "otelkit.correlation"  # also _flask_layer.ENVIRON_KEY
LEAN = "one layer"  # an app's _otelkit_flask flag when _flask_layer replaced its contrib pieces

_lock = threading.Lock()
_state: dict[str, Any] = {}
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def _request_hook(span: Any, environ: Any) -> None:
    _web.adopt(span, environ.get(_ENVIRON_KEY) if isinstance(environ, dict) else None)


FIX = ("otelkit: the Flask app %r could not be instrumented (%s: %s); its requests get the correlation ID but "
       "no spans or metrics. Fix: call otelkit.init() before the app serves its first request (e.g. at the top "
       "of wsgi.py, before app.run() or the server starts)")


def _first_call(app: Any) -> None:
    with _lock:
        if app.__dict__.get("_otelkit_flask"):
            return
        flag: Any = True
        try:
            if not getattr(app, "_is_instrumented_by_opentelemetry", False):
                _instrument_app(app)
                _instrumented.add(app)
                flag = _one_layer(app)
        except Exception as exc:
            logger.warning(FIX, app, type(exc).__name__, exc)
        app._otelkit_flask = flag


def _one_layer(app: Any) -> Any:
    """``LEAN`` if the app's contrib pieces were replaced by the one-layer ones (:mod:`._flask_layer`), else True."""
    try:
        from otelkit._instrument import _flask_layer

        if _flask_layer.install(app, _request_hook):
            return LEAN
    except Exception:  # the contrib's pieces stay, with the edge in this module's wrapper around them
        logger.debug("otelkit: the one-layer Flask request path could not be set up", exc_info=True)
    return True


def _instrument_app(app: Any) -> None:
    """``FlaskInstrumentor.instrument_app``, also for an app that served requests before ``init()``.

    The contrib registers ``before_request``/``teardown_request`` functions, which Flask (2.3+) refuses once
    the app handled its first request ("The setup method 'before_request' can no longer be called"), to
    catch set-up code running too late. Here the late registration is deliberate and safe (the functions
    only trace, under the lock, before this request runs), so the check is stood aside for this one call
    (an instance attribute shadowing the method, removed after). Should that fail, the contrib's partial
    work (``wsgi_app`` already wrapped) is undone, and the caller warns once with the fix.
    """
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    served = bool(getattr(app, "_got_first_request", False))
    if served:
        app._check_setup_finished = lambda _name: None
    try:
        FlaskInstrumentor.instrument_app(
            app, request_hook=_request_hook, tracer_provider=_state.get("tracer_provider"),
            meter_provider=_state.get("meter_provider"), excluded_urls=_web.excluded_urls("flask"),
            # sqlcommenter is the database integrations' business; it would also rewrite SQL text.
            enable_commenter=False)
    except Exception:
        try:
            FlaskInstrumentor.uninstrument_app(app)
        except Exception:
            logger.debug("otelkit: undoing the Flask app's partial instrumentation failed", exc_info=True)
        raise
    finally:
        if served:
            app.__dict__.pop("_check_setup_finished", None)


def _call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    flag = instance.__dict__.get("_otelkit_flask")
    if flag is LEAN:  # the app's own wsgi_app layer does the edge and the telemetry
        return wrapped(*args, **kwargs)
    if not _state.get("active") or len(args) != 2:
        return wrapped(*args, **kwargs)
    if not flag:
        _first_call(instance)
        if instance.__dict__.get("_otelkit_flask") is LEAN:
            return wrapped(*args, **kwargs)
    wsgi_environ, start_response = args
    if _ENVIRON_KEY in wsgi_environ:  # an app dispatched to by another Flask app: the outer one did the edge
        return wrapped(*args, **kwargs)
    state = _web.incoming(wsgi_environ.get(_web.edge().wsgi_key))
    wsgi_environ[_ENVIRON_KEY] = state

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


def _apply(module: Any) -> None:
    _common.wrap(module.Flask, "__call__", _call)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("flask",), MIN_VERSION, "2.2", "otelkit[flask]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    status = plan()
    if status.state != "enabled":
        if "not installed" in status.reason and status.version:
            return IntegrationStatus(NAME, "skipped", f"{status.reason} (pip install otelkit[flask])",
                                     version=status.version)
        return status
    _state["tracer_provider"] = ctx.tracer_provider
    _state["meter_provider"] = ctx.meter_provider
    _web.configure(ctx.settings)
    note = _web.when_imported("flask", _apply, _state)
    return IntegrationStatus(NAME, "enabled",
                             f"flask {status.version}; every app, also those created before init(){note}",
                             version=status.version)


def uninstrument() -> None:
    _state["active"] = False
    import sys

    module = sys.modules.get("flask")
    if module is not None:
        _common.unwrap(module.Flask, "__call__")
    for app in list(_instrumented):
        try:
            from opentelemetry.instrumentation.flask import FlaskInstrumentor

            FlaskInstrumentor.uninstrument_app(app)
        except Exception:
            logger.debug("otelkit: uninstrumenting %r failed", app, exc_info=True)
    for app in list(_instrumented):
        app.__dict__.pop("_otelkit_flask", None)
    _instrumented.clear()
