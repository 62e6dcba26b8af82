"""httpx (``Client`` and ``AsyncClient``) through ``opentelemetry-instrumentation-httpx``, plus what it lacks.

Upstream wraps ``httpx.HTTPTransport.handle_request`` and
``httpx.AsyncHTTPTransport.handle_async_request`` on the classes, so clients created before
``init()`` are traced too (custom transports that do not derive from these are not). otelkit adds:

* ``http.client.request.duration`` (seconds) recorded by otelkit for every request, including
  the ones that fail without a response (connection refused, timeout) which upstream does not
  record, by ``server.address``, ``server.port``, ``http.request.method``,
  ``http.response.status_code`` and ``error.type``. Upstream's own histograms are switched off
  (it gets a no-op meter provider) so there is one stream, whatever ``OTEL_SEMCONV_STABILITY_OPT_IN``.
* Redaction at the source: ``url.full``/``http.url`` is rewritten with otelkit's full list of
  sensitive query keys (upstream redacts only 4 of them) and captured
  ``http.request.header.*``/``http.response.header.*`` values of secret-bearing headers are
  replaced (upstream's sanitize list is empty by default).
* De-duplication: ``HTTPXClientInstrumentor.instrument_client(client)`` on top of the global
  instrumentation yields one span per request.
"""

from __future__ import annotations

import time
from typing import Any

from otelkit import _scrub
from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

NAME = "httpx"
SCOPE = "opentelemetry.instrumentation.httpx"
MIN_VERSION = (0, 18)

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_URL_KEYS = ("url.full", "http.url")
_state: dict[str, Any] = {}


def _scrub_span(span: Any, url: Any) -> None:
    """Rewrite the URL and captured secret headers on an open span; never raises."""
    try:
        if not span.is_recording() or not _scrub.is_enabled():
            return
        attributes = getattr(span, "attributes", None) or {}
        for key in _URL_KEYS:
            if key in attributes and url is not None:
                span.set_attribute(key, _scrub.scrub_url(str(url)))
        for key, value in list(attributes.items()):
            if key.startswith(("http.request.header.", "http.response.header.")):
                name = key.rsplit(".", 1)[-1]
                if _scrub.is_sensitive_key(name) or _scrub.is_sensitive_key(name.replace("-", "_")):
                    span.set_attribute(key, [_scrub.REDACTED] * max(1, len(value) if isinstance(value, tuple) else 1))
    except Exception:
        pass


def _request_hook(span: Any, request: Any) -> None:
    _scrub_span(span, getattr(request, "url", None) if not isinstance(request, tuple) else request[1])


def _response_hook(span: Any, request: Any, _response: Any) -> None:
    _request_hook(span, request)


async def _async_request_hook(span: Any, request: Any) -> None:
    _request_hook(span, request)


async def _async_response_hook(span: Any, request: Any, _response: Any) -> None:
    _request_hook(span, request)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _attributes(request: Any, response: Any, error: BaseException | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    try:
        method = str(request.method.decode() if isinstance(request.method, bytes) else request.method).upper()
        attributes["http.request.method"] = method if method in _KNOWN_METHODS else "_OTHER"
        url = request.url
        if url.host:
            attributes["server.address"] = url.host
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        if port:
            attributes["server.port"] = int(port)
    except Exception:
        pass
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        attributes["http.response.status_code"] = status
        if status >= 400:
            attributes["error.type"] = str(status)
    if error is not None:
        attributes["error.type"] = _common.error_type(error)
    return attributes


def _record(request: Any, response: Any, start: float, error: BaseException | None) -> None:
    try:
        _common.record("http", time.perf_counter() - start, _attributes(request, response, error))
    except Exception:
        pass


def _sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    if _common.is_duplicate(SCOPE):
        # A per-client instrumentation already traces (and meters) this request.
        with _common.suppressed():
            return wrapped(*args, **kwargs)
    request = _request_of(args, kwargs)
    start = time.perf_counter()
    response: Any = None
    error: BaseException | None = None
    try:
        response = wrapped(*args, **kwargs)
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        _record(request, response, start, error)


async def _async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    if _common.is_duplicate(SCOPE):
        with _common.suppressed():
            return await wrapped(*args, **kwargs)
    request = _request_of(args, kwargs)
    start = time.perf_counter()
    response: Any = None
    error: BaseException | None = None
    try:
        response = await wrapped(*args, **kwargs)
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        _record(request, response, start, error)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("httpx",), MIN_VERSION, "0.18", "httpx", "opentelemetry.instrumentation.httpx")


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("httpx",), MIN_VERSION, "0.18", "httpx")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    try:
        import httpx
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.metrics import NoOpMeterProvider
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped", f"not importable ({exc})", version=version)

    instrumentor = HTTPXClientInstrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its provider and hooks are kept)"
    else:
        instrumentor.instrument(
            tracer_provider=ctx.tracer_provider,
            meter_provider=NoOpMeterProvider(),
            request_hook=_request_hook,
            response_hook=_response_hook,
            async_request_hook=_async_request_hook,
            async_response_hook=_async_response_hook,
            skip_dep_check=True,
        )
        _state["owned"] = True
    _common.wrap(httpx.HTTPTransport, "handle_request", _sync_wrapper)
    _common.wrap(httpx.AsyncHTTPTransport, "handle_async_request", _async_wrapper)
    return IntegrationStatus(NAME, "enabled", f"httpx {version}{note}", version=version)


def uninstrument() -> None:
    try:
        import httpx
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        _state.clear()
        return
    _common.unwrap(httpx.HTTPTransport, "handle_request")
    _common.unwrap(httpx.AsyncHTTPTransport, "handle_async_request")
    if _state.pop("owned", False):
        HTTPXClientInstrumentor().uninstrument()
