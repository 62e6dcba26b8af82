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

Cost: upstream's per-request helpers are replaced in its module (as ``_http_clients.lean_helpers`` does for
requests and aiohttp): the request URL is parsed once per URL text (``httpx.URL`` is immutable), the request's
span and metric attributes are computed once per URL object, method, semantic-convention mode and scrubbing
rules (never when a header is captured), and headers are normalised only when one is captured. The spans are
upstream's, attribute for attribute (``tests/integration/test_http_clients_same_as_contrib.py``).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from otelkit import _scrub
from otelkit._instrument import _common, _http_clients
from otelkit._status import IntegrationStatus

NAME = "httpx"
SCOPE = "opentelemetry.instrumentation.httpx"
MIN_VERSION = (0, 27)  # the extra's floor, tested; 0.18 fails (docs/install.md)

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_URL_KEYS = ("url.full", "http.url")
_state: dict[str, Any] = {}


# Whether upstream captures any request/response header (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*, as
# upstream read them at instrument()): when it captures none, there is nothing to look for on the span.
_captures_headers = True


def _redact_url(url: str) -> str:
    """Upstream's ``redact_url`` replaced: otelkit's full rules, cached per URL (upstream parses every time).

    So ``url.full``/``http.url`` is right when the span starts: no second ``set_attribute`` per request.
    """
    if _scrub.is_enabled():
        return _scrub.scrub_url(url)
    original = _state.get("redact_url")
    return original(url) if original is not None else url


def _scrub_url(span: Any, url: Any) -> None:
    """Rewrite ``url.full``/``http.url`` on an open span when otelkit's rules change it; never raises."""
    try:
        if url is None or not span.is_recording() or not _scrub.is_enabled():
            return
        attributes = span.attributes
        for key in _URL_KEYS:
            current = attributes.get(key)
            if current is not None:
                scrubbed = _scrub.scrub_url(str(url))  # cached per URL string
                if scrubbed != current:
                    span.set_attribute(key, scrubbed)
    except Exception:
        pass


def _scrub_headers(span: Any) -> None:
    """Replace captured values of secret-bearing headers on an open span; never raises."""
    try:
        if not _captures_headers or not span.is_recording() or not _scrub.is_enabled():
            return
        for key, value in list(span.attributes.items()):
            if key.startswith(("http.request.header.", "http.response.header.")):
                name = key.rsplit(".", 1)[-1]
                if _scrub.is_sensitive_key(name) or _scrub.is_sensitive_key(name.replace("-", "_")):
                    span.set_attribute(key, [_scrub.REDACTED] * max(1, len(value) if isinstance(value, tuple) else 1))
    except Exception:
        pass


def _scrub_span(span: Any, url: Any) -> None:
    """The URL and the captured headers (kept for callers that want both at once)."""
    _scrub_url(span, url)
    _scrub_headers(span)


def _url_of(request: Any) -> Any:
    return getattr(request, "url", None) if not isinstance(request, tuple) else request[1]


def _request_hook(span: Any, request: Any) -> None:
    if "redact_url" not in _state:  # upstream without a redact_url to replace: rewrite after the fact
        _scrub_url(span, _url_of(request))
    _scrub_headers(span)


def _response_hook(span: Any, request: Any, _response: Any) -> None:
    # The URL was rewritten by the request hook; response headers are captured now.
    _scrub_headers(span)


async def _async_request_hook(span: Any, request: Any) -> None:
    _request_hook(span, request)


async def _async_response_hook(span: Any, request: Any, _response: Any) -> None:
    _response_hook(span, request, _response)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


_metric_attribute_cache: dict[tuple[Any, ...], dict[str, Any]] = {}


def _attributes(request: Any, response: Any, error: BaseException | None) -> dict[str, Any]:
    status = getattr(response, "status_code", None)
    key: tuple[Any, ...] | None = None
    if error is None:
        try:
            url = request.url
            key = (request.method, url.host, url.port, url.scheme, status)
            cached = _metric_attribute_cache.get(key)
            if cached is not None:
                return cached
        except Exception:
            key = None
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
    if isinstance(status, int):
        attributes["http.response.status_code"] = status
        if status >= 400:
            attributes["error.type"] = str(status)
    if error is not None:
        attributes["error.type"] = _common.error_type(error)
    elif key is not None and len(_metric_attribute_cache) < 1024:  # bounded: hosts x methods x statuses
        try:
            _metric_attribute_cache[key] = attributes
        except TypeError:
            pass
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


# --- upstream's per-request helpers, leaner (as for requests/aiohttp: _http_clients.lean_helpers) --------------
#
# Two shapes: in later contrib releases (0.66b1) these helpers take the httpx module as a ``module`` parameter;
# 0.61b0's take none (they use ``httpx`` itself). Each maker builds the replacement of the shape upstream's function
# has; ``lean_helpers`` installs it only when its parameters are upstream's.


def _takes_module(original: Any) -> bool:
    try:
        return "module" in inspect.signature(original).parameters
    except (TypeError, ValueError):
        return True  # no signature to read: the module-taking replacement, which lean_helpers then declines


class _Headers:
    """Headers upstream would normalise for ``get_custom_header_attributes``: normalised there, only when a header
    is captured (upstream's ``_normalize_headers`` walks every header of every request and response first)."""

    __slots__ = ("headers", "module")

    def __init__(self, headers: Any, module: Any) -> None:
        self.headers = headers
        self.module = module


_upstream_normalize: Any = None  # (headers, module) -> upstream's normalised headers, whichever its shape


def _normalize_headers_of(original: Any) -> Any:
    global _upstream_normalize
    if _takes_module(original):
        _upstream_normalize = original

        def _normalize_headers(headers: Any, module: Any) -> Any:
            return _Headers(headers, module)

        return _normalize_headers

    _upstream_normalize = lambda headers, _module: original(headers)  # noqa: E731

    def _normalize_headers_061(headers: Any) -> Any:
        return _Headers(headers, None)

    return _normalize_headers_061


def _header_attributes_of(original: Any) -> Any:
    def get_custom_header_attributes(headers: Any, captured_headers: Any, sensitive_headers: Any,
                                     normalize_function: Any) -> Any:
        if not captured_headers:  # upstream returns {} too
            return {}
        if type(headers) is _Headers:
            headers = _upstream_normalize(headers.headers, headers.module)
        return original(headers, captured_headers, sensitive_headers, normalize_function)

    return get_custom_header_attributes


_urls: dict[tuple[Any, str], Any] = {}


def _shared_url(module: Any, request: Any) -> Any:
    # upstream: module.URL(str(request.url)), a new parse per request; an httpx URL is immutable, so the
    # parse of the same text is shared
    text = str(request.url)
    url = _urls.get((module, text))
    if url is None:
        url = module.URL(text)
        if len(_urls) < 1024:
            _urls[(module, text)] = url
    return url


def _extract_parameters_of(original: Any) -> Any:
    if not _takes_module(original):
        import httpx

        def _extract_parameters_061(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            request = args[0] if args else None
            if request is None or not isinstance(request, httpx.Request):
                return original(args, kwargs)
            return request.method.encode(), _shared_url(httpx, request), request.headers, request.stream, \
                request.extensions

        return _extract_parameters_061

    def _extract_parameters(args: tuple[Any, ...], kwargs: dict[str, Any], module: Any) -> Any:
        request = args[0] if args else None
        if request is None or not isinstance(request, module.Request):
            return original(args, kwargs, module)
        return request.method.encode(), _shared_url(module, request), request.headers, request.stream, \
            request.extensions

    return _extract_parameters


def _request_attributes_of(original: Any) -> Any:
    # (id(url), method, mode, scrubbing rules, scrubbing on) -> (url, span attributes, metric attributes) that
    # upstream's function set, for URLs without captured headers; the URL object is held (its id stays its own)
    found: dict[tuple[Any, ...], tuple[Any, dict[str, Any], dict[str, Any]]] = {}

    def _apply_request_client_attributes_to_span(span_attributes: dict[str, Any], metric_attributes: dict[str, Any],
                                                 url: Any, method_original: Any, semconv: Any, module: Any,
                                                 headers: Any = None, captured_headers: Any = None,
                                                 sensitive_headers: Any = None) -> None:
        if captured_headers or span_attributes or metric_attributes or not isinstance(url, module.URL):
            original(span_attributes, metric_attributes, url, method_original, semconv, module, headers,
                     captured_headers, sensitive_headers)
            return
        key = (id(url), method_original, semconv, _scrub.cache_owner(), _scrub.is_enabled())
        entry = found.get(key)
        if entry is None or entry[0] is not url:
            original(span_attributes, metric_attributes, url, method_original, semconv, module, headers,
                     captured_headers, sensitive_headers)
            if len(found) < 1024:
                found[key] = (url, dict(span_attributes), dict(metric_attributes))
            return
        span_attributes.update(entry[1])
        metric_attributes.update(entry[2])

    if _takes_module(original):
        return _apply_request_client_attributes_to_span

    import httpx

    # 0.61b0's function as if it took the module (it uses httpx itself): the cache above, unchanged
    def upstream_061(span_attributes: Any, metric_attributes: Any, url: Any, method_original: Any, semconv: Any,
                     module: Any, headers: Any, captured_headers: Any, sensitive_headers: Any) -> None:
        original(span_attributes, metric_attributes, url, method_original, semconv, headers, captured_headers,
                 sensitive_headers)

    lean = _request_attributes_of(upstream_061)

    def _apply_request_client_attributes_to_span_061(span_attributes: dict[str, Any],
                                                     metric_attributes: dict[str, Any], url: Any,
                                                     method_original: Any, semconv: Any, headers: Any = None,
                                                     captured_headers: Any = None,
                                                     sensitive_headers: Any = None) -> None:
        lean(span_attributes, metric_attributes, url, method_original, semconv, httpx, headers, captured_headers,
             sensitive_headers)

    return _apply_request_client_attributes_to_span_061


_HTTPX_HELPERS = {"_normalize_headers": _normalize_headers_of, "get_custom_header_attributes": _header_attributes_of,
                  "_extract_parameters": _extract_parameters_of,
                  "_apply_request_client_attributes_to_span": _request_attributes_of}
# _normalize_headers' replacement hands get_custom_header_attributes a _Headers, which only its replacement reads
_HTTPX_REQUIRES = {"_normalize_headers": "get_custom_header_attributes"}


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("httpx",), MIN_VERSION, "0.27", "httpx", "opentelemetry.instrumentation.httpx")


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("httpx",), MIN_VERSION, "0.27", "httpx")
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
    import opentelemetry.instrumentation.httpx as contrib

    if "redact_url" not in _state and callable(getattr(contrib, "redact_url", None)):
        _state["redact_url"] = contrib.redact_url
        contrib.redact_url = _redact_url
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its provider and hooks are kept)"
    else:
        hooks: dict[str, Any] = {}
        if "redact_url" not in _state or _http_clients.captures_headers():
            # Needed only to rewrite the URL after the fact or to scrub captured headers: no work per
            # request otherwise.
            hooks = {"request_hook": _request_hook, "response_hook": _response_hook,
                     "async_request_hook": _async_request_hook, "async_response_hook": _async_response_hook}
        instrumentor.instrument(
            tracer_provider=ctx.tracer_provider,
            meter_provider=NoOpMeterProvider(),
            skip_dep_check=True,
            **hooks,
        )
        _state["owned"] = True
        _http_clients.lean_helpers(contrib, _state, _HTTPX_HELPERS, _HTTPX_REQUIRES)
    global _captures_headers
    _captures_headers = bool(getattr(instrumentor, "_captured_request_headers", True)
                             or getattr(instrumentor, "_captured_response_headers", True))
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
    if "redact_url" in _state:
        import opentelemetry.instrumentation.httpx as contrib

        contrib.redact_url = _state.pop("redact_url")
    import opentelemetry.instrumentation.httpx as contrib_module

    _http_clients.restore_helpers(contrib_module, _state)
    _common.unwrap(httpx.HTTPTransport, "handle_request")
    _common.unwrap(httpx.AsyncHTTPTransport, "handle_async_request")
    if _state.pop("owned", False):
        HTTPXClientInstrumentor().uninstrument()
